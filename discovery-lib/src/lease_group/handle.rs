//! The group's handle, [`LeaseGroup`], and what passes between it and its
//! actor: the keys wanted ([`Desired`]) and where the group stands
//! ([`GroupState`]).

use std::collections::BTreeMap;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::key::validate_key;
use crate::node::LeaseId;

/// Where a group stands, for status lines and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupState {
    /// The lease holding the keys, once granted or adopted.
    pub lease: Option<LeaseId>,
    /// Keys etcd holds for us with the value asked for.
    pub held: usize,
    /// Keys asked for and not (yet) written: pending, conflicting or refused.
    pub pending: usize,
    /// Every key asked for is held and nothing else is: etcd is in sync.
    pub synced: bool,
    /// The last failure, while retrying; `None` once a round succeeded.
    pub retrying: Option<String>,
    /// Keys held under another lease: key to the holder's lease.
    pub conflicts: BTreeMap<String, LeaseId>,
    /// Keys etcd refuses (permission denied, too large): key to the reason.
    pub refused: BTreeMap<String, String>,
    /// The group was shut down.
    pub stopped: bool,
}

/// What the handle wants of the actor; the latest replaces any earlier
/// one not yet acted on.
#[derive(Clone, Debug, Default)]
pub(super) struct Desired {
    /// The keys to hold: key to value.
    pub(super) keys: BTreeMap<String, Vec<u8>>,
    /// Revoke the lease and stop: the handle was shut down or dropped.
    pub(super) shutdown: bool,
}

/// A handle on a group of keys under one lease. Dropping it revokes the
/// lease in the background; [`LeaseGroup::shutdown`] does so and waits.
#[derive(Debug)]
pub struct LeaseGroup {
    /// What the handle wants, for the actor: the keys, or to stop.
    desired: watch::Sender<Desired>,
    /// Where the group stands, as the actor reports it.
    state: watch::Receiver<GroupState>,
    /// The actor's task, awaited by [`LeaseGroup::shutdown`]; `None` once
    /// awaited.
    task: Option<JoinHandle<()>>,
}

impl LeaseGroup {
    /// The handle on the actor `task`: it sends what is wanted on
    /// `desired` and reads where things stand from `state`.
    pub(super) fn new(
        desired: watch::Sender<Desired>,
        state: watch::Receiver<GroupState>,
        task: JoinHandle<()>,
    ) -> Self {
        Self {
            desired,
            state,
            task: Some(task),
        }
    }

    /// Keep `key = value`. Writes only if etcd does not already hold it.
    pub fn set(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<()> {
        validate_key(key)?;
        let value = value.into();
        self.desired.send_if_modified(|d| {
            if d.keys.get(key) == Some(&value) {
                return false;
            }
            d.keys.insert(key.to_owned(), value);
            true
        });
        Ok(())
    }

    /// Delete `key` now (if the group holds it).
    pub fn remove(&self, key: &str) {
        self.desired
            .send_if_modified(|d| d.keys.remove(key).is_some());
    }

    /// Hold exactly `keys`, the whole desired `key -> value` map: the
    /// group diffs it against what etcd holds for it and writes only the
    /// difference (a put for each new or changed value, a delete for each
    /// key no longer in it, in one transaction per batch, deletes first).
    /// A map equal to the current one writes nothing. Calls in quick
    /// succession coalesce: only the latest map is written.
    ///
    /// Every key is checked first; an invalid one changes nothing and is
    /// the error.
    ///
    /// ```no_run
    /// # async fn f(client: discovery::Client) -> Result<(), discovery::Error> {
    /// use std::collections::BTreeMap;
    /// use std::time::Duration;
    /// use discovery::RegisterOptions;
    /// let group = client.lease_group(RegisterOptions::new(Duration::from_secs(8)), BTreeMap::new())?;
    /// // Whatever runs on this host now, as one map: the group works out the changes.
    /// let mut running = BTreeMap::new();
    /// running.insert("/services/web/host1-a".to_owned(), b"10.1.0.7:80".to_vec());
    /// running.insert("/services/db/host1-b".to_owned(), b"10.1.0.8:5432".to_vec());
    /// group.replace(running)?;
    /// # Ok(()) }
    /// ```
    pub fn replace(&self, keys: BTreeMap<String, Vec<u8>>) -> Result<()> {
        for k in keys.keys() {
            validate_key(k)?;
        }
        self.desired.send_if_modified(|d| {
            if d.keys == keys {
                return false;
            }
            d.keys = keys;
            true
        });
        Ok(())
    }

    /// The keys the group is asked to hold.
    pub fn keys(&self) -> Vec<String> {
        self.desired.borrow().keys.keys().cloned().collect()
    }

    /// Where the group stands, updated as it changes.
    pub fn state(&self) -> watch::Receiver<GroupState> {
        self.state.clone()
    }

    /// Revoke the lease (every key disappears at once) and stop. Waits at
    /// most about a second; past that the keys expire with the TTL.
    pub async fn shutdown(mut self) -> Result<()> {
        self.desired.send_modify(|d| d.shutdown = true);
        if let Some(task) = self.task.take() {
            task.await.map_err(|_| Error::Stopped("lease group"))?;
        }
        Ok(())
    }
}

impl Drop for LeaseGroup {
    fn drop(&mut self) {
        self.desired.send_modify(|d| d.shutdown = true);
    }
}
