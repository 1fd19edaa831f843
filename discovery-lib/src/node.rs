//! What a watch yields: nodes, snapshots and classified events.

use bytes::Bytes;

/// One key and its value, as etcd stores it.
///
/// Keys and values are bytes: etcd does not require UTF-8 and neither do we.
/// Use [`Node::key_str`] and [`Node::value_str`] where text is expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    // Shared buffers: the watch's state and the events it yields hold the
    // same bytes, and a clone is a reference count, not a copy.
    /// The full etcd key.
    pub(crate) key: Bytes,
    /// The value; empty for a deleted key.
    pub(crate) value: Bytes,
    /// The revision that created the key (etcd's `create_revision`).
    pub(crate) create_revision: i64,
    /// The revision of the key's last write (etcd's `mod_revision`).
    pub(crate) mod_revision: i64,
    /// How many times the key was written since it was created.
    pub(crate) version: i64,
    /// The lease the key is held under; 0 for none.
    pub(crate) lease: i64,
}

impl Node {
    /// A node as etcd would report it, for tools and tests that replay or
    /// fake changes (a lease of `None` is stored as etcd's 0).
    pub fn new(
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        create_revision: i64,
        mod_revision: i64,
        lease: Option<LeaseId>,
    ) -> Self {
        Self {
            key: Bytes::from(key.into()),
            value: Bytes::from(value.into()),
            create_revision,
            mod_revision,
            version: 1,
            lease: lease.map(|l| l.0).unwrap_or(0),
        }
    }

    pub(crate) fn from_kv(kv: &etcd_client::KeyValue) -> Self {
        Self {
            key: Bytes::copy_from_slice(kv.key()),
            value: Bytes::copy_from_slice(kv.value()),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            version: kv.version(),
            lease: kv.lease(),
        }
    }

    /// The key's bytes.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The key as text, if it is UTF-8.
    pub fn key_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.key).ok()
    }

    /// The value's bytes (empty for a deleted key).
    pub fn value(&self) -> &[u8] {
        &self.value
    }

    /// The value as text, if it is UTF-8.
    pub fn value_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.value).ok()
    }

    /// The revision that created the key (etcd v2's `createdIndex`); 0 for a deletion.
    pub fn create_revision(&self) -> i64 {
        self.create_revision
    }

    /// The revision of the last change (etcd v2's `modifiedIndex`).
    pub fn mod_revision(&self) -> i64 {
        self.mod_revision
    }

    /// How many times the key was written since it was created.
    pub fn version(&self) -> i64 {
        self.version
    }

    /// The lease the key is attached to, if any.
    pub fn lease(&self) -> Option<LeaseId> {
        (self.lease != 0).then_some(LeaseId(self.lease))
    }
}

/// An etcd lease id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub i64);

impl std::fmt::Display for LeaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // etcdctl prints lease ids in hex.
        write!(f, "{:x}", self.0)
    }
}

/// How a change matters to a consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// The key is new or its value changed: a new location, act on it.
    Set,
    /// The key was written again with a byte-identical value, such as a
    /// re-registration. Consumers ignore it by default.
    Update,
    /// The key was deleted, explicitly or because its lease expired.
    Delete,
}

impl Action {
    /// The etcd v2 action name: `set`, `update` or `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Set => "set",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "set" => Ok(Action::Set),
            "update" => Ok(Action::Update),
            "delete" => Ok(Action::Delete),
            other => Err(format!(
                "unknown action {other:?}; use set, update or delete"
            )),
        }
    }
}

/// One change under a watched prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// What happened: a set, an update (the same value again) or a delete.
    pub(crate) action: Action,
    /// The etcd revision of the change.
    pub(crate) revision: i64,
    /// The key after the change (for a delete, the key with no value).
    pub(crate) node: Node,
    /// The key before the change, if it existed.
    pub(crate) prev: Option<Node>,
    /// The event was made by a resync after a compaction, not seen by the watch.
    pub(crate) resync: bool,
}

impl Event {
    /// An event, for tools and tests that replay or fake changes. Nothing
    /// checks that it agrees with itself (a set whose value equals `prev`'s):
    /// the watch never yields one that does not.
    pub fn new(
        action: Action,
        revision: i64,
        node: Node,
        prev: Option<Node>,
        resync: bool,
    ) -> Self {
        Self {
            action,
            revision,
            node,
            prev,
            resync,
        }
    }

    /// Set, update or delete.
    pub fn action(&self) -> Action {
        self.action
    }

    /// The etcd revision of this change. For a resync event, the revision of
    /// the re-list that found the difference.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The key after the change. For a delete: the key, an empty value and
    /// the deletion's revision as `mod_revision`.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The key before the change; `None` when the key was new.
    pub fn prev(&self) -> Option<&Node> {
        self.prev.as_ref()
    }

    /// The key's bytes.
    pub fn key(&self) -> &[u8] {
        &self.node.key
    }

    /// The new value (empty for a delete).
    pub fn value(&self) -> &[u8] {
        &self.node.value
    }

    /// The previous value, if the key existed.
    pub fn prev_value(&self) -> Option<&[u8]> {
        self.prev.as_ref().map(|n| n.value.as_ref())
    }

    /// The lease the key is attached to after the change.
    pub fn lease(&self) -> Option<LeaseId> {
        self.node.lease()
    }

    /// True when this event was not seen live but computed by comparing a
    /// fresh listing with the last known state, after the history the watch
    /// needed was compacted away.
    pub fn is_resync(&self) -> bool {
        self.resync
    }
}

/// The keys under a prefix at one revision, sorted by key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The watched prefix.
    pub(crate) prefix: crate::Prefix,
    /// The etcd revision of the change.
    pub(crate) revision: i64,
    /// The keys under the prefix, sorted by key.
    pub(crate) nodes: Vec<Node>,
    /// The event was made by a resync after a compaction, not seen by the watch.
    pub(crate) resync: bool,
}

impl Snapshot {
    /// A snapshot, for tools and tests; `nodes` are sorted by key here.
    pub fn new(prefix: crate::Prefix, revision: i64, mut nodes: Vec<Node>, resync: bool) -> Self {
        nodes.sort_by(|a, b| a.key.cmp(&b.key));
        Self {
            prefix,
            revision,
            nodes,
            resync,
        }
    }

    /// The prefix this snapshot lists.
    pub fn prefix(&self) -> &crate::Prefix {
        &self.prefix
    }

    /// The etcd revision the listing was read at.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The keys, sorted by key.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The values in key order, as text where they are UTF-8 (lossy otherwise).
    pub fn values_lossy(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| String::from_utf8_lossy(&n.value).into_owned())
            .collect()
    }

    /// True when this snapshot replaces history that was compacted away
    /// (a watch asked to start at a revision etcd no longer has).
    pub fn is_resync(&self) -> bool {
        self.resync
    }
}

/// What a prefix watch yields: one snapshot, then events.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchMessage {
    /// The state at the watch's start revision. Always the first message.
    Snapshot(Snapshot),
    /// A change after the snapshot, in revision order.
    Event(Event),
    /// Every change up to and including `revision` has been delivered.
    /// Sent after each batch from etcd, and only when asked for with
    /// [`WatchOptions::with_progress_marks`](crate::WatchOptions::with_progress_marks):
    /// consumers that must apply a multi-key transaction at once wait for it.
    Progress {
        /// The revision reached.
        revision: i64,
    },
}
