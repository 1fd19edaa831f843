//! Revision audits: compare what a watcher delivered with etcd's own history.

use std::collections::HashMap;
use std::time::Duration;

use crate::etcd::EtcdCluster;

/// One event of etcd's history: (revision, key, put?, value).
pub type HistEvent = (i64, String, bool, Vec<u8>);

/// etcd's history under `prefix` for revisions `from..=to`, read with a
/// bare watch once the cluster is stable: the ground truth.
pub async fn history(etcd: &EtcdCluster, prefix: &str, from: i64, to: i64) -> Vec<HistEvent> {
    let mut c = etcd.raw_client_live().await;
    let opts = etcd_client::WatchOptions::new()
        .with_prefix()
        .with_start_revision(from);
    let mut s = c.watch(prefix, Some(opts)).await.expect("history watch");
    let mut out = Vec::new();
    loop {
        let resp = tokio::time::timeout(Duration::from_secs(10), s.message())
            .await
            .expect("history within 10s")
            .expect("history stream")
            .expect("history message");
        for ev in resp.events() {
            let kv = ev.kv().expect("kv");
            if kv.mod_revision() > to {
                return out;
            }
            out.push((
                kv.mod_revision(),
                String::from_utf8_lossy(kv.key()).into_owned(),
                ev.event_type() == etcd_client::EventType::Put,
                kv.value().to_vec(),
            ));
        }
        if out.last().map(|e| e.0) == Some(to) {
            return out;
        }
    }
}

/// What a consumer should have been told for each history event, given
/// the state before `from`: "set", "update" or "delete".
pub fn expected_actions(
    initial: &HashMap<String, Vec<u8>>,
    hist: &[HistEvent],
) -> Vec<&'static str> {
    let mut state = initial.clone();
    hist.iter()
        .map(|(_, k, put, v)| {
            if *put {
                match state.insert(k.clone(), v.clone()) {
                    Some(prev) if prev == *v => "update",
                    _ => "set",
                }
            } else {
                state.remove(k);
                "delete"
            }
        })
        .collect()
}

/// Gaps and duplicates between the revisions delivered and the revisions
/// in history: `(missing, duplicated)`.
pub fn gaps_and_duplicates(delivered: &[i64], hist: &[HistEvent]) -> (Vec<i64>, Vec<i64>) {
    let mut seen = HashMap::new();
    for r in delivered {
        *seen.entry(*r).or_insert(0) += 1;
    }
    let mut missing: Vec<i64> = hist
        .iter()
        .map(|e| e.0)
        .filter(|r| !seen.contains_key(r))
        .collect();
    missing.dedup();
    let mut dups: Vec<i64> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(r, _)| *r)
        .collect();
    dups.sort();
    (missing, dups)
}
