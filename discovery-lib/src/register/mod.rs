//! Self-registration: keep `key = value` in etcd under a lease.
//!
//! A background actor (`actor.rs`) converges etcd to what the
//! [`Registration`] handle (`handle.rs`) asks for (a value, or nothing)
//! and reports where it stands. It never writes a value that is already
//! there: heartbeats are lease keep-alives, which produce no watch event.
//! The lease itself, from grant to revoke, is the
//! [`LeaseHolder`](crate::lease_holder::LeaseHolder)'s.

mod actor;
mod handle;

use tokio::sync::watch;

use crate::error::Result;
use crate::key::validate_key;
use crate::lease_options::RegisterOptions;
use crate::rpc::Rpc;
use actor::Actor;
use handle::Desired;
pub use handle::{Registration, RegistrationState};

/// Start the actor behind [`Client::register`](crate::Client::register)
/// and [`Client::registration`](crate::Client::registration): it registers
/// `value` at once, or waits for one while `value` is `None`.
pub(crate) fn spawn(
    rpc: &Rpc,
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
    let actor = Actor::new(rpc, key, &options, desired_rx, state_tx);
    let task = tokio::spawn(actor.run());
    Ok(Registration::new(key, desired_tx, state_rx, task))
}
