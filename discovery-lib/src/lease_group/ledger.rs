//! The group's keys as data: what etcd holds under the group's lease,
//! which keys are blocked and why, the writes that bring etcd to the map
//! wanted, and what each write's outcome changes. No I/O, so the diff is
//! tested without etcd; the actor (`actor.rs`) sends the writes.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};

use super::handle::GroupState;
use crate::lease_holder::UnderLease;
use crate::node::LeaseId;

/// One key's write in a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Op {
    /// Put the value under our lease, unless another lease holds the key.
    Put(String, Vec<u8>),
    /// Delete the key, if it is still under our lease.
    Delete(String),
}

impl Op {
    /// The key written.
    pub(super) fn key(&self) -> &str {
        match self {
            Op::Put(k, _) | Op::Delete(k) => k,
        }
    }
}

/// What etcd holds for the group and what keeps the rest from being
/// written. The group's [`LeaseHolder`](crate::lease_holder::LeaseHolder)
/// keeps it, and empties `held` when the lease is lost.
#[derive(Debug, Default)]
pub(super) struct Ledger {
    /// What etcd holds under our lease: key to value (`None` when adopted
    /// without knowing the value, which is then rewritten or deleted).
    held: HashMap<String, Option<Vec<u8>>>,
    /// Keys not written because of a conflict or a refusal, with the value
    /// that was refused: tried again at the recheck, or at once when the
    /// value wanted changes.
    blocked: HashMap<String, Vec<u8>>,
    /// Blocked keys held under another lease: key to the holder.
    conflicts: BTreeMap<String, LeaseId>,
    /// Blocked keys etcd refuses: key to the reason.
    refused: BTreeMap<String, String>,
}

impl UnderLease for Ledger {
    /// Every key of the lease is gone; what blocks the others still does
    /// (another writer's lease does not care about ours).
    fn lease_lost(&mut self) {
        self.held.clear();
    }
}

impl Ledger {
    /// The writes that bring etcd from what it holds for us to `desired`:
    /// a delete for each key held and no longer wanted, in key order, then
    /// a put for each key wanted and not held with its value (deletes
    /// first: they are what a consumer waits on). A blocked key is left
    /// out until the value wanted for it changes (then it is tried at once)
    /// or the recheck.
    pub(super) fn plan(&mut self, desired: &BTreeMap<String, Vec<u8>>) -> Vec<Op> {
        self.blocked.retain(|k, v| desired.get(k) == Some(v));
        let blocked = &self.blocked;
        self.conflicts.retain(|k, _| blocked.contains_key(k));
        self.refused.retain(|k, _| blocked.contains_key(k));
        let mut gone: Vec<&String> = self
            .held
            .keys()
            .filter(|k| !desired.contains_key(*k))
            .collect();
        gone.sort_unstable();
        let mut ops: Vec<Op> = gone.into_iter().map(|k| Op::Delete(k.clone())).collect();
        ops.extend(
            desired
                .iter()
                .filter(|(k, v)| {
                    !self.blocked.contains_key(*k)
                        && self.held.get(*k).is_none_or(|w| w.as_ref() != Some(*v))
                })
                .map(|(k, v)| Op::Put(k.clone(), v.clone())),
        );
        ops
    }

    /// A write etcd applied: a put is held with its value; a delete is
    /// forgotten (deleted, or no longer ours: another writer had the key).
    pub(super) fn applied(&mut self, op: &Op) {
        match op {
            Op::Put(k, v) => {
                self.held.insert(k.clone(), Some(v.clone()));
            }
            Op::Delete(k) => {
                self.held.remove(k);
            }
        }
    }

    /// A put not made because `holder`, another lease, has the key.
    pub(super) fn conflict(&mut self, key: &str, value: Vec<u8>, holder: LeaseId) {
        self.held.remove(key);
        self.blocked.insert(key.to_owned(), value);
        self.conflicts.insert(key.to_owned(), holder);
    }

    /// A write etcd refuses (permission denied, a value too large), for
    /// reason `why`. A refused delete is forgotten: the key goes with the
    /// lease.
    pub(super) fn refused(&mut self, op: &Op, why: String) {
        let (key, value) = match op {
            Op::Put(k, v) => (k, v.clone()),
            Op::Delete(k) => {
                self.held.remove(k);
                (k, Vec::new())
            }
        };
        self.blocked.insert(key.clone(), value);
        self.refused.insert(key.clone(), why);
    }

    /// Time to try every blocked key again: another writer's lease may
    /// have expired, or someone fixed the permissions.
    pub(super) fn recheck(&mut self) {
        self.blocked.clear();
        self.conflicts.clear();
        self.refused.clear();
    }

    /// How many keys etcd holds for us.
    pub(super) fn held(&self) -> usize {
        self.held.len()
    }

    /// We adopted lease `id`, which holds `keys`: each is held, with the
    /// value `found` says it has under that lease (unknown otherwise, so
    /// it is rewritten or deleted).
    pub(super) fn adopted(
        &mut self,
        id: i64,
        keys: &[Vec<u8>],
        found: &HashMap<String, (Vec<u8>, i64)>,
    ) {
        self.held = keys
            .iter()
            .map(|k| {
                let key = String::from_utf8_lossy(k).into_owned();
                let value = found
                    .get(&key)
                    .filter(|(_, l)| *l == id)
                    .map(|(v, _)| v.clone());
                (key, value)
            })
            .collect();
    }

    /// Where the group stands, asked for `desired`, under `lease`, with
    /// the last failure if it is retrying.
    pub(super) fn state(
        &self,
        desired: &BTreeMap<String, Vec<u8>>,
        lease: Option<LeaseId>,
        retrying: Option<String>,
    ) -> GroupState {
        let held = desired
            .iter()
            .filter(|(k, v)| self.held.get(*k).is_some_and(|w| w.as_ref() == Some(*v)))
            .count();
        GroupState {
            lease,
            held,
            pending: desired.len() - held,
            synced: held == desired.len() && self.held.len() == held,
            retrying,
            conflicts: self.conflicts.clone(),
            refused: self.refused.clone(),
            stopped: false,
        }
    }
}

/// The lease to adopt, from what etcd holds at our keys (`found`: key to
/// value and lease): the live lease that holds most of them with the
/// values wanted (the lowest id on a tie). `None` if no key matches.
pub(super) fn adoption_candidate(
    desired: &BTreeMap<String, Vec<u8>>,
    found: &HashMap<String, (Vec<u8>, i64)>,
) -> Option<i64> {
    let mut votes: HashMap<i64, usize> = HashMap::new();
    for (k, (v, lease)) in found {
        if *lease != 0 && desired.get(k) == Some(v) {
            *votes.entry(*lease).or_default() += 1;
        }
    }
    votes
        .into_iter()
        .max_by_key(|&(id, n)| (n, Reverse(id)))
        .map(|(id, _)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    fn put(k: &str, v: &str) -> Op {
        Op::Put(k.to_owned(), v.as_bytes().to_vec())
    }

    fn del(k: &str) -> Op {
        Op::Delete(k.to_owned())
    }

    /// A ledger that holds `kv`, as after writing it.
    fn holding(kv: &[(&str, &str)]) -> Ledger {
        let mut l = Ledger::default();
        for (k, v) in kv {
            l.applied(&put(k, v));
        }
        l
    }

    #[test]
    fn from_nothing_every_key_is_put_in_key_order() {
        let mut l = Ledger::default();
        let want = map(&[("/b", "2"), ("/a", "1")]);
        assert_eq!(l.plan(&want), [put("/a", "1"), put("/b", "2")]);
        let s = l.state(&want, None, None);
        assert_eq!((s.held, s.pending, s.synced), (0, 2, false));
    }

    #[test]
    fn only_the_difference_is_written_deletes_first() {
        let mut l = holding(&[("/a", "1"), ("/b", "2"), ("/c", "3"), ("/e", "5")]);
        let want = map(&[("/a", "1"), ("/b", "20"), ("/d", "4")]);
        let ops = l.plan(&want);
        assert_eq!(ops, [del("/c"), del("/e"), put("/b", "20"), put("/d", "4")]);
        for op in &ops {
            l.applied(op);
        }
        assert!(l.plan(&want).is_empty(), "nothing left to write");
        let s = l.state(&want, Some(LeaseId(7)), None);
        assert_eq!((s.held, s.pending, s.synced), (3, 0, true));
        assert_eq!(s.lease, Some(LeaseId(7)));
    }

    #[test]
    fn a_key_held_and_not_wanted_keeps_the_group_out_of_sync() {
        let l = holding(&[("/a", "1"), ("/x", "9")]);
        let s = l.state(&map(&[("/a", "1")]), None, None);
        assert_eq!((s.held, s.pending, s.synced), (1, 0, false));
    }

    #[test]
    fn a_conflict_waits_for_a_new_value_or_the_recheck() {
        let mut l = Ledger::default();
        let want = map(&[("/a", "1"), ("/b", "2")]);
        l.plan(&want);
        l.applied(&put("/a", "1"));
        l.conflict("/b", b"2".to_vec(), LeaseId(42));
        assert!(l.plan(&want).is_empty(), "a blocked key is not retried");
        let s = l.state(&want, None, None);
        assert_eq!(s.conflicts.get("/b"), Some(&LeaseId(42)));
        assert_eq!((s.held, s.pending, s.synced), (1, 1, false));

        // A new value for the key is tried at once, and the conflict is
        // no longer reported.
        let newer = map(&[("/a", "1"), ("/b", "3")]);
        assert_eq!(l.plan(&newer), [put("/b", "3")]);
        assert!(l.state(&newer, None, None).conflicts.is_empty());

        // Blocked again; the recheck tries it with the same value.
        l.conflict("/b", b"3".to_vec(), LeaseId(42));
        assert!(l.plan(&newer).is_empty());
        l.recheck();
        assert!(l.state(&newer, None, None).conflicts.is_empty());
        assert_eq!(l.plan(&newer), [put("/b", "3")]);
    }

    #[test]
    fn a_refused_put_is_reported_and_a_refused_delete_forgotten() {
        let mut l = holding(&[("/old", "1")]);
        let want = map(&[("/new", "2")]);
        assert_eq!(l.plan(&want), [del("/old"), put("/new", "2")]);
        l.refused(&del("/old"), "permission denied".into());
        l.refused(&put("/new", "2"), "permission denied".into());
        let s = l.state(&want, None, None);
        assert_eq!(s.refused.len(), 2, "{s:?}");
        assert_eq!((s.held, s.pending), (0, 1));
        // The delete is not tried again (the key goes with the lease); the
        // put waits for the recheck.
        assert!(l.plan(&want).is_empty());
        assert_eq!(
            l.state(&want, None, None)
                .refused
                .keys()
                .collect::<Vec<_>>(),
            ["/new"]
        );
    }

    #[test]
    fn a_lost_lease_forgets_what_was_held_but_not_what_is_blocked() {
        let mut l = holding(&[("/a", "1")]);
        l.conflict("/b", b"2".to_vec(), LeaseId(42));
        l.lease_lost();
        assert_eq!(l.held(), 0);
        let want = map(&[("/a", "1"), ("/b", "2")]);
        assert_eq!(l.plan(&want), [put("/a", "1")]);
        assert_eq!(
            l.state(&want, None, None).conflicts.get("/b"),
            Some(&LeaseId(42))
        );
    }

    #[test]
    fn adoption_takes_the_lease_holding_most_keys_and_rewrites_what_differs() {
        let want = map(&[("/a", "1"), ("/b", "2"), ("/c", "3")]);
        let found: HashMap<String, (Vec<u8>, i64)> = [
            ("/a", "1", 10),
            ("/b", "2", 10),
            ("/c", "3", 11),
            ("/z", "9", 10),
        ]
        .into_iter()
        .map(|(k, v, l)| (k.to_owned(), (v.as_bytes().to_vec(), l)))
        .collect();
        assert_eq!(adoption_candidate(&want, &found), Some(10));
        // Lease 10 also holds /d, which was not read: its value is unknown.
        let mut l = Ledger::default();
        l.adopted(
            10,
            &[b"/a".to_vec(), b"/b".to_vec(), b"/d".to_vec()],
            &found,
        );
        assert_eq!(l.held(), 3);
        assert_eq!(l.plan(&want), [del("/d"), put("/c", "3")]);

        // No key with the value wanted: nothing to adopt; a tie goes to
        // the lowest id.
        let other = map(&[("/a", "other")]);
        assert_eq!(adoption_candidate(&other, &found), None);
        let tie = map(&[("/b", "2"), ("/c", "3")]);
        assert_eq!(adoption_candidate(&tie, &found), Some(10));
    }
}
