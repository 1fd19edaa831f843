//! The one consistent listing of a prefix: the snapshot a watch starts
//! from, a resync's fresh state, and [`Client::get_prefix`](crate::Client::get_prefix).
//! Below the engine, which lists through it.

use etcd_client::GetOptions;

use crate::error::{Class, Error, Result, classify};
use crate::key::Prefix;
use crate::node::Node;
use crate::rpc::Rpc;

/// A consistent listing of `range` at `revision` (0: now). Returns the
/// listing's revision and the nodes in key order.
pub(crate) async fn list(
    rpc: &Rpc,
    prefix: &Prefix,
    range: &(Vec<u8>, Vec<u8>),
    revision: i64,
) -> Result<(i64, Vec<Node>)> {
    let mut opts = GetOptions::new().with_range(range.1.clone());
    if revision > 0 {
        opts = opts.with_revision(revision);
    }
    let resp = rpc
        .call("get", |c| {
            let (mut kv, start, opts) = (c.kv(), range.0.clone(), opts.clone());
            async move { kv.get(start, Some(opts)).await }
        })
        .await
        .map_err(|e| get_error(prefix, revision, e))?;
    let head = resp.header().map(|h| h.revision()).unwrap_or_default();
    let nodes = resp
        .kvs()
        .iter()
        .filter(|kv| prefix.covers(kv.key()))
        .map(Node::from_kv)
        .collect();
    Ok((if revision > 0 { revision } else { head }, nodes))
}

fn get_error(prefix: &Prefix, revision: i64, e: etcd_client::Error) -> Error {
    let msg = crate::error::status_message(&e);
    match classify(&e) {
        Class::Compacted => Error::Compacted {
            requested: revision,
            compacted: None,
        },
        Class::Fatal if msg.contains("future revision") => Error::InvalidOption(format!(
            "revision {revision} is in the future; etcd has not reached it yet"
        )),
        _ => Error::from_etcd("get", prefix.as_str(), e),
    }
}
