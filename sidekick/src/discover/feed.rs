//! What an `--exec` child gets: the environment and snapshot built from
//! watches (`watch --exec`) or from the config watch (`config --exec`).

use std::ffi::OsString;
use std::sync::Arc;

use anyhow::Context;
use discovery::{
    Action, Applied, Client, ConfigOptions, Node, Prefix, PrefixState, WatchMessage, WatchOptions,
};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::naming;
use super::parse::RestartOn;
use super::supervise::{ChildInput, Feed};
use crate::common::metrics::Metrics;

/// One prefix a `watch --exec` child is fed.
struct Watched {
    /// The watched prefix.
    prefix: Prefix,
    /// The variable its values go in (`SERVICES_COUCHBASE`, or `--env-name`'s).
    env: String,
    /// Its keys now: the library's fold of the snapshot and every event.
    state: PrefixState,
}

/// What `watch --exec`'s child is given now: one variable per prefix,
/// `DISCOVER_REVISION`, and the JSON snapshot of every prefix's nodes.
fn input(watched: &[Watched]) -> ChildInput {
    let mut env = Vec::new();
    let mut prefixes = serde_json::Map::new();
    let revision = watched
        .iter()
        .map(|w| w.state.revision())
        .max()
        .unwrap_or(0);
    for w in watched {
        env.push((
            w.env.clone(),
            naming::env_value(w.state.nodes().map(Node::value)),
        ));
        let nodes: Vec<Value> = w
            .state
            .nodes()
            .map(|n| {
                let mut o = json!({"key": String::from_utf8_lossy(n.key()), "createdIndex": n.create_revision(), "modifiedIndex": n.mod_revision()});
                match n.value_str() {
                    Some(v) => o["value"] = json!(v),
                    None => {
                        use base64::Engine as _;
                        o["valueBase64"] = json!(base64::engine::general_purpose::STANDARD.encode(n.value()));
                    }
                }
                o
            })
            .collect();
        let values: Vec<String> = w
            .state
            .nodes()
            .map(|n| String::from_utf8_lossy(n.value()).into_owned())
            .collect();
        prefixes.insert(
            w.prefix.to_string(),
            json!({"env": w.env, "values": values, "nodes": nodes}),
        );
    }
    env.push((
        "DISCOVER_REVISION".into(),
        OsString::from(revision.to_string()),
    ));
    ChildInput {
        env,
        snapshot: json!({"revision": revision, "prefixes": prefixes}),
    }
}

/// Watch every prefix; the first input is the snapshots, then an update per
/// change, with a trigger on set (and on delete unless `--restart-on set`).
pub async fn watch_feed(
    client: &Client,
    named: &[(Prefix, String)],
    since: Option<i64>,
    restart_on: RestartOn,
    metrics: Arc<Metrics>,
) -> anyhow::Result<(ChildInput, mpsc::Receiver<Feed>)> {
    let mut opts = WatchOptions::new();
    if let Some(r) = since {
        opts = opts.with_start_revision(r);
    }
    let (handles, mut merged) =
        client.watch_prefixes(named.iter().map(|(p, _)| p.as_str()), opts)?;
    for h in &handles {
        metrics.follow_watch(h.status());
    }
    let snapshots = merged
        .snapshots()
        .await
        .map_err(|(i, e)| anyhow::Error::new(e).context(format!("cannot watch {}", named[i].0)))?;
    let mut watched = Vec::new();
    for ((p, env), snap) in named.iter().zip(snapshots) {
        let mut state = PrefixState::new();
        state.apply(&WatchMessage::Snapshot(snap));
        watched.push(Watched {
            prefix: p.clone(),
            env: env.clone(),
            state,
        });
    }
    let first = input(&watched);
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let _handles = handles;
        while let Some((i, msg)) = merged.next().await {
            let msg = match msg {
                Ok(m) => m,
                Err(e) => {
                    let _ = tx
                        .send(Feed::Failed(
                            anyhow::Error::new(e).context("the watch failed"),
                        ))
                        .await;
                    return;
                }
            };
            let WatchMessage::Event(e) = &msg else {
                continue;
            };
            metrics.event(e.action());
            if e.is_resync() {
                metrics.watch_resyncs.inc();
            }
            let trigger = match watched[i].state.apply(&msg) {
                Applied::Changed(Action::Delete) => restart_on.on_delete(),
                Applied::Changed(_) => true,
                // A heartbeat re-put: nothing a child needs to know.
                _ => continue,
            };
            let reason = format!("{} {}", e.action(), String::from_utf8_lossy(e.key()));
            let update = Feed::Update {
                input: input(&watched),
                trigger: trigger.then_some(reason),
            };
            if tx.send(update).await.is_err() {
                return;
            }
        }
    });
    Ok((first, rx))
}

/// Flatten a config document into variables: nested keys joined with `_`,
/// strings as they are, other values as JSON.
fn flatten(
    v: &Value,
    path: &mut Vec<String>,
    out: &mut Vec<(String, OsString)>,
) -> anyhow::Result<()> {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                path.push(k.clone());
                flatten(v, path, out)?;
                path.pop();
            }
            Ok(())
        }
        _ if path.is_empty() => {
            anyhow::bail!("the config is not an object, so it cannot become environment variables")
        }
        Value::String(s) => {
            let parts: Vec<&str> = path.iter().map(String::as_str).collect();
            out.push((naming::config_env_name(&parts), OsString::from(s)));
            Ok(())
        }
        other => {
            let parts: Vec<&str> = path.iter().map(String::as_str).collect();
            out.push((
                naming::config_env_name(&parts),
                OsString::from(other.to_string()),
            ));
            Ok(())
        }
    }
}

/// What `config --exec`'s child is given: the config flattened into
/// variables (refused if two keys give one name or a name is reserved) and
/// the document as the snapshot.
fn config_input(doc: &Value) -> anyhow::Result<ChildInput> {
    let mut env: Vec<(String, OsString)> = Vec::new();
    flatten(doc, &mut Vec::new(), &mut env)?;
    let mut seen = std::collections::BTreeSet::new();
    for (name, _) in &env {
        naming::check_not_reserved(name)
            .map_err(|e| anyhow::anyhow!("the config cannot become the environment: {e}"))?;
        if !seen.insert(name.as_str()) {
            anyhow::bail!(
                "the config cannot become the environment: two keys both become {name} (such as a-b and a/b); rename one"
            );
        }
    }
    Ok(ChildInput {
        env,
        snapshot: doc.clone(),
    })
}

/// Follow the config under `prefix` (raw strings, as envconsul does); each
/// valid change triggers a restart or reload.
pub async fn config_feed(
    client: &Client,
    prefix: &Prefix,
    metrics: Arc<Metrics>,
) -> anyhow::Result<(ChildInput, mpsc::Receiver<Feed>)> {
    let mut cfg = client
        .config_with::<Value, _>(
            prefix.as_str(),
            ConfigOptions::new().with_raw_values(true),
            |_| Ok(()),
        )
        .await
        .with_context(|| format!("cannot read the config under {prefix}"))?;
    metrics.follow_watch(cfg.status());
    let mut values = cfg.values();
    let first = config_input(&values.borrow_and_update())?;
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                r = values.changed() => {
                    if r.is_err() {
                        let _ = tx.send(Feed::Failed(anyhow::anyhow!("the config watch stopped"))).await;
                        return;
                    }
                    let doc = values.borrow_and_update().clone();
                    match config_input(&doc) {
                        Ok(input) => {
                            if tx.send(Feed::Update { input, trigger: Some("config changed".into()) }).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "config update not applied"),
                    }
                }
                Some(e) = cfg.next_error() => tracing::warn!(error = %e, "config update rejected; the child keeps the last good config"),
            }
        }
    });
    Ok((first, rx))
}
