//! A TLS-terminating proxy in front of the local Docker socket, as a
//! remote daemon started with `--tlsverify` looks to a client: it serves
//! the harness PKI's server certificate for 127.0.0.1, requires a client
//! certificate signed by the PKI's CA, and answers a plain-HTTP request
//! as Go's HTTPS server does (`400 Client sent an HTTP request to an HTTPS
//! server.`). It records the API versions requests ask for (`/v1.41/...`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

use crate::docker::DOCKER_SOCKET;
use crate::pki::Pki;

/// See the module docs. Stops on drop.
pub struct TlsDockerProxy {
    port: u16,
    versions: Arc<Mutex<BTreeSet<String>>>,
    task: JoinHandle<()>,
}

fn server_config(pki: &Pki) -> ServerConfig {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pki.path("ca.pem")).expect("ca.pem") {
        roots.add(c.expect("CA certificate")).expect("add CA");
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .expect("client verifier");
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(pki.path("server.pem"))
        .expect("server.pem")
        .collect::<Result<_, _>>()
        .expect("server certificate");
    let key = PrivateKeyDer::from_pem_file(pki.path("server.key")).expect("server.key");
    ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .expect("server config")
}

impl TlsDockerProxy {
    /// Listen on a free loopback port (on the current tokio runtime).
    pub async fn start(pki: &Pki) -> Self {
        let acceptor = TlsAcceptor::from(Arc::new(server_config(pki)));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        let versions = Arc::new(Mutex::new(BTreeSet::new()));
        let seen = Arc::clone(&versions);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, acceptor.clone(), Arc::clone(&seen)));
            }
        });
        Self {
            port,
            versions,
            task,
        }
    }

    /// `DOCKER_HOST` for a client of this proxy.
    pub fn docker_host(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// The API versions requests asked for so far (`1.41`, ...; `unversioned`).
    pub fn versions(&self) -> BTreeSet<String> {
        self.versions.lock().expect("versions").clone()
    }
}

impl Drop for TlsDockerProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(stream: TcpStream, acceptor: TlsAcceptor, seen: Arc<Mutex<BTreeSet<String>>>) {
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await.is_err() {
        return;
    }
    // 0x16: a TLS handshake record. Anything else is plain HTTP.
    if first[0] != 0x16 {
        let mut stream = stream;
        // Read the request first, as Go does: closing a socket with unread
        // bytes would reset the connection before the answer is read.
        let mut req = vec![0u8; 16 * 1024];
        let _ = stream.read(&mut req).await;
        let _ = stream
            .write_all(b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
            .await;
        let _ = stream.shutdown().await;
        return;
    }
    let Ok(tls) = acceptor.accept(stream).await else {
        return;
    };
    let Ok(up) = UnixStream::connect(DOCKER_SOCKET).await else {
        return;
    };
    let (mut tls_r, mut tls_w) = tokio::io::split(tls);
    let (mut up_r, mut up_w) = up.into_split();
    let down = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut up_r, &mut tls_w).await;
        let _ = tls_w.shutdown().await;
    });
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match tls_r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        record_versions(&buf[..n], &seen);
        if up_w.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = up_w.shutdown().await;
    let _ = down.await;
}

/// The API version of every request line in a chunk (`1.41`, or
/// `unversioned` for a path without one).
fn record_versions(chunk: &[u8], seen: &Mutex<BTreeSet<String>>) {
    let text = String::from_utf8_lossy(chunk);
    for line in text.split("\r\n") {
        let mut words = line.split(' ');
        let (Some(method), Some(path), Some(proto)) = (words.next(), words.next(), words.next())
        else {
            continue;
        };
        if !proto.starts_with("HTTP/") || !method.chars().all(|c| c.is_ascii_uppercase()) {
            continue;
        }
        let version = path
            .strip_prefix("/v")
            .and_then(|p| p.split('/').next())
            .filter(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.'))
            .unwrap_or("unversioned");
        seen.lock().expect("versions").insert(version.to_owned());
    }
}

/// A `DOCKER_CERT_PATH` directory: `ca.pem` from `ca` (a PKI file name),
/// and `cert.pem`/`key.pem` from `client` (`client` or `stranger`) if given.
pub fn cert_path(pki: &Pki, dir: &Path, ca: &str, client: Option<&str>) -> PathBuf {
    std::fs::create_dir_all(dir).expect("cert dir");
    std::fs::copy(pki.path(ca), dir.join("ca.pem")).expect("copy ca.pem");
    if let Some(c) = client {
        std::fs::copy(pki.path(&format!("{c}.pem")), dir.join("cert.pem")).expect("copy cert.pem");
        std::fs::copy(pki.path(&format!("{c}.key")), dir.join("key.pem")).expect("copy key.pem");
    }
    dir.to_owned()
}
