//! The JSON Lines `discover` prints: etcd v2-style envelopes, so that code
//! written for node-etcd (`body.node.nodes.map(v => v.value)`,
//! `watcher.on('set', …)`) ports as is.
//!
//! ```text
//! {"action":"get","revision":41,"node":{"key":"/services/couchbase","dir":true,"nodes":[{"key":"/services/couchbase/1","value":"10.1.1.2","createdIndex":12,"modifiedIndex":12}],"createdIndex":12,"modifiedIndex":12}}
//! {"action":"set","revision":57,"node":{"key":"/services/couchbase/1","value":"10.1.53.5","createdIndex":12,"modifiedIndex":57},"prevNode":{"key":"/services/couchbase/1","value":"10.1.1.2","createdIndex":12,"modifiedIndex":12}}
//! {"action":"delete","revision":60,"node":{"key":"/services/couchbase/1","createdIndex":12,"modifiedIndex":60},"prevNode":{…}}
//! ```
//!
//! Every field path etcd's own v2 API returns for these operations is
//! there, with the same JSON type (`tests/tests/v2_parity.rs` checks this
//! against a real `etcd --enable-v2`); the index values are v3's:
//! * `createdIndex` / `modifiedIndex` are etcd v3's create and mod revisions.
//! * v3 has no directories, so the `get` directory node's `createdIndex` is
//!   the smallest `createdIndex` among its nodes and its `modifiedIndex` the
//!   largest `modifiedIndex` (both 0 when it is empty).
//! * A `delete` node's `createdIndex` is the deleted key's (from `prevNode`);
//!   0 in the one case discover never saw the key alive.
//! * `nodes` is sorted by key, and present (possibly empty) on every `get`.
//! * `prevNode` is absent when the key was new.
//! * A value that is not UTF-8 is given as `valueBase64` instead of `value`
//!   (and a key as `keyBase64`).
//! * `ttl` (seconds left on the key's lease) is added on `get` with `--ttl`.
//! * Events found by a compaction resync carry `"resync":true`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use discovery::{Event, Node, Snapshot};
use serde::Serialize;

/// One v2 node: a key, or the directory a `get` lists. Absent fields are
/// left out of the JSON, as etcd v2 leaves them out.
#[derive(Serialize)]
struct JsonNode<'a> {
    /// The key, when it is UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    /// `keyBase64`: the key's bytes, when they are not UTF-8.
    #[serde(rename = "keyBase64", skip_serializing_if = "Option::is_none")]
    key_b64: Option<String>,
    /// `true` on the directory node of a `get` line, absent elsewhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    dir: Option<bool>,
    /// The value, when it is UTF-8 (absent on a `delete` node).
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a str>,
    /// `valueBase64`: the value's bytes, when they are not UTF-8.
    #[serde(rename = "valueBase64", skip_serializing_if = "Option::is_none")]
    value_b64: Option<String>,
    /// The directory's keys, sorted (on a `get` line, even when empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    nodes: Option<Vec<JsonNode<'a>>>,
    /// `createdIndex`: v3's create revision (see the module doc for the
    /// directory's and a delete's).
    #[serde(rename = "createdIndex", skip_serializing_if = "Option::is_none")]
    created: Option<i64>,
    /// `modifiedIndex`: v3's mod revision.
    #[serde(rename = "modifiedIndex", skip_serializing_if = "Option::is_none")]
    modified: Option<i64>,
    /// Seconds left on the key's lease, with `get --ttl`.
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<u64>,
}

/// One JSON line: v2's response envelope.
#[derive(Serialize)]
struct Envelope<'a> {
    /// `get`, `set`, `update` or `delete`.
    action: &'a str,
    /// The etcd revision the line is at (v2 had none; v3 readers resume
    /// from it with `--since-revision`).
    revision: i64,
    /// The key (or, on `get`, the directory) after the change.
    node: JsonNode<'a>,
    /// `prevNode`: the key before the change; absent when it was new.
    #[serde(rename = "prevNode", skip_serializing_if = "Option::is_none")]
    prev: Option<JsonNode<'a>>,
    /// `true` on an event a compaction resync found (absent otherwise).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    resync: bool,
}

/// A key as `key` when it is UTF-8, else as `keyBase64`: the pair of
/// optional fields, exactly one of them set.
fn key_fields(key: &[u8]) -> (Option<&str>, Option<String>) {
    match std::str::from_utf8(key) {
        Ok(k) => (Some(k), None),
        Err(_) => (None, Some(B64.encode(key))),
    }
}

/// The v2-style JSON node of `n`: key, indexes, the value (unless
/// `with_value` is false, as for a delete) and the lease's `ttl` if asked.
fn node(n: &Node, with_value: bool, ttl: Option<u64>) -> JsonNode<'_> {
    let (key, key_b64) = key_fields(n.key());
    let (value, value_b64) = if with_value {
        match n.value_str() {
            Some(v) => (Some(v), None),
            None => (None, Some(B64.encode(n.value()))),
        }
    } else {
        (None, None)
    };
    JsonNode {
        key,
        key_b64,
        dir: None,
        value,
        value_b64,
        nodes: None,
        created: Some(n.create_revision()),
        modified: Some(n.mod_revision()),
        ttl,
    }
}

/// The `get` line for a snapshot. `ttl(node)` gives the seconds left on a
/// node's lease when `--ttl` was asked for.
pub fn get_line(snap: &Snapshot, ttl: &dyn Fn(&Node) -> Option<u64>) -> String {
    let nodes: Vec<JsonNode<'_>> = snap.nodes().iter().map(|n| node(n, true, ttl(n))).collect();
    let created = snap.nodes().iter().map(Node::create_revision).min();
    let modified = snap.nodes().iter().map(Node::mod_revision).max();
    let env = Envelope {
        action: "get",
        revision: snap.revision(),
        node: JsonNode {
            key: Some(snap.prefix().as_str()),
            key_b64: None,
            dir: Some(true),
            value: None,
            value_b64: None,
            nodes: Some(nodes),
            created: Some(created.unwrap_or(0)),
            modified: Some(modified.unwrap_or(0)),
            ttl: None,
        },
        prev: None,
        resync: snap.is_resync(),
    };
    to_line(&env)
}

/// The line for one event as serde writes it from `Envelope`: the
/// reference that [`encode_event`] must match byte for byte.
#[cfg(test)]
fn event_line_serde(e: &Event) -> String {
    let is_delete = e.action() == discovery::Action::Delete;
    let mut n = node(e.node(), !is_delete, None);
    n.created = Some(created_index(e));
    let env = Envelope {
        action: e.action().as_str(),
        revision: e.revision(),
        node: n,
        prev: e.prev().map(|p| node(p, true, None)),
        resync: e.is_resync(),
    };
    to_line(&env)
}

/// The event node's `createdIndex`. A v3 delete event carries no create
/// revision; etcd's v2 API gives the deleted node's, which is `prevNode`'s.
fn created_index(e: &Event) -> i64 {
    match (e.node().create_revision(), e.prev()) {
        (0, Some(p)) => p.create_revision(),
        (c, _) => c,
    }
}

/// Append the line for one event, with its newline, to `out`.
///
/// This is on every event's path (a replay runs hundreds of thousands a
/// second), so it writes the envelope by hand: serde's per-field and
/// per-string overhead was a third of discover's time. The output is
/// exactly what serde writes from the `Envelope` struct (a property test holds
/// the two together), so the format has one definition.
pub fn encode_event(out: &mut Vec<u8>, e: &Event) {
    out.extend_from_slice(b"{\"action\":\"");
    out.extend_from_slice(e.action().as_str().as_bytes());
    out.extend_from_slice(b"\",\"revision\":");
    push_int(out, e.revision());
    out.extend_from_slice(b",\"node\":");
    push_node(
        out,
        e.node(),
        e.action() != discovery::Action::Delete,
        created_index(e),
    );
    if let Some(p) = e.prev() {
        out.extend_from_slice(b",\"prevNode\":");
        push_node(out, p, true, p.create_revision());
    }
    if e.is_resync() {
        out.extend_from_slice(b",\"resync\":true");
    }
    out.extend_from_slice(b"}\n");
}

/// A node of an event line: the fields [`node`] gives serde, in its order.
fn push_node(out: &mut Vec<u8>, n: &Node, with_value: bool, created: i64) {
    out.push(b'{');
    push_text_or_b64(out, "key", n.key());
    if with_value {
        out.push(b',');
        push_text_or_b64(out, "value", n.value());
    }
    out.extend_from_slice(b",\"createdIndex\":");
    push_int(out, created);
    out.extend_from_slice(b",\"modifiedIndex\":");
    push_int(out, n.mod_revision());
    out.push(b'}');
}

/// `"name":"text"` when the bytes are UTF-8, else `"nameBase64":"…"`.
fn push_text_or_b64(out: &mut Vec<u8>, name: &str, bytes: &[u8]) {
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            out.extend_from_slice(b"\":");
            push_str(out, text);
        }
        Err(_) => {
            out.extend_from_slice(b"Base64\":\"");
            out.extend_from_slice(B64.encode(bytes).as_bytes());
            out.push(b'"');
        }
    }
}

/// A JSON string, escaped exactly as serde_json escapes it.
fn push_str(out: &mut Vec<u8>, s: &str) {
    // Nearly every key and value (paths, addresses) needs no escaping.
    if s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// A JSON integer, formatted without allocating.
fn push_int(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `v` as one JSON line (without the newline).
fn to_line<T: Serialize>(v: &T) -> String {
    // Serializing strings, integers and booleans into a String cannot fail.
    serde_json::to_string(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_standard_padded() {
        assert_eq!(B64.encode([0xff, 0xfe]), "//4=");
    }

    /// What a line says a node's key or value is: text, or base64, never both.
    fn field(v: &serde_json::Value, name: &str) -> Option<Vec<u8>> {
        let text = v.get(name).and_then(|s| s.as_str());
        let b64 = v
            .get(format!("{name}Base64").as_str())
            .and_then(|s| s.as_str());
        match (text, b64) {
            (Some(t), None) => Some(t.as_bytes().to_vec()),
            (None, Some(b)) => Some(B64.decode(b).expect("valid base64")),
            (None, None) => None,
            (Some(_), Some(_)) => panic!("both {name} and {name}Base64: {v}"),
        }
    }

    fn bytes(max: usize) -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        prop_oneof![
            // Any bytes at all (mostly not UTF-8)...
            proptest::collection::vec(any::<u8>(), 0..max),
            // ...and text, which must come out as text.
            "\\PC{0,24}".prop_map(String::into_bytes),
        ]
    }

    proptest::proptest! {
        /// Every event line, from any key and value bytes, is one line of
        /// JSON that gives back exactly those bytes: as `key`/`value` when
        /// they are UTF-8, as `keyBase64`/`valueBase64` otherwise. Through
        /// the encoder discover prints with.
        #[test]
        fn event_lines_round_trip_any_bytes(
            key in bytes(48),
            value in bytes(64),
            prev in proptest::option::of(bytes(64)),
            delete in proptest::bool::ANY,
            resync in proptest::bool::ANY,
        ) {
            let action = if delete { discovery::Action::Delete } else { discovery::Action::Set };
            let node = Node::new(key.clone(), if delete { vec![] } else { value.clone() }, 3, 9, None);
            let prev_node = prev.clone().map(|p| Node::new(key.clone(), p, 3, 5, None));
            let e = Event::new(action, 9, node, prev_node, resync);
            let mut out = Vec::new();
            encode_event(&mut out, &e);
            // The hand-written line is the one serde writes, byte for byte.
            proptest::prop_assert_eq!(
                std::str::from_utf8(&out).unwrap(),
                format!("{}\n", event_line_serde(&e))
            );
            proptest::prop_assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1);
            proptest::prop_assert_eq!(out.last(), Some(&b'\n'));
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            proptest::prop_assert_eq!(v["action"].as_str(), Some(action.as_str()));
            proptest::prop_assert_eq!(field(&v["node"], "key"), Some(key.clone()));
            if delete {
                proptest::prop_assert_eq!(field(&v["node"], "value"), None);
            } else {
                proptest::prop_assert_eq!(field(&v["node"], "value"), Some(value));
            }
            match prev {
                Some(p) => {
                    proptest::prop_assert_eq!(field(&v["prevNode"], "value"), Some(p));
                    proptest::prop_assert_eq!(field(&v["prevNode"], "key"), Some(key));
                }
                None => proptest::prop_assert!(v.get("prevNode").is_none()),
            }
        }

        /// The same for a get line, with any number of nodes: sorted by key,
        /// every key and value given back exactly.
        #[test]
        fn get_lines_round_trip_any_bytes(
            entries in proptest::collection::btree_map(bytes(32), bytes(32), 0..8),
        ) {
            let nodes: Vec<Node> = entries
                .iter()
                .map(|(k, v)| Node::new(k.clone(), v.clone(), 2, 4, None))
                .collect();
            let prefix = discovery::Prefix::new("/services/x").unwrap();
            let snap = discovery::Snapshot::new(prefix, 4, nodes, false);
            let line = get_line(&snap, &|_| None);
            proptest::prop_assert!(!line.contains('\n'));
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            let got: Vec<(Vec<u8>, Vec<u8>)> = v["node"]["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| (field(n, "key").unwrap(), field(n, "value").unwrap()))
                .collect();
            let want: Vec<(Vec<u8>, Vec<u8>)> = entries.into_iter().collect();
            proptest::prop_assert_eq!(got, want);
        }
    }
}
