//! The one fold from a watch's messages into the state of a prefix.
//!
//! Every consumer of [`Client::watch_prefix`](crate::Client::watch_prefix)
//! that keeps "what is under the prefix now" (membership, config, the
//! `--exec` feed, rendering) folds the same way: the snapshot replaces the
//! state, a set or an update stores the node, a delete removes it, and a
//! progress mark says a whole response has been applied. [`PrefixState`]
//! is that fold, written once.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::node::{Action, Node, WatchMessage};

/// The keys under a prefix as a watch has delivered them, in key order:
/// the snapshot, with every event since applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrefixState {
    /// The revision of the last message applied (snapshot, event or
    /// progress mark).
    revision: i64,
    /// Key to node, ordered by key as etcd lists them.
    nodes: BTreeMap<Bytes, Node>,
    /// A set or delete was applied since [`PrefixState::take_changed`]
    /// was last called: what a consumer that ignores updates acts on.
    changed: bool,
}

/// What one message did to a [`PrefixState`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Applied {
    /// The state was replaced by a snapshot.
    Snapshot,
    /// A key was created, or its value changed or was deleted: a set or a
    /// delete.
    Changed(Action),
    /// A key was written again with the same value (an update): the node's
    /// revisions moved, its value did not.
    Unchanged,
    /// A progress mark: everything up to this revision has been applied.
    Progress(i64),
}

impl PrefixState {
    /// An empty state at revision 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Apply one watch message.
    pub fn apply(&mut self, msg: &WatchMessage) -> Applied {
        match msg {
            WatchMessage::Snapshot(s) => {
                self.nodes = s.nodes.iter().map(|n| (n.key.clone(), n.clone())).collect();
                self.revision = s.revision;
                self.changed = true;
                Applied::Snapshot
            }
            WatchMessage::Event(e) => {
                self.revision = self.revision.max(e.revision);
                match e.action {
                    Action::Delete => {
                        self.nodes.remove(&e.node.key);
                        self.changed = true;
                        Applied::Changed(Action::Delete)
                    }
                    Action::Update => {
                        self.nodes.insert(e.node.key.clone(), e.node.clone());
                        Applied::Unchanged
                    }
                    Action::Set => {
                        self.nodes.insert(e.node.key.clone(), e.node.clone());
                        self.changed = true;
                        Applied::Changed(Action::Set)
                    }
                }
            }
            WatchMessage::Progress { revision } => {
                self.revision = self.revision.max(*revision);
                Applied::Progress(*revision)
            }
        }
    }

    /// Whether a snapshot, set or delete was applied since the last call,
    /// and clears that flag. A consumer that publishes whole transactions
    /// calls it on each [`Applied::Progress`].
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// The revision of the last message applied.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The node under `key`.
    pub fn get(&self, key: &[u8]) -> Option<&Node> {
        self.nodes.get(key)
    }

    /// The nodes in key order.
    pub fn nodes(&self) -> impl ExactSizeIterator<Item = &Node> + DoubleEndedIterator {
        self.nodes.values()
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Event, Prefix, Snapshot};

    fn node(key: &str, value: &str, rev: i64) -> Node {
        Node::new(key, value, rev, rev, None)
    }

    #[test]
    fn snapshot_then_events_fold_into_key_order() {
        let p = Prefix::new("/s").unwrap();
        let mut st = PrefixState::new();
        let snap = Snapshot::new(
            p,
            5,
            vec![node("/s/b", "2", 4), node("/s/a", "1", 3)],
            false,
        );
        assert_eq!(st.apply(&WatchMessage::Snapshot(snap)), Applied::Snapshot);
        assert!(st.take_changed());
        assert_eq!(st.revision(), 5);
        let set = Event::new(Action::Set, 6, node("/s/c", "3", 6), None, false);
        assert_eq!(
            st.apply(&WatchMessage::Event(set)),
            Applied::Changed(Action::Set)
        );
        let upd = Event::new(Action::Update, 7, node("/s/a", "1", 7), None, false);
        assert_eq!(st.apply(&WatchMessage::Event(upd)), Applied::Unchanged);
        assert_eq!(st.get(b"/s/a").map(Node::mod_revision), Some(7));
        let del = Event::new(
            Action::Delete,
            8,
            Node::new("/s/b", "", 0, 8, None),
            None,
            false,
        );
        assert_eq!(
            st.apply(&WatchMessage::Event(del)),
            Applied::Changed(Action::Delete)
        );
        assert_eq!(
            st.apply(&WatchMessage::Progress { revision: 8 }),
            Applied::Progress(8)
        );
        assert!(st.take_changed());
        assert!(!st.take_changed());
        let keys: Vec<&[u8]> = st.nodes().map(Node::key).collect();
        assert_eq!(keys, [b"/s/a".as_slice(), b"/s/c"]);
        assert_eq!(st.revision(), 8);
    }

    #[test]
    fn an_update_alone_is_not_a_change() {
        let mut st = PrefixState::new();
        let upd = Event::new(Action::Update, 2, node("/s/a", "1", 2), None, false);
        st.apply(&WatchMessage::Event(upd));
        assert!(!st.take_changed());
    }
}
