//! P7: `discover get` of a 10,000-key prefix against `etcdctl get`, and
//! 1,000 registrations kept alive by one process.

use serde::{Deserialize, Serialize};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use harness::Etcd;
use harness::proc::{Proc, bin_path};

use crate::procfs::{cpu, rss_kib};

#[derive(Debug, Serialize, Deserialize)]
pub struct Gets {
    pub keys: usize,
    pub ours: Vec<Duration>,
    pub etcdctl: Vec<Duration>,
    pub bytes_ours: usize,
    pub bytes_etcdctl: usize,
}

fn timed(mut c: Command) -> (Duration, usize) {
    c.stdout(Stdio::piped())
        .stderr(Stdio::null())
        .env_remove("ETCDCTL_ENDPOINTS");
    let t = Instant::now();
    let out = c.output().unwrap();
    assert!(out.status.success(), "{c:?}");
    (t.elapsed(), out.stdout.len())
}

pub async fn gets(etcd: &Etcd, keys: usize, rounds: usize) -> Gets {
    eprintln!("bench: P7 get of {keys} keys, {rounds} rounds");
    let client = etcd.client().await;
    let mut tasks = Vec::new();
    for w in 0..32 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < keys {
                client
                    .put(
                        &format!("/bench/get/k{i:05}"),
                        format!("10.1.{}.{}:11211", i / 250, i % 250 + 1),
                    )
                    .await
                    .unwrap();
                i += 32;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let ep = etcd.endpoint(0);
    let mut g = Gets {
        keys,
        ours: Vec::new(),
        etcdctl: Vec::new(),
        bytes_ours: 0,
        bytes_etcdctl: 0,
    };
    for _ in 0..rounds {
        let mut d = Command::new(bin_path("discover"));
        d.args(["get", "/bench/get", "--endpoints", &ep]);
        let (t, b) = timed(d);
        g.ours.push(t);
        g.bytes_ours = b;
        let mut e = Command::new("etcdctl");
        e.env("ETCDCTL_API", "3").args([
            "get",
            "--prefix",
            "/bench/get",
            "-w",
            "json",
            "--endpoints",
            &ep,
        ]);
        let (t, b) = timed(e);
        g.etcdctl.push(t);
        g.bytes_etcdctl = b;
    }
    g
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ManyRegistrations {
    pub count: usize,
    pub window: Duration,
    pub cpu: Duration,
    pub rss_mib: f64,
}

pub async fn many(etcd: &Etcd, count: usize, window: Duration) -> ManyRegistrations {
    eprintln!("bench: P7 {count} registrations over {window:?}");
    let mut c = Command::new(bin_path("registrations"));
    c.args([etcd.endpoint(0).as_str(), "/bench/regs", &count.to_string()]);
    let p = Proc::spawn(c);
    p.wait_stdout(Duration::from_secs(120), "all registered", |l| l == "ready")
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let c0 = cpu(p.pid(), false);
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    ManyRegistrations {
        count,
        window: t0.elapsed(),
        cpu: cpu(p.pid(), false).saturating_sub(c0),
        rss_mib: rss_kib(p.pid()) as f64 / 1024.0,
    }
}
