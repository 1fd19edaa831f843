//! A unix-socket proxy between a client and the Docker socket, that tests
//! can sever or take away, and that can rewrite the API version in request
//! paths (testcontainers 0.28 asks for API 1.53 and does not negotiate;
//! Debian's Docker 20.10 engine speaks at most 1.41).

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

struct Inner {
    path: PathBuf,
    upstream: PathBuf,
    rewrite: Option<(Vec<u8>, Vec<u8>)>,
    conns: Mutex<Vec<UnixStream>>,
    /// Bumped to stop the current accept loop.
    generation: AtomicU64,
}

/// See the module docs.
pub struct SocketProxy {
    inner: Arc<Inner>,
}

impl SocketProxy {
    /// Listen on `path`, forwarding to `upstream`. With `rewrite = Some((from, to))`,
    /// every `from` in client-to-daemon bytes becomes `to`.
    pub fn start(path: &Path, upstream: &Path, rewrite: Option<(&str, &str)>) -> Self {
        let inner = Arc::new(Inner {
            path: path.to_owned(),
            upstream: upstream.to_owned(),
            rewrite: rewrite.map(|(a, b)| (a.as_bytes().to_vec(), b.as_bytes().to_vec())),
            conns: Mutex::new(Vec::new()),
            generation: AtomicU64::new(0),
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
                let Ok(upstream) = UnixStream::connect(&inner.upstream) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                {
                    let mut conns = inner.conns.lock().unwrap();
                    conns.retain(|c| c.peer_addr().is_ok());
                    conns.push(client.try_clone().expect("clone"));
                    conns.push(upstream.try_clone().expect("clone"));
                }
                let rewrite = inner.rewrite.clone();
                pump(
                    client.try_clone().expect("clone"),
                    upstream.try_clone().expect("clone"),
                    rewrite,
                );
                pump(upstream, client, None);
            }
        });
    }
}

impl Drop for SocketProxy {
    fn drop(&mut self) {
        self.stop_listening();
    }
}

fn pump(mut from: UnixStream, mut to: UnixStream, rewrite: Option<(Vec<u8>, Vec<u8>)>) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        // Bytes held back because they might be the start of `from`-pattern
        // split across two reads.
        let mut carry: Vec<u8> = Vec::new();
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let out = match &rewrite {
                None => buf[..n].to_vec(),
                Some((pat, rep)) => {
                    carry.extend_from_slice(&buf[..n]);
                    let replaced = replace_all(&carry, pat, rep);
                    // Keep back a tail shorter than the pattern, unless it
                    // cannot start a match.
                    let keep = (1..pat.len())
                        .rev()
                        .find(|k| {
                            replaced.len() >= *k && pat.starts_with(&replaced[replaced.len() - k..])
                        })
                        .unwrap_or(0);
                    carry = replaced[replaced.len() - keep..].to_vec();
                    replaced[..replaced.len() - keep].to_vec()
                }
            };
            if to.write_all(&out).is_err() {
                break;
            }
        }
        if !carry.is_empty() {
            let _ = to.write_all(&carry);
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

fn replace_all(hay: &[u8], pat: &[u8], rep: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(pat) {
            out.extend_from_slice(rep);
            i += pat.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::replace_all;

    #[test]
    fn replaces() {
        assert_eq!(
            replace_all(b"GET /v1.53/x /v1.53/", b"/v1.53/", b"/v1.41/"),
            b"GET /v1.41/x /v1.41/"
        );
    }
}
