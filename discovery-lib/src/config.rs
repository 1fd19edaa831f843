//! Typed configuration from etcd, kept current.
//!
//! Two layouts are understood under a prefix such as `/config/web`:
//!
//! * one key per field: `/config/web/port = 3000`,
//!   `/config/web/db/host = db1` becomes `{"port": 3000, "db": {"host": "db1"}}`.
//!   A value that is valid JSON is taken as JSON, anything else as a string.
//! * one key holding a whole JSON document: `/config/web = {"port": 3000}`.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::key::Prefix;
use crate::node::WatchMessage;
use crate::rpc::Rpc;
use crate::state::{Applied, PrefixState};
use crate::watch::{Scope, WatchHandle, WatchOptions};

/// Options for [`Client::config_with`](crate::Client::config_with).
#[derive(Clone, Debug, Default)]
pub struct ConfigOptions {
    /// Take every value as text, never as JSON ([`ConfigOptions::with_raw_values`]).
    raw_values: bool,
}

impl ConfigOptions {
    /// Values that are valid JSON are parsed as JSON.
    pub const fn new() -> Self {
        Self { raw_values: false }
    }

    /// Take every per-field value as a string, never as JSON: `3000` stays
    /// `"3000"`. For consumers that want the raw text, such as environment
    /// variables.
    pub const fn with_raw_values(mut self, raw: bool) -> Self {
        self.raw_values = raw;
        self
    }
}

/// A live, typed configuration.
///
/// The watch behind it runs while this value or any receiver taken from
/// [`ConfigWatch::values`] or [`ConfigWatch::into_parts`] is alive, and
/// stops once all are dropped (or on [`ConfigWatch::cancel`]).
#[derive(Debug)]
pub struct ConfigWatch<T> {
    /// The latest configuration that deserialized and validated.
    values: watch::Receiver<Arc<T>>,
    /// Why an update was rejected (the last good value stays in `values`).
    errors: mpsc::Receiver<Error>,
    /// The watch behind the values, for [`ConfigWatch::cancel`] and its status.
    handle: WatchHandle,
}

impl<T> ConfigWatch<T> {
    /// A receiver of the current configuration: `borrow()` is the value
    /// now, `changed()` waits for the next one. It only ever holds values
    /// that deserialized and validated; a bad update leaves it unchanged.
    pub fn values(&self) -> watch::Receiver<Arc<T>> {
        let mut rx = self.values.clone();
        rx.mark_unchanged();
        rx
    }

    /// The configuration now.
    pub fn current(&self) -> Arc<T> {
        self.values.borrow().clone()
    }

    /// Wait for the next rejected update: why it did not apply. The last
    /// good value stays in place.
    pub async fn next_error(&mut self) -> Option<Error> {
        self.errors.recv().await
    }

    /// The receiver of good values and the channel of rejected updates,
    /// apart. The watch runs while the values receiver (or a clone) lives.
    pub fn into_parts(self) -> (watch::Receiver<Arc<T>>, mpsc::Receiver<Error>) {
        (self.values, self.errors)
    }

    /// The state of the watch behind it (live, reconnecting since when).
    pub fn status(&self) -> watch::Receiver<crate::watch::WatchStatus> {
        self.handle.status()
    }

    /// Stop the watch now, whoever still holds a receiver.
    pub fn cancel(&self) {
        self.handle.cancel();
    }
}

/// [`Client::config_with`](crate::Client::config_with).
pub(crate) async fn follow<T, V>(
    rpc: &Rpc,
    prefix: &str,
    options: ConfigOptions,
    validate: V,
) -> Result<ConfigWatch<T>>
where
    T: DeserializeOwned + Send + Sync + 'static,
    V: Fn(&T) -> std::result::Result<(), String> + Send + 'static,
{
    let mut wopts = WatchOptions::new().with_progress_marks(true);
    wopts.scope = Scope::SelfAndDir;
    let (handle, mut stream) = crate::watch::start(rpc, prefix, wopts)?;
    let prefix = handle.prefix().clone();
    let mut state = PrefixState::new();
    state.apply(&WatchMessage::Snapshot(stream.snapshot().await?));
    state.take_changed();
    let raw = options.raw_values;
    let (first, mut last_doc) = decode::<T, V>(&prefix, &state, raw, &validate)?;
    let (tx, rx) = watch::channel(Arc::new(first));
    let (err_tx, err_rx) = mpsc::channel(16);
    let task_prefix = prefix.clone();
    tokio::spawn(async move {
        let prefix = task_prefix;
        loop {
            let msg = tokio::select! {
                // Nobody is left to read the configuration.
                _ = tx.closed() => break,
                m = stream.recv() => match m {
                    Some(m) => m,
                    None => break,
                },
            };
            let msg = match msg {
                Ok(m) => m,
                Err(e) => {
                    warn!(prefix = %prefix, error = %e, "config watch failed");
                    let _ = err_tx.try_send(e);
                    break;
                }
            };
            // All keys of one transaction apply together, at the
            // progress mark that ends it.
            let Applied::Progress(revision) = state.apply(&msg) else {
                continue;
            };
            if !state.take_changed() {
                continue;
            }
            match decode::<T, V>(&prefix, &state, raw, &validate) {
                Ok((value, doc)) => {
                    if doc != last_doc {
                        info!(prefix = %prefix, revision, "config updated");
                        last_doc = doc;
                        tx.send_replace(Arc::new(value));
                    }
                }
                Err(e) => {
                    warn!(prefix = %prefix, revision, error = %e, "config update rejected; keeping the last good value");
                    let _ = err_tx.try_send(e);
                }
            }
        }
    });
    Ok(ConfigWatch {
        values: rx,
        errors: err_rx,
        handle,
    })
}

fn decode<T, V>(
    prefix: &Prefix,
    entries: &PrefixState,
    raw: bool,
    validate: &V,
) -> Result<(T, Value)>
where
    T: DeserializeOwned,
    V: Fn(&T) -> std::result::Result<(), String>,
{
    let bad = |reason: String| Error::Config {
        prefix: prefix.to_string(),
        reason,
    };
    let doc = build_document(prefix, entries, raw).map_err(bad)?;
    let value =
        T::deserialize(&doc).map_err(|e| bad(format!("it does not fit the expected type: {e}")))?;
    validate(&value).map_err(|e| bad(format!("validation failed: {e}")))?;
    Ok((value, doc))
}

/// Assemble the JSON document that the keys under `prefix` describe.
pub(crate) fn build_document(
    prefix: &Prefix,
    entries: &PrefixState,
    raw: bool,
) -> std::result::Result<Value, String> {
    let text = |k: &[u8], v: &[u8]| -> std::result::Result<String, String> {
        String::from_utf8(v.to_vec())
            .map_err(|_| format!("the value of {} is not UTF-8", String::from_utf8_lossy(k)))
    };
    if let Some(doc) = entries.get(prefix.as_str().as_bytes()) {
        let doc = doc.value();
        if entries.len() > 1 {
            return Err(format!(
                "{prefix} holds a document and there are keys under {}; use one form or the other",
                prefix.dir()
            ));
        }
        let doc = text(prefix.as_str().as_bytes(), doc)?;
        return serde_json::from_str(&doc)
            .map_err(|e| format!("the document at {prefix} is not valid JSON: {e}"));
    }
    let dir = prefix.dir();
    let mut root = Map::new();
    for n in entries.nodes() {
        let (k, v) = (n.key(), n.value());
        let key = String::from_utf8_lossy(k);
        let Some(rel) = key.strip_prefix(dir.as_str()) else {
            continue;
        };
        let parts: Vec<&str> = rel.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(format!("the key {key} has an empty path segment"));
        }
        let s = text(k, v)?;
        let value = if raw {
            Value::String(s)
        } else {
            serde_json::from_str(&s).unwrap_or(Value::String(s))
        };
        let (leaf, parents) = parts
            .split_last()
            .ok_or_else(|| format!("the key {key} is empty"))?;
        let mut node = &mut root;
        for (i, p) in parents.iter().enumerate() {
            let slot = node
                .entry((*p).to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            node = match slot {
                Value::Object(m) => m,
                _ => {
                    return Err(format!(
                        "{dir}{} is a value, so {key} cannot nest under it",
                        parts[..=i].join("/")
                    ));
                }
            };
        }
        if let Some(Value::Object(_)) = node.get(*leaf) {
            return Err(format!("{key} is a value, but other keys nest under it"));
        }
        node.insert((*leaf).to_owned(), value);
    }
    Ok(Value::Object(root))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Node, Snapshot};

    fn entries(kv: &[(&[u8], &[u8])]) -> PrefixState {
        let nodes = kv
            .iter()
            .map(|(k, v)| Node::new(*k, *v, 1, 1, None))
            .collect();
        let snap = Snapshot::new(Prefix::new("/config").unwrap(), 1, nodes, false);
        let mut state = PrefixState::new();
        state.apply(&WatchMessage::Snapshot(snap));
        state
    }

    fn text(kv: &[(&'static str, &'static str)]) -> PrefixState {
        let kv: Vec<(&[u8], &[u8])> = kv
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
            .collect();
        entries(&kv)
    }

    #[test]
    fn per_field_keys_nest_and_parse() {
        let p = Prefix::new("/config/web").unwrap();
        let doc = build_document(
            &p,
            &text(&[
                ("/config/web/port", "3000"),
                ("/config/web/name", "front"),
                ("/config/web/db/host", "db1"),
                ("/config/web/db/tls", "true"),
            ]),
            false,
        )
        .unwrap();
        assert_eq!(
            doc,
            serde_json::json!({"port": 3000, "name": "front", "db": {"host": "db1", "tls": true}})
        );
        let raw = build_document(&p, &text(&[("/config/web/port", "3000")]), true).unwrap();
        assert_eq!(raw, serde_json::json!({"port": "3000"}));
    }

    #[test]
    fn document_form_and_conflicts() {
        let p = Prefix::new("/config/web").unwrap();
        let doc = build_document(&p, &text(&[("/config/web", r#"{"port":1}"#)]), false).unwrap();
        assert_eq!(doc, serde_json::json!({"port": 1}));
        for (kv, why) in [
            (
                vec![("/config/web", "{"), ("/config/web/x", "1")],
                "one form",
            ),
            (vec![("/config/web", "{")], "not valid JSON"),
            (
                vec![("/config/web/db", "1"), ("/config/web/db/host", "h")],
                "cannot nest",
            ),
        ] {
            let e = build_document(&p, &text(&kv), false).unwrap_err();
            assert!(e.contains(why), "{kv:?}: {e}");
        }
        let bin = entries(&[(b"/config/web/k", &[0xff, 0xfe])]);
        assert!(
            build_document(&p, &bin, false)
                .unwrap_err()
                .contains("not UTF-8")
        );
    }
}
