//! A bare etcd-client prefix watch, the reference for `make bench`: no
//! snapshot, no classification, no resume, no JSON. It approximates the
//! physical limit of the stack (etcd, gRPC, tokio) for a watcher.
//!
//! ```text
//! bare-watch ENDPOINT PREFIX [START_REVISION] [--print] [--until N]
//! ```
//!
//! With --print it writes `revision key value` per event to stdout,
//! flushed at once; with --until N it exits after N events, printing the
//! time from the first to the last.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::time::Instant;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: bare-watch ENDPOINT PREFIX [START_REVISION] [--print] [--until N]";
    let endpoint = args.get(1).expect(usage).clone();
    let prefix = args.get(2).expect(usage).clone();
    let start: i64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
    let print = args.iter().any(|a| a == "--print");
    let until: Option<u64> = args
        .iter()
        .position(|a| a == "--until")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok());
    let client = etcd_client::Client::connect([endpoint], None)
        .await
        .expect("connect");
    let mut opts = etcd_client::WatchOptions::new().with_prefix();
    if start > 0 {
        opts = opts.with_start_revision(start);
    }
    // A replayed batch can be many megabytes: no 4 MiB decoding limit.
    let mut stream = client
        .watch_client()
        .max_decoding_message_size(256 * 1024 * 1024)
        .watch(prefix, Some(opts))
        .await
        .expect("watch");
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut seen = 0u64;
    let mut first: Option<Instant> = None;
    while let Some(resp) = stream.message().await.expect("watch stream") {
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            first.get_or_insert_with(Instant::now);
            seen += 1;
            if print {
                out.write_all(format!("{} ", kv.mod_revision()).as_bytes())
                    .unwrap();
                out.write_all(kv.key()).unwrap();
                out.write_all(b" ").unwrap();
                out.write_all(kv.value()).unwrap();
                out.write_all(b"\n").unwrap();
            }
        }
        if print {
            out.flush().unwrap();
        }
        if until.is_some_and(|n| seen >= n) {
            let secs = first.map(|f| f.elapsed().as_secs_f64()).unwrap_or(0.0);
            eprintln!("{seen} events in {secs:.6} s");
            return;
        }
    }
}
