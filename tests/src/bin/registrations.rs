//! Many registrations kept alive by one process through the library, for
//! `make bench` (P7): registers N keys under PREFIX, prints "ready" once
//! all are confirmed, then keeps them alive until killed.
//!
//! ```text
//! registrations ENDPOINT PREFIX N [TTL_SECONDS]
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: registrations ENDPOINT PREFIX N [TTL_SECONDS]";
    let endpoint = args.get(1).expect(usage).clone();
    let prefix = args.get(2).expect(usage).clone();
    let n: usize = args.get(3).and_then(|s| s.parse().ok()).expect(usage);
    let ttl: u64 = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(8);
    let client = discovery::ConnectOptions::new()
        .with_endpoints([endpoint])
        .connect()
        .await
        .expect("connect");
    let mut regs = Vec::with_capacity(n);
    for i in 0..n {
        let key = format!("{prefix}/{i}");
        regs.push(
            client
                .register(
                    &key,
                    format!("10.9.{}.{}", i / 250, i % 250 + 1),
                    discovery::RegisterOptions::new(Duration::from_secs(ttl)),
                )
                .expect("register"),
        );
    }
    for r in &regs {
        r.wait_registered().await.expect("registered");
    }
    println!("ready");
    std::future::pending::<()>().await;
}
