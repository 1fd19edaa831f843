//! Debian's Prometheus (2.42) discovers its targets from `discover serve`
//! with `http_sd_configs`: `/api/v1/targets` lists the registered
//! instances with our `__meta_discovery_*` labels, and drops a deleted one
//! after its next refresh. The targets are loopback addresses (one of them
//! discover serve's own `/metrics`), so Prometheus scrapes nothing else.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod serve_support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use harness::{Etcd, Port, Proc, eventually_async, unique_prefix};
use serve_support::{Serve, http_get, put};

/// Prometheus with `config`, ready, on a port the harness reserved (kept
/// as long as Prometheus runs).
async fn prometheus(dir: &std::path::Path, config: &str) -> (Proc, Port) {
    let file = dir.join("prometheus.yml");
    std::fs::write(&file, config).unwrap();
    let reserved = Port::reserve();
    let mut cmd = Command::new("prometheus");
    cmd.arg(format!("--config.file={}", file.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={}", reserved.addr()))
        .arg("--log.level=info");
    let p = Proc::spawn(cmd);
    p.wait_stderr(Duration::from_secs(60), "prometheus to start", |l| {
        l.contains("Server is ready to receive web requests")
    })
    .await;
    (p, reserved)
}

/// The active targets of job `job`: address and discovered labels.
async fn targets(port: u16, job: &str) -> Option<Vec<(String, serde_json::Value)>> {
    let (code, body) = http_get(port, "/api/v1/targets?state=active").await?;
    if code != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    Some(
        v["data"]["activeTargets"]
            .as_array()?
            .iter()
            .filter(|t| t["scrapePool"] == job)
            .map(|t| {
                (
                    t["labels"]["instance"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    t["discoveredLabels"].clone(),
                )
            })
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_finds_the_instances_and_drops_a_deleted_one() {
    let etcd = Etcd::single().await;
    let p = unique_prefix("serve-prom");
    let s = Serve::start(&etcd, &[&p], true).await;
    let http = s.http.unwrap();
    // discover serve's own /metrics is a real target; the other refuses.
    let up = format!("127.0.0.1:{http}");
    let down = "127.0.0.1:9".to_owned();
    put(&etcd, &format!("{p}/discover/self"), &up).await;
    put(&etcd, &format!("{p}/discover/gone"), &down).await;
    put(&etcd, &format!("{p}/other/x"), "127.0.0.1:10").await;
    // What Prometheus will read.
    let (code, body) = http_get(http, "/prometheus/discover").await.unwrap();
    assert_eq!(code, 200, "{body}");
    let groups: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(groups.as_array().unwrap().len(), 2, "{body}");

    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "global:\n  scrape_interval: 2s\nscrape_configs:\n  - job_name: discovered\n    http_sd_configs:\n      - url: http://127.0.0.1:{http}/prometheus/discover\n        refresh_interval: 1s\n"
    );
    let (prom, reserved) = prometheus(dir.path(), &config).await;
    let port = reserved.number();
    let want: BTreeSet<String> = [up.clone(), down.clone()].into();
    let found = eventually_async(
        Duration::from_secs(60),
        "both instances as targets",
        || async {
            let t = targets(port, "discovered").await?;
            let have: BTreeSet<String> = t.iter().map(|(a, _)| a.clone()).collect();
            (have == want).then_some(t)
        },
    )
    .await;
    let (_, labels) = found.iter().find(|(a, _)| *a == up).unwrap();
    assert_eq!(labels["__meta_discovery_service"], "discover", "{labels}");
    assert_eq!(labels["__meta_discovery_instance"], "self", "{labels}");
    assert_eq!(
        labels["__meta_discovery_key"],
        format!("{p}/discover/self"),
        "{labels}"
    );
    assert_eq!(
        labels["__meta_discovery_name"], "self.discover.discovery.internal",
        "{labels}"
    );
    // The one that answers is scraped: Prometheus reads our /metrics.
    eventually_async(Duration::from_secs(60), "the target up", || async {
        let (code, body) = http_get(port, "/api/v1/targets?state=active").await?;
        (code == 200 && body.contains("\"health\":\"up\"")).then_some(())
    })
    .await;

    etcd.client()
        .await
        .delete(&format!("{p}/discover/gone"))
        .await
        .unwrap();
    eventually_async(
        Duration::from_secs(60),
        "the deleted instance dropped",
        || async {
            let t = targets(port, "discovered").await?;
            (t.len() == 1 && t[0].0 == up).then_some(())
        },
    )
    .await;
    drop(prom);
}
