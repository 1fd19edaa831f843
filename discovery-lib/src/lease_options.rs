//! The options of a lease held for keys, shared by a single registration
//! (`register`) and a lease group (`lease_group`): the TTL, the keep-alive
//! interval, adoption, and the limits etcd puts on them. A leaf, so that
//! neither actor imports the other for them.

use std::time::Duration;

use crate::error::{Error, Result};

/// The shortest TTL etcd honours with its default election timeout (1 s):
/// it raises anything shorter to this.
pub const MIN_TTL: Duration = Duration::from_secs(2);
/// The longest TTL etcd grants (`MaxLeaseTTL`, 9,000,000,000 s).
pub const MAX_TTL: Duration = Duration::from_secs(9_000_000_000);
/// The shortest keep-alive interval accepted: anything faster only loads
/// etcd (the lease is not any safer for it).
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Options for [`Client::register`](crate::Client::register) and
/// [`Client::lease_group`](crate::Client::lease_group): the lease's TTL, its
/// keep-alive interval, and whether to adopt a live lease on start.
#[derive(Clone, Debug)]
pub struct RegisterOptions {
    /// The lease TTL asked of etcd.
    ttl: Duration,
    /// The keep-alive interval, if set; `ttl / 3` otherwise.
    interval: Option<Duration>,
    /// Adopt a live lease that already holds the value on start.
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
    /// For a [`LeaseGroup`](crate::LeaseGroup): the live lease, granted
    /// with the same TTL, that holds most of its keys with their values.
    /// On by default.
    pub const fn with_adopt(mut self, adopt: bool) -> Self {
        self.adopt = adopt;
        self
    }

    /// Whether to adopt a live lease on start ([`RegisterOptions::with_adopt`]).
    pub(crate) fn adopt(&self) -> bool {
        self.adopt
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
