//! The floor for `make bench` P12: HTTP checks with nothing else. Each
//! address gets one GET of PATH every interval, on a new connection, the
//! starts spread evenly over the interval, on the same single-threaded
//! tokio runtime as the sidekick, with no HTTP library (a request written
//! by hand, the answer read to its end) and no results kept. What an HTTP
//! check itself costs at that cadence on this machine, before any design.
//!
//! ```text
//! bare-checker INTERVAL_MS PATH IP:PORT...
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: bare-checker INTERVAL_MS PATH IP:PORT...";
    let every = Duration::from_millis(args.get(1).and_then(|s| s.parse().ok()).expect(usage));
    let path = args.get(2).expect(usage).clone();
    let addrs: Vec<SocketAddr> = args[3..].iter().map(|a| a.parse().expect(usage)).collect();
    assert!(!addrs.is_empty(), "{usage}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let start = tokio::time::Instant::now();
        let n = u32::try_from(addrs.len()).expect("fewer than 2^32 addresses");
        for (i, addr) in (0u32..).zip(addrs) {
            let request =
                format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            let first = start + every * i / n;
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval_at(first, every);
                let mut answer = Vec::with_capacity(1024);
                loop {
                    ticks.tick().await;
                    answer.clear();
                    if let Ok(mut s) = TcpStream::connect(addr).await {
                        if s.write_all(request.as_bytes()).await.is_ok() {
                            let _ = s.read_to_end(&mut answer).await;
                        }
                    }
                }
            });
        }
        // The checks run until the bench kills the process.
        std::future::pending::<()>().await;
    });
}
