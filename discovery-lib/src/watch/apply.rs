//! How the engine's state changes: one etcd response's events applied and
//! classified (set, update, delete), and a re-listing after compaction
//! turned into the exact difference.

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use etcd_client::EventType;
use tracing::{info, warn};

use super::engine::Engine;
use crate::error::Result;
use crate::node::{Action, Event, Node, WatchMessage};

impl Engine {
    /// Apply and forward one response's events. False if the consumer is gone.
    pub(super) async fn apply(&mut self, events: &[etcd_client::Event]) -> bool {
        // Everything at or below `floor` was delivered before: a resumed
        // stream never repeats it, even if etcd were to resend it.
        let floor = self.rev;
        let mut top = floor;
        let mut batch = Vec::with_capacity(events.len() + 1);
        for ev in events {
            let Some(kv) = ev.kv() else { continue };
            let revision = kv.mod_revision();
            if revision <= floor || !self.prefix_covers(kv.key()) {
                continue;
            }
            top = top.max(revision);
            // etcd's mvccpb.Event.EventType has exactly PUT (0) and DELETE (1);
            // `event_type` panics only on a value no etcd server sends.
            let event = match ev.event_type() {
                EventType::Put => {
                    let node = Node::from_kv(kv);
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
                EventType::Delete => {
                    let prev = self.state.remove(kv.key());
                    Event {
                        action: Action::Delete,
                        revision,
                        node: deleted(Bytes::copy_from_slice(kv.key()), revision),
                        prev,
                        resync: false,
                    }
                }
            };
            batch.push(WatchMessage::Event(event));
        }
        let advanced = top > floor;
        self.rev = top;
        if advanced && self.opts.progress_marks {
            batch.push(WatchMessage::Progress { revision: top });
        }
        self.send_batch(batch).await
    }

    pub(super) fn prefix_covers(&self, key: &[u8]) -> bool {
        self.opts.scope.covers(&self.prefix, key)
    }

    /// Re-list and emit the difference; `why` says why the watch cannot
    /// simply resume. False if stopped.
    pub(super) async fn resync(&mut self, why: &str) -> Result<bool> {
        warn!(
            prefix = %self.prefix,
            needed = self.rev + 1,
            "watch cannot resume: {why}; re-listing and sending the difference"
        );
        let Some((revision, nodes)) = self.list_retrying(0).await? else {
            return Ok(false);
        };
        let fresh: HashMap<Bytes, Node> = nodes.into_iter().map(|n| (n.key.clone(), n)).collect();
        let old = std::mem::take(&mut self.state);
        let keys: BTreeSet<&Bytes> = old.keys().chain(fresh.keys()).collect();
        let mut diff = Vec::new();
        for k in keys {
            let event = match (old.get(k), fresh.get(k)) {
                (Some(o), None) => Event {
                    action: Action::Delete,
                    revision,
                    node: deleted(k.clone(), revision),
                    prev: Some(o.clone()),
                    resync: true,
                },
                (None, Some(n)) => Event {
                    action: Action::Set,
                    revision,
                    node: n.clone(),
                    prev: None,
                    resync: true,
                },
                (Some(o), Some(n)) if o.value != n.value => Event {
                    action: Action::Set,
                    revision,
                    node: n.clone(),
                    prev: Some(o.clone()),
                    resync: true,
                },
                _ => continue,
            };
            diff.push(event);
        }
        self.state = fresh;
        self.rev = revision;
        info!(prefix = %self.prefix, revision, changes = diff.len(), "resynced");
        let mut batch: Vec<WatchMessage> = diff.into_iter().map(WatchMessage::Event).collect();
        if self.opts.progress_marks {
            batch.push(WatchMessage::Progress { revision });
        }
        Ok(self.send_batch(batch).await)
    }
}

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
