//! A unix-socket proxy between a client and the Docker socket, that tests
//! can sever, hold or take away (the Docker fault tests).

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

struct Inner {
    path: PathBuf,
    upstream: PathBuf,
    conns: Mutex<Vec<UnixStream>>,
    /// Bumped to stop the current accept loop.
    generation: AtomicU64,
    /// While set, new connections are accepted but not forwarded yet.
    held: AtomicBool,
    /// HTTP responses seen going from the daemon to a client.
    responses: AtomicUsize,
}

/// See the module docs.
pub struct SocketProxy {
    inner: Arc<Inner>,
}

impl SocketProxy {
    /// Listen on `path`, forwarding to `upstream`.
    pub fn start(path: &Path, upstream: &Path) -> Self {
        let inner = Arc::new(Inner {
            path: path.to_owned(),
            upstream: upstream.to_owned(),
            conns: Mutex::new(Vec::new()),
            generation: AtomicU64::new(0),
            held: AtomicBool::new(false),
            responses: AtomicUsize::new(0),
        });
        let p = Self { inner };
        p.listen();
        p
    }

    /// The `DOCKER_HOST` value that points at this proxy.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.inner.path.display())
    }

    /// Cut every open connection (both directions), as a daemon restart would.
    pub fn sever(&self) {
        for c in self.inner.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// Accept new connections but forward nothing until [`SocketProxy::release`]:
    /// requests hang, as against a daemon that is busy restarting.
    pub fn hold(&self) {
        self.inner.held.store(true, Ordering::SeqCst);
    }

    /// Forward the held connections and every new one.
    pub fn release(&self) {
        self.inner.held.store(false, Ordering::SeqCst);
    }

    /// How many HTTP responses (status lines) the daemon sent through so
    /// far: a request counted here was answered, so the client is no
    /// longer waiting on it.
    pub fn responses(&self) -> usize {
        self.inner.responses.load(Ordering::SeqCst)
    }

    /// Stop accepting and remove the socket, then sever: the daemon is gone.
    pub fn stop_listening(&self) {
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
        // Wake the blocked accept so that it sees the new generation.
        let _ = UnixStream::connect(&self.inner.path);
        let _ = std::fs::remove_file(&self.inner.path);
        self.sever();
    }

    /// Listen again on the same path.
    pub fn resume_listening(&self) {
        self.listen();
    }

    fn listen(&self) {
        let _ = std::fs::remove_file(&self.inner.path);
        let listener = UnixListener::bind(&self.inner.path).expect("bind proxy socket");
        let generation = self.inner.generation.load(Ordering::SeqCst);
        let inner = self.inner.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if inner.generation.load(Ordering::SeqCst) != generation {
                    break;
                }
                let Ok(client) = conn else { continue };
                let inner = inner.clone();
                std::thread::spawn(move || forward(&inner, client));
            }
        });
    }
}

/// Connect one accepted client to the daemon (once not held) and pump.
fn forward(inner: &Arc<Inner>, client: UnixStream) {
    while inner.held.load(Ordering::SeqCst) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let Ok(upstream) = UnixStream::connect(&inner.upstream) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    {
        let mut conns = inner.conns.lock().unwrap();
        conns.retain(|c| c.peer_addr().is_ok());
        conns.push(client.try_clone().expect("clone"));
        conns.push(upstream.try_clone().expect("clone"));
    }
    pump(
        client.try_clone().expect("clone"),
        upstream.try_clone().expect("clone"),
        None,
    );
    pump(upstream, client, Some(inner.clone()));
}

impl Drop for SocketProxy {
    fn drop(&mut self) {
        self.stop_listening();
    }
}

/// Copy `from` to `to` on a thread. `count_responses` (daemon to client
/// only) counts the HTTP status lines that pass.
fn pump(mut from: UnixStream, mut to: UnixStream, count_responses: Option<Arc<Inner>>) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Some(inner) = &count_responses {
                let seen = buf[..n].windows(9).filter(|w| w == b"HTTP/1.1 ").count();
                inner.responses.fetch_add(seen, Ordering::SeqCst);
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
