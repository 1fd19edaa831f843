//! discover's lines against etcd's OWN v2 API: for a `get` of a directory,
//! a `set` of a new key, a `set` of a changed value and a `delete`, every
//! field path etcd's v2 answer has (from a real `etcd --enable-v2`, over
//! HTTP with curl) is in discover's line for the same operation, with the
//! same JSON type. Index values may differ (the v2 and v3 stores are
//! separate); no list of fields is written here by hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use harness::proc::{Proc, discover};
use harness::{Etcd, EtcdConfig, unique_prefix};
use serde_json::Value;

/// Every field path in `v` with its JSON type: `node.nodes[].key` -> string.
/// Array elements share one path (`[]`), so every element must agree.
fn field_paths(v: &Value, at: &str, out: &mut BTreeMap<String, &'static str>) {
    let ty = match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    if !at.is_empty() {
        if let Some(old) = out.insert(at.to_owned(), ty) {
            assert_eq!(old, ty, "{at} has two types in one answer: {v}");
        }
    }
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let p = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                field_paths(child, &p, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                field_paths(item, &format!("{at}[]"), out);
            }
        }
        _ => {}
    }
}

fn paths_of(v: &Value) -> BTreeMap<String, &'static str> {
    let mut out = BTreeMap::new();
    field_paths(v, "", &mut out);
    out
}

/// One request to etcd's v2 keys API, through curl; its JSON answer.
fn v2(endpoint: &str, method: &str, key: &str, query: &str, form: Option<&str>) -> Value {
    let url = format!("{endpoint}/v2/keys{key}{query}");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "-X", method, &url]);
    if let Some(f) = form {
        cmd.args(["--data-urlencode", f]);
    }
    let out = cmd
        .output()
        .expect("run curl (make deps installs it with the rest)");
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl -X {method} {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{method} {url}: not JSON ({e}): {body}"))
}

/// Compare one operation: etcd's v2 answer against discover's line.
fn compare(op: &str, reference: &Value, ours: &Value, failures: &mut Vec<String>) {
    let want = paths_of(reference);
    let got = paths_of(ours);
    // A sanity floor so the comparison cannot pass on an empty answer.
    assert!(
        want.contains_key("action") && want.contains_key("node.key"),
        "{op}: etcd's v2 answer is not a node answer: {reference}"
    );
    assert_eq!(
        reference["action"], ours["action"],
        "{op}: the same action\n etcd v2: {reference}\n discover: {ours}"
    );
    for (path, ty) in &want {
        match got.get(path) {
            Some(t) if t == ty => {}
            Some(t) => failures.push(format!(
                "{op}: {path} is {t} in discover's line, {ty} in etcd's\n  etcd v2:  {reference}\n  discover: {ours}"
            )),
            None => failures.push(format!(
                "{op}: {path} ({ty}) is missing from discover's line\n  etcd v2:  {reference}\n  discover: {ours}"
            )),
        }
    }
    eprintln!(
        "{op}: {} field paths of etcd's v2 answer all in discover's line",
        want.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_field_path_of_etcds_own_v2_answers_is_in_discovers_lines() {
    let etcd = Etcd::start(EtcdConfig::new(1).with_v2()).await;
    let ep = etcd.endpoint(0);
    // The same keys in both stores (they are separate in etcd).
    let dir = unique_prefix("v2-parity");
    let key = format!("{dir}/1");
    let mut raw = etcd.raw_client().await;
    let mut failures = Vec::new();

    let w = Proc::spawn(discover(&etcd, &["watch", &dir]));
    w.wait_stdout(Duration::from_secs(15), "discover's first get line", |l| {
        l.contains("\"get\"")
    })
    .await;

    // set, new key.
    let reference = v2(&ep, "PUT", &key, "", Some("value=10.1.1.2"));
    raw.put(key.as_str(), "10.1.1.2", None).await.unwrap();
    let line = w
        .wait_stdout(Duration::from_secs(15), "discover's set line", |l| {
            l.contains("\"set\"") && l.contains("10.1.1.2")
        })
        .await;
    compare("set (new key)", &reference, &json(&line), &mut failures);

    // set, changed value.
    let reference = v2(&ep, "PUT", &key, "", Some("value=10.1.53.5"));
    raw.put(key.as_str(), "10.1.53.5", None).await.unwrap();
    let line = w
        .wait_stdout(Duration::from_secs(15), "discover's second set line", |l| {
            l.contains("\"set\"") && l.contains("10.1.53.5")
        })
        .await;
    assert!(
        reference.get("prevNode").is_some(),
        "etcd's v2 set of a changed value has a prevNode: {reference}"
    );
    compare(
        "set (changed value)",
        &reference,
        &json(&line),
        &mut failures,
    );

    // get of the directory, once as etcd's v2 answers a plain get and once
    // recursive (the same shape for a flat directory; both are checked).
    let (code, out, err) = {
        let o = discover(&etcd, &["get", &dir]).output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    assert_eq!(code, Some(0), "discover get {dir}: {err}");
    let ours = json(out.trim());
    for query in ["", "?recursive=true"] {
        let reference = v2(&ep, "GET", &dir, query, None);
        assert!(
            reference["node"]["nodes"]
                .as_array()
                .is_some_and(|n| n.len() == 1),
            "etcd's v2 get of the directory lists its node: {reference}"
        );
        compare(
            &format!("get{query} (directory)"),
            &reference,
            &ours,
            &mut failures,
        );
    }

    // delete.
    let reference = v2(&ep, "DELETE", &key, "", None);
    raw.delete(key.as_str(), None).await.unwrap();
    let line = w
        .wait_stdout(Duration::from_secs(15), "discover's delete line", |l| {
            l.contains("\"delete\"")
        })
        .await;
    compare("delete", &reference, &json(&line), &mut failures);

    assert!(
        failures.is_empty(),
        "discover's lines lack what etcd's v2 API gives:\n{}\n{}",
        failures.join("\n"),
        w.dump()
    );
}

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("discover printed non-JSON ({e}): {line}"))
}
