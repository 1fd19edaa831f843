//! Many keys under one lease: the registrations of a whole host.
//!
//! A [`LeaseGroup`] keeps a set of `key = value` pairs in etcd under a
//! single lease. One keep-alive stream serves every key, so a host with 200
//! registrations costs etcd (and the agent) what one registration costs;
//! a key that must go is deleted explicitly, in the same round trip as any
//! other change pending. If the owner dies, the lease expires and every
//! key goes with it, within the TTL.
//!
//! Why one lease and not one per key (measured, see BENCHMARKS.md P8): a
//! lease per key means a keep-alive per key every TTL/3, which is 200
//! messages where one does; the only thing a per-key lease buys is that a
//! withdrawal is a revoke instead of a delete, and both are one request.
//!
//! Every write is conditional, in one transaction per batch:
//! * a put happens only if the key is absent or already under our lease;
//!   a key held under another lease is a conflict, reported with its
//!   holder, and retried every TTL (the holder's lease may expire);
//! * a delete happens only if the key is still under our lease, so a
//!   withdrawal never removes another writer's key.
//!
//! On start, the group adopts the live lease that already holds its keys
//! with the same values (an agent restarted after a crash): nothing is
//! written for them, so watchers see no event. Keys that lease holds and
//! the group no longer wants are deleted. After a lost lease (etcd says it
//! expired: the owner was cut off for longer than the TTL), a new lease is
//! granted and every key put again.
//!
//! The handle is in `handle.rs`; the actor, its writes and its adoption in
//! `actor.rs`; the keys held and blocked, and the diff, as plain data in
//! `ledger.rs`; the lease itself, from grant to revoke, is the
//! [`LeaseHolder`](crate::lease_holder::LeaseHolder)'s.

mod actor;
mod handle;
mod ledger;

use std::collections::BTreeMap;

use tokio::sync::watch;

use crate::error::Result;
use crate::key::validate_key;
use crate::lease_options::RegisterOptions;
use crate::rpc::Rpc;
use actor::Actor;
use handle::Desired;
pub use handle::{GroupState, LeaseGroup};

/// Start the actor behind [`Client::lease_group`](crate::Client::lease_group).
pub(crate) fn spawn(
    rpc: &Rpc,
    options: RegisterOptions,
    initial: BTreeMap<String, Vec<u8>>,
) -> Result<LeaseGroup> {
    options.validate()?;
    for k in initial.keys() {
        validate_key(k)?;
    }
    let (desired_tx, desired_rx) = watch::channel(Desired {
        keys: initial,
        shutdown: false,
    });
    let (state_tx, state_rx) = watch::channel(GroupState::default());
    let actor = Actor::new(rpc, &options, desired_rx, state_tx);
    Ok(LeaseGroup::new(
        desired_tx,
        state_rx,
        tokio::spawn(actor.run()),
    ))
}
