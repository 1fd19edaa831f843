//! The registration's handle, [`Registration`], and what passes between
//! it and its actor: what the handle wants ([`Desired`]) and where the
//! registration stands ([`RegistrationState`]).

use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::node::LeaseId;

/// Where a registration stands.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistrationState {
    /// Not yet registered; the first attempt is under way.
    Starting,
    /// The key holds the value under a live lease.
    Registered {
        /// The lease.
        lease: LeaseId,
        /// The TTL etcd granted.
        ttl: Duration,
        /// The revision of the write (or of the adopted key).
        revision: i64,
        /// The value.
        value: Vec<u8>,
    },
    /// Deliberately not registered (see [`Registration::withdraw`]).
    Withdrawn,
    /// etcd failed; retrying with backoff.
    Retrying {
        /// Since when the registration is not confirmed.
        since: SystemTime,
        /// The last error.
        error: String,
        /// True once the lease has probably expired (etcd unreachable for
        /// longer than the TTL, or etcd said so): a new lease will be granted.
        lease_lost: bool,
    },
    /// etcd refuses the registration for a reason retrying will not fix
    /// by itself (permission denied, a value too large). Still retried,
    /// slowly, in case the cause is fixed; tools usually exit on this.
    Refused {
        /// What etcd said.
        error: String,
    },
    /// The registration was deregistered and its task has ended.
    Stopped,
}

/// What the handle wants of its actor; the latest wish replaces any
/// earlier one not yet acted on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Desired {
    /// The key registered with this value.
    Value(Vec<u8>),
    /// The key withdrawn (the lease revoked), the actor kept for later.
    Withdrawn,
    /// The lease revoked and the actor ended: the handle was deregistered
    /// or dropped.
    Shutdown,
}

/// A handle on a registration. Dropping it revokes the lease in the
/// background; [`Registration::deregister`] does so and waits.
#[derive(Debug)]
pub struct Registration {
    /// The registered key, for [`Registration::key`].
    key: String,
    /// What the handle wants, for the actor: a value, nothing, or to stop.
    desired: watch::Sender<Desired>,
    /// Where the registration stands, as the actor reports it.
    state: watch::Receiver<RegistrationState>,
    /// The actor's task, awaited by [`Registration::deregister`]; `None`
    /// once awaited.
    task: Option<JoinHandle<()>>,
}

impl Registration {
    /// The handle on the actor `task` that keeps `key`: it sends what is
    /// wanted on `desired` and reads where things stand from `state`.
    pub(super) fn new(
        key: &str,
        desired: watch::Sender<Desired>,
        state: watch::Receiver<RegistrationState>,
        task: JoinHandle<()>,
    ) -> Self {
        Self {
            key: key.to_owned(),
            desired,
            state,
            task: Some(task),
        }
    }

    /// The registered key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Register `value`, or keep it registered. A value equal to the one in
    /// etcd writes nothing; a different one is written under the same lease
    /// (watchers see a `set`). Re-registers after [`Registration::withdraw`].
    pub fn set_value(&self, value: impl Into<Vec<u8>>) {
        let value = value.into();
        self.desired.send_if_modified(|d| {
            if *d == Desired::Value(value.clone()) {
                false
            } else {
                *d = Desired::Value(value);
                true
            }
        });
    }

    /// Remove the key now by revoking the lease, keeping the handle for a
    /// later [`Registration::set_value`].
    pub fn withdraw(&self) {
        self.desired.send_if_modified(|d| {
            if *d == Desired::Withdrawn {
                false
            } else {
                *d = Desired::Withdrawn;
                true
            }
        });
    }

    /// The registration's state, updated as it changes.
    pub fn state(&self) -> watch::Receiver<RegistrationState> {
        self.state.clone()
    }

    /// Wait until the current value is registered; returns the state then.
    pub async fn wait_registered(&self) -> Result<RegistrationState> {
        let mut rx = self.state.clone();
        loop {
            let want = match &*self.desired.borrow() {
                Desired::Value(v) => v.clone(),
                _ => return Err(Error::InvalidOption("the registration is withdrawn".into())),
            };
            {
                let s = rx.borrow_and_update();
                match &*s {
                    RegistrationState::Registered { value, .. } if *value == want => {
                        return Ok(s.clone());
                    }
                    RegistrationState::Stopped => return Err(Error::Stopped("registration")),
                    _ => {}
                }
            }
            rx.changed()
                .await
                .map_err(|_| Error::Stopped("registration"))?;
        }
    }

    /// Revoke the lease (the key disappears at once) and stop. Waits at
    /// most about a second: if etcd does not answer by then, the key
    /// expires with its TTL instead.
    pub async fn deregister(mut self) -> Result<()> {
        let _ = self.desired.send(Desired::Shutdown);
        if let Some(task) = self.task.take() {
            task.await.map_err(|_| Error::Stopped("registration"))?;
        }
        Ok(())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // The actor revokes the lease when it sees this (or the sender gone).
        let _ = self.desired.send(Desired::Shutdown);
    }
}
