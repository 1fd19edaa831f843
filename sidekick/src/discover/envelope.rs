//! The JSON Lines `discover` prints: etcd v2-style envelopes, so that code
//! written for node-etcd (`body.node.nodes.map(v => v.value)`,
//! `watcher.on('set', …)`) ports as is.
//!
//! ```text
//! {"action":"get","revision":41,"node":{"key":"/services/couchbase","dir":true,"nodes":[{"key":"/services/couchbase/1","value":"10.1.1.2","createdIndex":12,"modifiedIndex":12}]}}
//! {"action":"set","revision":57,"node":{"key":"/services/couchbase/1","value":"10.1.53.5","createdIndex":12,"modifiedIndex":57},"prevNode":{"key":"/services/couchbase/1","value":"10.1.1.2","createdIndex":12,"modifiedIndex":12}}
//! {"action":"delete","revision":60,"node":{"key":"/services/couchbase/1","modifiedIndex":60},"prevNode":{…}}
//! ```
//!
//! * `createdIndex` / `modifiedIndex` are etcd v3's create and mod revisions.
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

#[derive(Serialize)]
struct JsonNode<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(rename = "keyBase64", skip_serializing_if = "Option::is_none")]
    key_b64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dir: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a str>,
    #[serde(rename = "valueBase64", skip_serializing_if = "Option::is_none")]
    value_b64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nodes: Option<Vec<JsonNode<'a>>>,
    #[serde(rename = "createdIndex", skip_serializing_if = "Option::is_none")]
    created: Option<i64>,
    #[serde(rename = "modifiedIndex", skip_serializing_if = "Option::is_none")]
    modified: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<u64>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    action: &'a str,
    revision: i64,
    node: JsonNode<'a>,
    #[serde(rename = "prevNode", skip_serializing_if = "Option::is_none")]
    prev: Option<JsonNode<'a>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    resync: bool,
}

fn key_fields(key: &[u8]) -> (Option<&str>, Option<String>) {
    match std::str::from_utf8(key) {
        Ok(k) => (Some(k), None),
        Err(_) => (None, Some(B64.encode(key))),
    }
}

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
        created: (with_value || n.create_revision() > 0).then_some(n.create_revision()),
        modified: Some(n.mod_revision()),
        ttl,
    }
}

/// The `get` line for a snapshot. `ttl(node)` gives the seconds left on a
/// node's lease when `--ttl` was asked for.
pub fn get_line(snap: &Snapshot, ttl: &dyn Fn(&Node) -> Option<u64>) -> String {
    let nodes = snap.nodes().iter().map(|n| node(n, true, ttl(n))).collect();
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
            created: None,
            modified: None,
            ttl: None,
        },
        prev: None,
        resync: snap.is_resync(),
    };
    to_line(&env)
}

/// The line for one event.
pub fn event_line(e: &Event) -> String {
    let is_delete = e.action() == discovery::Action::Delete;
    let env = Envelope {
        action: e.action().as_str(),
        revision: e.revision(),
        node: node(e.node(), !is_delete, None),
        prev: e.prev().map(|p| node(p, true, None)),
        resync: e.is_resync(),
    };
    to_line(&env)
}

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

    proptest::proptest! {
        /// Any bytes as a value round-trip through the envelope: text as
        /// `value`, anything else through `valueBase64`.
        #[test]
        fn values_round_trip(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let (v, b) = match std::str::from_utf8(&bytes) {
                Ok(s) => (Some(s), None),
                Err(_) => (None, Some(B64.encode(&bytes))),
            };
            let n = JsonNode { key: Some("/k"), key_b64: None, dir: None, value: v, value_b64: b, nodes: None, created: Some(1), modified: Some(1), ttl: None };
            let line = serde_json::to_string(&n).unwrap();
            let back: serde_json::Value = serde_json::from_str(&line).unwrap();
            let got = match (back.get("value"), back.get("valueBase64")) {
                (Some(serde_json::Value::String(s)), None) => s.as_bytes().to_vec(),
                (None, Some(serde_json::Value::String(s))) => B64.decode(s).unwrap(),
                other => panic!("{other:?}"),
            };
            proptest::prop_assert_eq!(got, bytes);
            proptest::prop_assert!(!line.contains('\n'));
        }

        /// Any bytes as a key round-trip too (`key` or `keyBase64`).
        #[test]
        fn keys_round_trip(bytes in proptest::collection::vec(proptest::num::u8::ANY, 1..48)) {
            let (key, key_b64) = key_fields(&bytes);
            let n = JsonNode { key, key_b64, dir: None, value: Some(""), value_b64: None, nodes: None, created: None, modified: Some(1), ttl: None };
            let back: serde_json::Value = serde_json::from_str(&serde_json::to_string(&n).unwrap()).unwrap();
            let got = match (back.get("key"), back.get("keyBase64")) {
                (Some(serde_json::Value::String(s)), None) => s.as_bytes().to_vec(),
                (None, Some(serde_json::Value::String(s))) => B64.decode(s).unwrap(),
                other => panic!("{other:?}"),
            };
            proptest::prop_assert_eq!(got, bytes);
        }
    }
}
