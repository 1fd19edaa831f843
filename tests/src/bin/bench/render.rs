//! `bench --only render`: a change in etcd until nginx serves the new
//! upstream, through `discover render --wait 0` with the example's own
//! template, `nginx -t` as the check and `nginx -s reload`.
//!
//! Each round moves `web/1` to a real HTTP backend on a port no earlier
//! round used (each port answers with its own number) and polls nginx with
//! fresh connections until the answer is the new port's.
//!
//! The peer, in the same run against the same nginx, is the floor of the
//! job: the bench itself writes the next config (renamed into place) and
//! runs `nginx -s reload`, with no etcd, no template and no check.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use harness::web::backends;
use harness::{EtcdCluster, Proc};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// One GET on a fresh connection to nginx's socket: the body.
fn get(lb: &Path) -> Option<String> {
    let mut s = std::os::unix::net::UnixStream::connect(lb).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: lb\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// Poll nginx until it answers `want`: the time it took from `t0`; after
/// 30 s, the last answer it gave instead.
async fn until_serving(lb: &Path, want: &str, t0: Instant) -> Result<Duration, Option<String>> {
    let (lb, want) = (lb.to_owned(), want.to_owned());
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let got = get(&lb);
            if got.as_deref() == Some(want.as_str()) {
                return Ok(t0.elapsed());
            }
            if std::time::Instant::now() >= deadline {
                return Err(got);
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    })
    .await
    .unwrap()
}

/// `discover render` and its floor: each round's time to served.
#[derive(Debug, Serialize, Deserialize)]
pub struct Render {
    pub ours: Vec<Duration>,
    pub floor: Vec<Duration>,
}

/// Measure `rounds` changes each way.
pub async fn run(etcd: &EtcdCluster, rounds: usize) -> Render {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let c = etcd.client().await;
    let prefix = "/bench/render";
    // nginx listens on a unix socket: a TCP port picked free here could be
    // taken by a parallel test's etcd before nginx binds it.
    let lb: PathBuf = dir.path().join("lb.sock");
    for (k, v) in [
        ("listen", format!("\"unix:{}\"", lb.display())),
        ("pid", format!("\"{d}/nginx.pid\"")),
        ("error_log", format!("\"{d}/error.log\"")),
    ] {
        c.put(&format!("{prefix}/lb/{k}"), v).await.unwrap();
    }
    // A port of its own for every round, ours and the floor's: during a
    // reload nginx's old workers may still answer a new connection with the
    // config before, so a target that an earlier config also had (moving
    // between two backends) would count a stale answer as served.
    let reserved = harness::ports::reserve(2 * rounds + 1);
    let ports = harness::ports::numbers(&reserved);
    let (ours, floor_ports) = ports.split_at(rounds + 1);
    let backends = backends(&ports);
    backends
        .wait_stdout(Duration::from_secs(20), "the backends", |l| {
            l == "listening on all"
        })
        .await;
    c.put(&format!("{prefix}/web/1"), format!("127.0.0.1:{}", ours[0]))
        .await
        .unwrap();
    let template = harness::repo()
        .join("examples/nginx-upstream/upstream.conf.j2")
        .display()
        .to_string();
    let nginx_flags = format!("-p {d}/ -e {d}/error.log");
    let args = [
        "render".to_owned(),
        "--watch".to_owned(),
        format!("web={prefix}/web"),
        "--config".to_owned(),
        format!("{prefix}/lb"),
        "--template".to_owned(),
        format!("{template}:{d}/nginx.conf"),
        "--check-cmd".to_owned(),
        format!("/usr/sbin/nginx -t -q {nginx_flags} -c {{{{src}}}}"),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut once = Proc::spawn(harness::proc::discover(
        etcd,
        &[args.as_slice(), &["--once"]].concat(),
    ));
    assert!(
        once.wait_exit(Duration::from_secs(30)).await.success(),
        "{}",
        once.dump()
    );
    let mut ng = Command::new("/usr/sbin/nginx");
    ng.args(nginx_flags.split(' '))
        .args(["-c", &format!("{d}/nginx.conf"), "-g", "daemon off;"]);
    let nginx = Proc::spawn(ng);
    let reload = format!("/usr/sbin/nginx -s reload {nginx_flags} -c {d}/nginx.conf");
    // What a round that never got served leaves behind, to tell nginx's
    // part from render's.
    let stuck = |round: &str, want: &str, got: Option<String>, render: Option<&Proc>| -> String {
        let read = |f: &str| std::fs::read_to_string(format!("{d}/{f}")).unwrap_or_default();
        format!(
            "{round}: nginx did not serve {want} within 30 s (it answered {got:?})\n--- nginx ---\n{}\n--- error.log ---\n{}\n--- nginx.conf ---\n{}\n{}",
            nginx.dump(),
            read("error.log"),
            read("nginx.conf"),
            render
                .map(|r| format!("--- render ---\n{}", r.dump()))
                .unwrap_or_default()
        )
    };
    let render = Proc::spawn(harness::proc::discover(
        etcd,
        &[args.as_slice(), &["--reload-cmd", &reload, "--wait", "0"]].concat(),
    ));
    render
        .wait_stderr(Duration::from_secs(30), "render to follow", |l| {
            l.contains("rendering; following etcd")
        })
        .await;
    let first = ours[0].to_string();
    if let Err(got) = until_serving(&lb, &first, Instant::now()).await {
        panic!(
            "{}",
            stuck("the first rendering", &first, got, Some(&render))
        );
    }
    let mut took = Vec::new();
    for (round, to) in ours[1..].iter().enumerate() {
        let t0 = Instant::now();
        c.put(&format!("{prefix}/web/1"), format!("127.0.0.1:{to}"))
            .await
            .unwrap();
        let to = to.to_string();
        match until_serving(&lb, &to, t0).await {
            Ok(t) => took.push(t),
            Err(got) => panic!(
                "{}",
                stuck(
                    &format!("render round {}", round + 1),
                    &to,
                    got,
                    Some(&render)
                )
            ),
        }
    }
    drop(render);

    // The floor: the same change written by hand and `nginx -s reload`.
    let conf = format!("{d}/nginx.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    let now = format!("127.0.0.1:{};", ours[rounds]);
    assert!(
        text.contains(&now),
        "the last rendering holds {now}:\n{text}"
    );
    let mut floor = Vec::new();
    for (round, to) in floor_ports.iter().enumerate() {
        let next = text.replace(&now, &format!("127.0.0.1:{to};"));
        let t0 = Instant::now();
        std::fs::write(format!("{conf}.next"), &next).unwrap();
        std::fs::rename(format!("{conf}.next"), &conf).unwrap();
        let out = tokio::process::Command::new("/usr/sbin/nginx")
            .args(reload.split(' ').skip(1))
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let to = to.to_string();
        match until_serving(&lb, &to, t0).await {
            Ok(t) => floor.push(t),
            Err(got) => panic!(
                "{}",
                stuck(&format!("floor round {}", round + 1), &to, got, None)
            ),
        }
    }
    Render { ours: took, floor }
}
