//! A long-polling etcd v2 watcher (GET /v2/keys/PREFIX?wait=true&recursive=true),
//! the consumer the chapter's apps were (node-etcd), to see what the bash
//! loop writes: action (set, update, expire) and value, with arrival times.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Clone, Debug)]
pub struct V2Event {
    pub action: String,
    pub key: String,
    pub value: Option<String>,
    pub at: Instant,
}

pub struct V2Watch {
    pub events: Arc<Mutex<Vec<V2Event>>>,
    stop: Arc<AtomicBool>,
}

fn request(addr: &str, path: &str) -> Option<serde_json::Value> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 8192];
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return None;
            }
            Err(_) => return None,
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let body = text.split("\r\n\r\n").nth(1)?;
    serde_json::from_str(body.trim()).ok()
}

impl V2Watch {
    /// Watch `prefix` from now on `addr` (host:port).
    pub fn start(addr: &str, prefix: &str) -> Self {
        let events: Arc<Mutex<Vec<V2Event>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        // The current index: watch from the next one.
        let index = {
            let mut s = TcpStream::connect(addr).expect("etcd v2");
            s.write_all(format!("GET /v2/keys{prefix}?recursive=true HTTP/1.0\r\n\r\n").as_bytes())
                .unwrap();
            let mut buf = String::new();
            s.read_to_string(&mut buf).unwrap();
            buf.lines()
                .find_map(|l| l.strip_prefix("X-Etcd-Index: "))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .expect("X-Etcd-Index")
        };
        let (e, st, addr, prefix) = (
            events.clone(),
            stop.clone(),
            addr.to_owned(),
            prefix.to_owned(),
        );
        std::thread::spawn(move || {
            let mut next = index + 1;
            while !st.load(Ordering::SeqCst) {
                let path = format!("/v2/keys{prefix}?wait=true&recursive=true&waitIndex={next}");
                let Some(v) = request(&addr, &path) else {
                    continue;
                };
                let at = Instant::now();
                let Some(node) = v.get("node") else {
                    // "event index cleared": start again from now.
                    next = v.get("index").and_then(|i| i.as_u64()).unwrap_or(next) + 1;
                    continue;
                };
                next = node["modifiedIndex"].as_u64().unwrap_or(next) + 1;
                e.lock().unwrap().push(V2Event {
                    action: v["action"].as_str().unwrap_or("").to_owned(),
                    key: node["key"].as_str().unwrap_or("").to_owned(),
                    value: node["value"].as_str().map(str::to_owned),
                    at,
                });
            }
        });
        Self { events, stop }
    }

    pub fn events(&self) -> Vec<V2Event> {
        self.events.lock().unwrap().clone()
    }
}

impl Drop for V2Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
