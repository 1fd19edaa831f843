//! `units/discover-serve.service` as `make install` installs it, under a
//! real systemd (the suite's SystemdHost): `Type=notify` with READY=1 only
//! once the first snapshot is in (so `systemctl start` returning means the
//! names resolve), a dynamic user without any capability, port 53 refused
//! with a clear message and no restart loop, then served with the one
//! capability a drop-in gives. Each test answers on an address of its own
//! in 127/8, since the host shares the machine's network.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod serve_support;

use std::time::Duration;

use harness::systemd::{HostConfig, SystemdHost};
use harness::{Etcd, unique_prefix};
use serve_support::{dig_at, put};

const UNIT: &str = "discover-serve.service";

/// A loopback address no other test uses.
fn loopback() -> String {
    format!(
        "127.{}.{}.{}",
        fastrand::u8(1..255),
        fastrand::u8(1..255),
        fastrand::u8(2..255)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn systemd_discover_serve_is_ready_once_it_can_answer() {
    let etcd = Etcd::single().await;
    let p = unique_prefix("serve-unit");
    put(&etcd, &format!("{p}/web/1"), "10.8.0.1:80").await;
    let host = SystemdHost::start(HostConfig::new(&etcd.endpoints_arg())).await;
    let ip = loopback();
    host.write_file(
        "/etc/default/discover-serve",
        &format!("DISCOVER_SERVE_DNS={ip}:5300\nDISCOVER_SERVE_ARGS={p}\n"),
    );
    // Returns at READY=1: the very first query after it has the data.
    host.systemctl(&["start", UNIT]);
    let d = dig_at(&ip, 5300, &["web.discovery.internal.", "A"]).await;
    assert_eq!(
        d.data("A"),
        ["10.8.0.1"],
        "{}\n{}",
        d.raw,
        host.journal(UNIT)
    );
    assert_eq!(host.show(UNIT, "Type"), "notify");
    let status = host.show(UNIT, "StatusText");
    assert!(
        status.starts_with(&format!("serving {p} in discovery.internal.")),
        "{status}"
    );
    // A dynamic user, with no capability at all.
    let pid = host.main_pid(UNIT).to_string();
    let user = host.run(&["ps", "-o", "user=", "-p", &pid]);
    assert_ne!(user.trim(), "root", "{user}");
    let caps = host.run(&["grep", "CapEff", &format!("/proc/{pid}/status")]);
    assert!(caps.contains("0000000000000000"), "{caps}");

    // Port 53 without the capability: exit 2, said in the journal, and no
    // restart loop (RestartPreventExitStatus=2).
    let ip53 = loopback();
    host.write_file(
        "/etc/default/discover-serve",
        &format!("DISCOVER_SERVE_DNS={ip53}:53\nDISCOVER_SERVE_ARGS={p}\n"),
    );
    let _ = host.exec(&["systemctl", "restart", UNIT]);
    host.wait_property(UNIT, "ActiveState", Duration::from_secs(30), |s| {
        s == "failed"
    })
    .await;
    host.wait_journal(
        UNIT,
        Duration::from_secs(10),
        "the capability hint",
        0,
        |l| l.contains("CAP_NET_BIND_SERVICE"),
    )
    .await;
    assert_eq!(host.show(UNIT, "ExecMainStatus"), "2");
    assert_eq!(host.show(UNIT, "NRestarts"), "0");

    // With the drop-in the unit's comment gives: served on 53.
    host.drop_in(
        UNIT,
        "port53",
        "[Service]\nAmbientCapabilities=CAP_NET_BIND_SERVICE\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE\n",
    );
    host.systemctl(&["reset-failed", UNIT]);
    host.systemctl(&["start", UNIT]);
    let d = dig_at(&ip53, 53, &["web.discovery.internal.", "A"]).await;
    assert_eq!(
        d.data("A"),
        ["10.8.0.1"],
        "{}\n{}",
        d.raw,
        host.journal(UNIT)
    );
    // Exposure, as systemd 252 rates it, with and without the capability.
    let out = host.run(&["systemd-analyze", "security", "--no-pager", UNIT]);
    let score: f64 = out
        .lines()
        .find_map(|l| l.split("Overall exposure level for ").nth(1))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no score:\n{out}"));
    assert!(
        score <= 2.0,
        "exposure {score} with CAP_NET_BIND_SERVICE\n{out}"
    );
    println!("measured: discover-serve.service exposure with CAP_NET_BIND_SERVICE: {score}");
}
