//! discovery::Client::config against a real etcd.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use harness::{Etcd, unique_prefix};
use serde::Deserialize;
use tokio::time::timeout;

#[derive(Debug, Deserialize, PartialEq, Clone)]
struct Db {
    host: String,
    #[serde(default)]
    tls: bool,
}

#[derive(Debug, Deserialize, PartialEq, Clone)]
struct Web {
    port: u16,
    greeting: String,
    db: Db,
}

#[tokio::test(flavor = "multi_thread")]
async fn per_field_keys_update_reject_and_apply_transactions_whole() {
    let etcd = Etcd::single().await;
    let client = etcd.client().await;
    let p = unique_prefix("cfg");
    client.put(&format!("{p}/port"), "3000").await.unwrap();
    client.put(&format!("{p}/greeting"), "hello").await.unwrap();
    client.put(&format!("{p}/db/host"), "db1").await.unwrap();
    client.put(&format!("{p}/db/tls"), "true").await.unwrap();
    // A sibling that only shares the leading bytes is not part of it.
    client.put(&format!("{p}-other/port"), "1").await.unwrap();

    let mut cfg = client
        .config_with::<Web, _>(&p, discovery::ConfigOptions::new(), |w: &Web| {
            if w.port == 0 {
                Err("port must not be 0".into())
            } else {
                Ok(())
            }
        })
        .await
        .unwrap();
    let mut values = cfg.values();
    assert_eq!(
        *values.borrow_and_update().clone(),
        Web {
            port: 3000,
            greeting: "hello".into(),
            db: Db {
                host: "db1".into(),
                tls: true
            }
        }
    );

    // A good update applies.
    client.put(&format!("{p}/port"), "4000").await.unwrap();
    timeout(Duration::from_secs(5), values.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(values.borrow_and_update().port, 4000);

    // A bad one (wrong type) keeps the last good value and is reported.
    client
        .put(&format!("{p}/port"), "\"not a number\"")
        .await
        .unwrap();
    let err = timeout(Duration::from_secs(5), cfg.next_error())
        .await
        .unwrap()
        .unwrap();
    assert!(err.to_string().contains("does not fit"), "{err}");
    assert_eq!(cfg.current().port, 4000);
    assert!(!values.has_changed().unwrap());

    // So does one that deserializes but fails validation.
    client.put(&format!("{p}/port"), "0").await.unwrap();
    let err = timeout(Duration::from_secs(5), cfg.next_error())
        .await
        .unwrap()
        .unwrap();
    assert!(err.to_string().contains("port must not be 0"), "{err}");
    assert_eq!(cfg.current().port, 4000);

    // Two keys changed in one transaction arrive as one new config, never half.
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut watcher = cfg.values();
    let seen2 = seen.clone();
    tokio::spawn(async move {
        while watcher.changed().await.is_ok() {
            seen2
                .lock()
                .unwrap()
                .push((*watcher.borrow_and_update()).clone());
        }
    });
    let mut raw = etcd.raw_client().await;
    raw.txn(etcd_client::Txn::new().and_then([
        etcd_client::TxnOp::put(format!("{p}/port"), "5000", None),
        etcd_client::TxnOp::put(format!("{p}/db/host"), "db2", None),
    ]))
    .await
    .unwrap();
    harness::eventually(Duration::from_secs(5), "the transaction applied", || {
        (cfg.current().db.host == "db2").then_some(())
    })
    .await;
    // A deliberate quiet period: "one change" asserts no second one.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "one change for one transaction: {seen:?}");
    assert_eq!((seen[0].port, seen[0].db.host.as_str()), (5000, "db2"));

    // Re-writing the same value is not a change.
    client.put(&format!("{p}/greeting"), "hello").await.unwrap();
    let mut v = cfg.values();
    v.borrow_and_update();
    assert!(
        timeout(Duration::from_millis(400), v.changed())
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_single_json_document_and_refused_starts() {
    let etcd = Etcd::single().await;
    let client = etcd.client().await;
    let p = unique_prefix("doc");
    client
        .put(
            &p,
            r#"{"port": 8080, "greeting": "hi", "db": {"host": "h"}}"#,
        )
        .await
        .unwrap();
    // The receiver alone keeps the watch going: the ConfigWatch is gone.
    let (mut values, _errors) = client.config::<Web>(&p).await.unwrap().into_parts();
    assert_eq!(values.borrow_and_update().port, 8080);
    client
        .put(
            &p,
            r#"{"port": 8081, "greeting": "hi", "db": {"host": "h"}}"#,
        )
        .await
        .unwrap();
    timeout(Duration::from_secs(5), values.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(values.borrow().port, 8081);

    // A config that is bad from the start is refused with the reason.
    let bad = unique_prefix("bad");
    client.put(&format!("{bad}/port"), "70000").await.unwrap();
    let err = client.config::<Web>(&bad).await.unwrap_err().to_string();
    assert!(err.contains(&bad) && err.contains("does not fit"), "{err}");
    let err = client
        .config::<Web>("relative/prefix")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("must start with '/'"), "{err}");
}
