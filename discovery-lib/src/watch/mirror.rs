//! The watched prefix as delivered so far, and the diffing that turns
//! etcd's changes into our events: plain data, with no etcd connection,
//! channel or timer in it, so that it is unit-tested on its own. The engine
//! (`engine.rs`) owns one and feeds it what the streams and listings bring.

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use etcd_client::EventType;

use super::options::Scope;
use crate::key::Prefix;
use crate::node::{Action, Event, Node};

/// One change as etcd reports it, before it is classified.
#[derive(Debug)]
pub(super) enum Change {
    /// A put of `node` (new key, new value or the same value again).
    Put(Node),
    /// A delete of `key` at `revision`.
    Delete {
        /// The deleted key.
        key: Bytes,
        /// The revision of the delete.
        revision: i64,
    },
}

impl Change {
    /// One response's events under `prefix` as changes; events outside
    /// the watch's `scope` (its range is wider than the prefix) are left
    /// out. The one place that reads etcd's event types.
    pub(super) fn from_events<'a>(
        events: &'a [etcd_client::Event],
        scope: Scope,
        prefix: &'a Prefix,
    ) -> impl Iterator<Item = Change> + 'a {
        events.iter().filter_map(move |ev| {
            let kv = ev.kv()?;
            if !scope.covers(prefix, kv.key()) {
                return None;
            }
            // etcd's mvccpb.Event.EventType has exactly PUT (0) and DELETE
            // (1); `event_type` panics only on a value no etcd server sends.
            Some(match ev.event_type() {
                EventType::Put => Change::Put(Node::from_kv(kv)),
                EventType::Delete => Change::Delete {
                    key: Bytes::copy_from_slice(kv.key()),
                    revision: kv.mod_revision(),
                },
            })
        })
    }

    /// The revision of the change.
    fn revision(&self) -> i64 {
        match self {
            Change::Put(n) => n.mod_revision,
            Change::Delete { revision, .. } => *revision,
        }
    }
}

/// The prefix as delivered so far (`key -> Node`) and the last revision
/// fully applied (see the engine's module docs).
#[derive(Debug, Default)]
pub(super) struct Mirror {
    /// The prefix as delivered: classifies each change (set or update,
    /// and the previous value) and is what a resync diffs against.
    /// Unordered: every change looks a key up; only a resync needs the
    /// keys in order, and sorts them then.
    state: HashMap<Bytes, Node>,
    /// The last revision fully applied: a stream resumes at `rev + 1`.
    rev: i64,
}

impl Mirror {
    /// The last revision fully applied.
    pub(super) fn rev(&self) -> i64 {
        self.rev
    }

    /// Start over from a listing: `nodes` at `revision`.
    pub(super) fn reset(&mut self, revision: i64, nodes: &[Node]) {
        self.rev = revision;
        self.state = nodes.iter().map(|n| (n.key.clone(), n.clone())).collect();
    }

    /// Apply one etcd response's changes and classify them: a new key or
    /// value is a set, the same bytes again an update, a delete a delete,
    /// each with the previous node from the state. Changes at or below the
    /// revision already applied are dropped: a resumed stream never
    /// repeats one, even if etcd were to resend it. The events, and the new
    /// revision if it moved.
    pub(super) fn apply(
        &mut self,
        changes: impl IntoIterator<Item = Change>,
    ) -> (Vec<Event>, Option<i64>) {
        let floor = self.rev;
        let mut top = floor;
        let mut events = Vec::new();
        for change in changes {
            let revision = change.revision();
            if revision <= floor {
                continue;
            }
            top = top.max(revision);
            let event = match change {
                Change::Put(node) => {
                    let prev = self.state.insert(node.key.clone(), node.clone());
                    let action = match &prev {
                        Some(p) if p.value == node.value => Action::Update,
                        _ => Action::Set,
                    };
                    Event {
                        action,
                        revision,
                        node,
                        prev,
                        resync: false,
                    }
                }
                Change::Delete { key, revision } => Event {
                    action: Action::Delete,
                    revision,
                    prev: self.state.remove(&key),
                    node: deleted(key, revision),
                    resync: false,
                },
            };
            events.push(event);
        }
        self.rev = top;
        (events, (top > floor).then_some(top))
    }

    /// Replace the state with a fresh listing (`nodes` at `revision`) and
    /// return the difference, in key order, as resync events: a key gone
    /// is a delete, a key new or with another value a set; a key with the
    /// same value is no event, whatever else changed.
    pub(super) fn resync(&mut self, revision: i64, nodes: Vec<Node>) -> Vec<Event> {
        let fresh: HashMap<Bytes, Node> = nodes.into_iter().map(|n| (n.key.clone(), n)).collect();
        let old = std::mem::take(&mut self.state);
        let keys: BTreeSet<&Bytes> = old.keys().chain(fresh.keys()).collect();
        let mut diff = Vec::new();
        for k in keys {
            let (action, node, prev) = match (old.get(k), fresh.get(k)) {
                (Some(o), None) => (Action::Delete, deleted(k.clone(), revision), Some(o)),
                (None, Some(n)) => (Action::Set, n.clone(), None),
                (Some(o), Some(n)) if o.value != n.value => (Action::Set, n.clone(), Some(o)),
                _ => continue,
            };
            diff.push(Event {
                action,
                revision,
                node,
                prev: prev.cloned(),
                resync: true,
            });
        }
        self.state = fresh;
        self.rev = revision;
        diff
    }
}

/// The node of a delete event: the key, with no value, at `revision`.
fn deleted(key: Bytes, revision: i64) -> Node {
    Node {
        key,
        value: Bytes::new(),
        create_revision: 0,
        mod_revision: revision,
        version: 0,
        lease: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(key: &str, value: &str, revision: i64) -> Node {
        Node {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            create_revision: revision,
            mod_revision: revision,
            version: 1,
            lease: 0,
        }
    }

    fn put(key: &str, value: &str, revision: i64) -> Change {
        Change::Put(node(key, value, revision))
    }

    fn del(key: &str, revision: i64) -> Change {
        Change::Delete {
            key: Bytes::copy_from_slice(key.as_bytes()),
            revision,
        }
    }

    /// Each event as (action, key, value, previous value).
    fn brief(events: &[Event]) -> Vec<(Action, String, String, Option<String>)> {
        events
            .iter()
            .map(|e| {
                let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
                (
                    e.action,
                    text(&e.node.key),
                    text(&e.node.value),
                    e.prev.as_ref().map(|p| text(&p.value)),
                )
            })
            .collect()
    }

    #[test]
    fn puts_are_sets_or_updates_and_deletes_carry_the_previous_node() {
        let mut m = Mirror::default();
        m.reset(10, &[node("/s/a", "1", 5)]);
        let (events, moved) = m.apply([
            put("/s/a", "1", 11),
            put("/s/a", "2", 12),
            put("/s/b", "3", 12),
            del("/s/a", 13),
            del("/s/never", 13),
        ]);
        assert_eq!(moved, Some(13));
        assert_eq!(m.rev(), 13);
        let s = |v: &str| v.to_owned();
        assert_eq!(
            brief(&events),
            [
                (Action::Update, s("/s/a"), s("1"), Some(s("1"))),
                (Action::Set, s("/s/a"), s("2"), Some(s("1"))),
                (Action::Set, s("/s/b"), s("3"), None),
                (Action::Delete, s("/s/a"), s(""), Some(s("2"))),
                (Action::Delete, s("/s/never"), s(""), None),
            ]
        );
        assert!(events.iter().all(|e| !e.resync));
        assert_eq!(
            events[3].node.mod_revision, 13,
            "a delete's node is at its revision"
        );
    }

    #[test]
    fn what_was_applied_before_is_never_repeated() {
        let mut m = Mirror::default();
        m.reset(10, &[]);
        let (first, _) = m.apply([put("/s/a", "1", 11), put("/s/b", "1", 12)]);
        assert_eq!(first.len(), 2);
        // A resumed stream that resends revisions 11 and 12 yields only 13.
        let (again, moved) = m.apply([
            put("/s/a", "1", 11),
            put("/s/b", "1", 12),
            put("/s/c", "1", 13),
        ]);
        assert_eq!(brief(&again).len(), 1);
        assert_eq!(again[0].revision, 13);
        assert_eq!(moved, Some(13));
        // Nothing new: the revision does not move.
        let (none, moved) = m.apply([del("/s/a", 12)]);
        assert!(none.is_empty());
        assert_eq!((moved, m.rev()), (None, 13));
    }

    #[test]
    fn a_resync_yields_only_the_difference_in_key_order() {
        let mut m = Mirror::default();
        m.reset(
            10,
            &[
                node("/s/a", "1", 3),
                node("/s/b", "2", 4),
                node("/s/c", "3", 5),
            ],
        );
        // After compaction: a unchanged but rewritten, b changed, c gone,
        // d new.
        let diff = m.resync(
            20,
            vec![
                node("/s/d", "4", 18),
                node("/s/b", "20", 15),
                node("/s/a", "1", 16),
            ],
        );
        let s = |v: &str| v.to_owned();
        assert_eq!(
            brief(&diff),
            [
                (Action::Set, s("/s/b"), s("20"), Some(s("2"))),
                (Action::Delete, s("/s/c"), s(""), Some(s("3"))),
                (Action::Set, s("/s/d"), s("4"), None),
            ]
        );
        assert!(diff.iter().all(|e| e.resync && e.revision == 20));
        assert_eq!(m.rev(), 20);
        // The state is the listing now: a later put of d's value is an
        // update, and nothing at or below 20 is applied.
        let (events, _) = m.apply([put("/s/c", "x", 20), put("/s/d", "4", 21)]);
        assert_eq!(
            brief(&events),
            [(Action::Update, s("/s/d"), s("4"), Some(s("4")))]
        );
    }

    #[test]
    fn a_resync_with_nothing_changed_yields_nothing() {
        let mut m = Mirror::default();
        m.reset(10, &[node("/s/a", "1", 3)]);
        assert!(m.resync(30, vec![node("/s/a", "1", 3)]).is_empty());
        assert_eq!(m.rev(), 30);
    }
}
