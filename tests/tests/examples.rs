//! The examples run for real: the Rust service embedding the crate, and
//! the Node app that watches through `discover watch` and readline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::process::Command;
use std::time::Duration;

use harness::proc::{Proc, bin_path};
use harness::{Etcd, eventually_async};
use nix::sys::signal::Signal;

fn read_line(addr: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    buf
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_service_registers_follows_members_and_config() {
    let etcd = Etcd::single().await;
    let c = etcd.client().await;
    c.put("/config/rust-service/greeting", "hello")
        .await
        .unwrap();
    let mut cmd = Command::new(bin_path("rust-service"));
    cmd.env("ETCDCTL_ENDPOINTS", etcd.endpoints_arg())
        .env("SERVICE_ID", "7")
        .env("LISTEN", "127.0.0.1:0")
        .env("TTL", "3");
    let mut p = Proc::spawn(cmd);
    let node = eventually_async(Duration::from_secs(10), "self-registration", || async {
        c.get("/services/rust-service/7").await.unwrap()
    })
    .await;
    let addr = node.value_str().unwrap().to_owned();
    assert!(node.lease().is_some(), "under a lease");
    assert_eq!(read_line(&addr), "hello\n", "it serves where it registered");

    c.put("/services/memcached/1", "10.1.0.2:11211")
        .await
        .unwrap();
    p.wait_stderr(Duration::from_secs(5), "membership change", |l| {
        l.contains("memcached members changed") && l.contains("10.1.0.2:11211")
    })
    .await;
    c.put("/config/rust-service/greeting", "hi").await.unwrap();
    p.wait_stderr(Duration::from_secs(5), "config change", |l| {
        l.contains("config changed") && l.contains("hi")
    })
    .await;
    harness::eventually(Duration::from_secs(2), "the new greeting served", || {
        (read_line(&addr) == "hi\n").then_some(())
    })
    .await;
    c.put("/config/rust-service/min_memcached", "\"many\"")
        .await
        .unwrap();
    p.wait_stderr(Duration::from_secs(5), "bad config rejected", |l| {
        l.contains("config update rejected")
    })
    .await;
    assert_eq!(read_line(&addr), "hi\n", "the last good config stays");

    p.signal(Signal::SIGTERM);
    assert_eq!(
        p.wait_exit(Duration::from_secs(5)).await.code(),
        Some(0),
        "{}",
        p.dump()
    );
    assert!(
        c.get("/services/rust-service/7").await.unwrap().is_none(),
        "deregistered on SIGTERM"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn node_watch_inline_exits_on_set_not_on_update() {
    let etcd = Etcd::single().await;
    let c = etcd.client().await;
    c.put("/services/couchbase/1", "10.1.1.2:8091")
        .await
        .unwrap();
    let mut cmd = Command::new("node");
    cmd.arg(harness::repo().join("examples/node-watch-inline/app.js"))
        .env("ETCDCTL_ENDPOINTS", etcd.endpoints_arg())
        .env("DISCOVER_BIN", bin_path("discover"));
    let mut p = Proc::spawn(cmd);
    p.wait_stdout(Duration::from_secs(10), "the initial connection", |l| {
        l == "current connection: couchbase://10.1.1.2:8091"
    })
    .await;
    // The discover process the app spawned.
    let discover_pid = harness::proc::descendants(p.pid())
        .into_iter()
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.contains("discover"))
        })
        .expect("the app runs discover watch");
    c.put("/services/couchbase/1", "10.1.1.2:8091")
        .await
        .unwrap(); // update
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        p.try_exit().is_none(),
        "an update must not end the app\n{}",
        p.dump()
    );
    c.put("/services/couchbase/1", "10.1.53.5:8091")
        .await
        .unwrap(); // set
    let status = p.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(0));
    assert!(
        p.stdout_lines()
            .iter()
            .any(|l| l.starts_with("new couchbase config") && l.contains("10.1.53.5")),
        "{}",
        p.dump()
    );
    // discover saw its stdout close and went away too, on its own.
    assert!(
        harness::proc::wait_pid_gone(discover_pid, Duration::from_secs(3)).await,
        "discover {discover_pid} still running after its reader exited"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn node_web_talks_to_a_real_memcached_under_discover_exec() {
    // Debian's memcached on loopback: it keeps connections open, as the
    // test image's stand-in now does too.
    let mc_port = harness::Port::reserve();
    let mut mc = Command::new("memcached");
    mc.args([
        "-l",
        "127.0.0.1",
        "-p",
        &mc_port.to_string(),
        "-U",
        "0",
        "-u",
        "nobody",
    ]);
    let _mc = Proc::spawn(mc);
    let etcd = Etcd::single().await;
    let c = etcd.client().await;
    c.put("/services/memcached/1", format!("127.0.0.1:{mc_port}"))
        .await
        .unwrap();
    c.put("/services/couchbase/1", "127.0.0.1:8091")
        .await
        .unwrap();
    let web_port = harness::Port::reserve();
    let web_port_n = web_port.number();
    let mut cmd = harness::proc::discover(
        &etcd,
        &[
            "watch",
            "/services/couchbase",
            "/services/memcached",
            "--wait",
            "1s:5s",
            "--exec",
            "node",
        ],
    );
    cmd.arg(harness::repo().join("examples/node-web/app.js"))
        .env("PORT", web_port.to_string())
        .env("HOST", "127.0.0.1");
    let web = Proc::spawn(cmd);
    let answered = web
        .wait_stdout(Duration::from_secs(10), "memcached answered", |l| {
            l.starts_with(&format!(
                "memcached 127.0.0.1:{mc_port} answered: VERSION 1."
            ))
        })
        .await;
    // GET / returns the config, with the round trip and a session cookie.
    let page = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", web_port_n)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).unwrap();
        buf
    })
    .await
    .unwrap();
    assert!(page.contains("set-cookie: sid="), "{page}");
    let body: serde_json::Value =
        serde_json::from_str(page.split("\r\n\r\n").nth(1).unwrap().trim()).unwrap();
    assert_eq!(body["couchbase"], "couchbase://127.0.0.1:8091", "{body}");
    assert_eq!(
        body["memcached"][0],
        format!("127.0.0.1:{mc_port}"),
        "{body}"
    );
    assert!(
        body["memcachedStatus"][0]["reply"]
            .as_str()
            .is_some_and(|r| r.starts_with("VERSION 1.")),
        "a real memcached answered: {body}\n{answered}"
    );
}
