//! Self-registration: keep `key = value` in etcd under a lease.
//!
//! A background actor converges etcd to what the [`Registration`] handle
//! asks for (a value, or nothing) and reports where it stands. It never
//! writes a value that is already there: heartbeats are lease keep-alives,
//! which produce no watch event.

mod actor;
mod lease;

use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::key::validate_key;
use crate::node::LeaseId;
use crate::retry::Backoff;
use actor::Actor;

/// The shortest TTL etcd honours with its default election timeout (1 s):
/// it raises anything shorter to this.
pub const MIN_TTL: Duration = Duration::from_secs(2);
/// The longest TTL etcd grants (`MaxLeaseTTL`, 9,000,000,000 s).
pub const MAX_TTL: Duration = Duration::from_secs(9_000_000_000);
/// The shortest keep-alive interval accepted: anything faster only loads
/// etcd (the lease is not any safer for it).
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// The key watch asks etcd for progress only after this long without a
/// message: in effect never (see `open_key_watch`).
pub(crate) const KEY_WATCH_IDLE: Duration = Duration::from_secs(24 * 3600);
/// Options for [`Client::register`].
#[derive(Clone, Debug)]
pub struct RegisterOptions {
    ttl: Duration,
    interval: Option<Duration>,
    adopt: bool,
}
impl RegisterOptions {
    /// A lease of `ttl` (whole seconds, from 2 s), kept alive every `ttl / 3`.
    pub const fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            interval: None,
            adopt: true,
        }
    }

    /// Send a keep-alive every `interval` instead of `ttl / 3`. Must be
    /// shorter than the TTL.
    pub const fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = Some(interval);
        self
    }

    /// On start, when the key already holds the same value under a live
    /// lease that holds only this key (a process restarted quickly), keep
    /// that lease alive instead of writing again, so watchers see nothing.
    /// On by default.
    pub const fn with_adopt(mut self, adopt: bool) -> Self {
        self.adopt = adopt;
        self
    }

    /// The TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The keep-alive interval: as set, or a third of the TTL.
    pub fn interval(&self) -> Duration {
        self.interval.unwrap_or(self.ttl / 3)
    }

    /// Check the TTL and interval against what etcd can honour.
    pub fn validate(&self) -> Result<()> {
        let ttl = self.ttl;
        if ttl.is_zero() {
            return Err(Error::InvalidOption(
                "the TTL is 0; a lease needs at least 2s".into(),
            ));
        }
        if ttl.subsec_nanos() != 0 {
            return Err(Error::InvalidOption(format!(
                "the TTL {ttl:?} is not a whole number of seconds; etcd leases count in seconds"
            )));
        }
        if ttl < MIN_TTL {
            return Err(Error::InvalidOption(format!(
                "the TTL {ttl:?} is below etcd's minimum lease TTL of {MIN_TTL:?} (etcd would silently raise it)"
            )));
        }
        if ttl > MAX_TTL {
            return Err(Error::InvalidOption(format!(
                "the TTL {}s is above etcd's maximum lease TTL of {}s",
                ttl.as_secs(),
                MAX_TTL.as_secs()
            )));
        }
        let interval = self.interval();
        if interval.is_zero() {
            return Err(Error::InvalidOption(
                "the keep-alive interval is 0; it must be above 0 and below the TTL".into(),
            ));
        }
        if interval < MIN_INTERVAL {
            return Err(Error::InvalidOption(format!(
                "the keep-alive interval {interval:?} is below {MIN_INTERVAL:?}; that often only loads etcd (the default is TTL/3)"
            )));
        }
        if interval >= ttl {
            return Err(Error::InvalidOption(format!(
                "the keep-alive interval {interval:?} must be shorter than the TTL {ttl:?} (the default is TTL/3)"
            )));
        }
        Ok(())
    }
}
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Desired {
    Value(Vec<u8>),
    Withdrawn,
    Shutdown,
}
/// A handle on a registration. Dropping it revokes the lease in the
/// background; [`Registration::deregister`] does so and waits.
#[derive(Debug)]
pub struct Registration {
    key: String,
    desired: watch::Sender<Desired>,
    state: watch::Receiver<RegistrationState>,
    task: Option<JoinHandle<()>>,
}
/// Start the actor behind [`Client::register`] and [`Client::registration`].
pub(crate) fn spawn(
    client: &Client,
    key: &str,
    value: Option<Vec<u8>>,
    options: RegisterOptions,
) -> Result<Registration> {
    validate_key(key)?;
    options.validate()?;
    let desired = match value {
        Some(v) => Desired::Value(v),
        None => Desired::Withdrawn,
    };
    let (desired_tx, desired_rx) = watch::channel(desired);
    let (state_tx, state_rx) = watch::channel(RegistrationState::Starting);
    let actor = Actor {
        client: client.clone(),
        key: key.to_owned(),
        ttl: options.ttl,
        interval: options.interval(),
        adopt: options.adopt,
        desired: desired_rx,
        state: state_tx,
        lease: None,
        written: None,
        keeper: None,
        key_watch: None,
        key_watch_retry: None,
        backoff: Backoff::for_registration(),
        retry_at: None,
        failing_since: None,
    };
    let task = tokio::spawn(actor.run());
    Ok(Registration {
        key: key.to_owned(),
        desired: desired_tx,
        state: state_rx,
        task: Some(task),
    })
}
impl Registration {
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
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rules() {
        let ok = RegisterOptions::new(Duration::from_secs(8));
        assert!(ok.validate().is_ok());
        assert_eq!(ok.interval(), Duration::from_secs(8) / 3);
        for (opts, why) in [
            (RegisterOptions::new(Duration::ZERO), "is 0"),
            (
                RegisterOptions::new(Duration::from_millis(1500)),
                "whole number",
            ),
            (RegisterOptions::new(Duration::from_secs(1)), "minimum"),
            (
                RegisterOptions::new(Duration::from_secs(9_000_000_001)),
                "maximum",
            ),
            (
                RegisterOptions::new(Duration::from_secs(8)).with_interval(Duration::from_secs(8)),
                "shorter than the TTL",
            ),
            (
                RegisterOptions::new(Duration::from_secs(8)).with_interval(Duration::ZERO),
                "interval is 0",
            ),
        ] {
            let e = opts.validate().unwrap_err().to_string();
            assert!(e.contains(why), "{opts:?}: {e}");
        }
    }
}
