//! A TCP proxy on loopback in front of one etcd member, that tests can cut:
//! the member stays healthy (it applies writes and compactions), only the
//! client behind the proxy is disconnected.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

struct Inner {
    upstream: String,
    open: AtomicBool,
    conns: Mutex<Vec<TcpStream>>,
}

/// See the module docs.
pub struct TcpProxy {
    port: u16,
    inner: Arc<Inner>,
}

impl TcpProxy {
    /// Forward a free loopback port to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let inner = Arc::new(Inner {
            upstream: upstream.to_owned(),
            open: AtomicBool::new(true),
            conns: Mutex::new(Vec::new()),
        });
        let i = inner.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                if !i.open.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&i.upstream) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                {
                    let mut conns = i.conns.lock().unwrap();
                    conns.push(client.try_clone().expect("clone"));
                    conns.push(server.try_clone().expect("clone"));
                }
                pump(
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                pump(server, client);
            }
        });
        Self { port, inner }
    }

    /// The URL clients use instead of the member's.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Cut every connection and refuse new ones until [`TcpProxy::restore`].
    pub fn cut(&self) {
        self.inner.open.store(false, Ordering::SeqCst);
        for c in self.inner.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// Accept and forward again.
    pub fn restore(&self) {
        self.inner.open.store(true, Ordering::SeqCst);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
