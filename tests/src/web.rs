//! Real HTTP backends and a real client for the load-balancer tests: node
//! servers that answer every request with their own port, and Debian's
//! `curl` to ask through whatever sits in front of them.

use std::process::Command;
use std::time::Duration;

use crate::Proc;

/// A real HTTP server (node) on 127.0.0.1:`port` that answers every
/// request with its own port. Take `port` from [`crate::ports`], and keep
/// the reservation while the backend runs.
pub fn backend(port: u16) -> Proc {
    backends(&[port])
}

/// One node process serving HTTP on 127.0.0.1 at every port of `ports`,
/// each answering with its own port. It prints `listening on PORT` for
/// each, then `listening on all`.
pub fn backends(ports: &[u16]) -> Proc {
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    let mut c = Command::new("node");
    c.arg("-e")
        .arg(
            "const ps = process.env.PORTS.split(',').map(Number); let n = 0;\
             for (const p of ps) {\
               require('http').createServer((q, r) => r.end(String(p)))\
               .listen(p, '127.0.0.1', () => {\
                 console.log('listening on ' + p);\
                 if (++n === ps.length) console.log('listening on all');\
               });\
             }",
        )
        .env("PORTS", list.join(","));
    Proc::spawn(c)
}

/// Wait until the backend from [`backend`] listens.
pub async fn wait_listening(b: &Proc, port: u16) {
    b.wait_stdout(Duration::from_secs(20), "the backend to listen", |l| {
        l == format!("listening on {port}")
    })
    .await;
}

/// One GET of 127.0.0.1:`port` with the real curl: the body, or None.
pub async fn curl(port: u16) -> Option<String> {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .await
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `n` GETs of 127.0.0.1:`port`: the bodies, or None if any failed.
pub async fn hits(port: u16, n: usize) -> Option<Vec<String>> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(curl(port).await?);
    }
    Some(v)
}
