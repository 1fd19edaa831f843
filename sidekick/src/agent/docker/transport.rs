//! The HTTP client under bollard: one kept-alive connection per engine,
//! over a unix socket, plain TCP or TLS, each built by [`kept_alive`] and
//! handed to bollard by the one function the three share ([`over`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bollard::errors::Error as BollardError;
use hyper::Response;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::tls::DockerTls;

/// How long bollard waits for an answer (its own default).
const TIMEOUT_SECS: u64 = 120;

/// bollard's own transports open a new connection for every request (they
/// turn hyper's pool off), so each inspect would also cost a socket setup
/// here and an accept and a goroutine in dockerd, every few seconds for as
/// long as the host runs. This gives bollard a client that keeps its
/// connection; a request whose idle connection the daemon closed just
/// before is sent again on a new one (hyper retries what it never wrote).
pub(super) fn kept_alive(
    host: &str,
    tls: Option<&DockerTls>,
    version: Option<&bollard::ClientVersion>,
) -> Result<bollard::Docker, BollardError> {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(2);
    if let Some(path) = host.strip_prefix("unix://") {
        if !std::path::Path::new(path).exists() {
            return Err(BollardError::SocketNotFoundError(path.to_owned()));
        }
        let client = builder.build(hyperlocal::UnixConnector);
        // hyperlocal reads the socket's path from the URI's host, in hex.
        let hex: String = path.bytes().map(|b| format!("{b:02x}")).collect();
        over(
            move |req| client.request(req),
            format!("unix://{hex}"),
            version,
        )
    } else if let Some(tls) = tls {
        // The daemon's certificate is verified against DOCKER_CERT_PATH/ca.pem
        // only (the CLI's behaviour), never the system's roots.
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls.config).clone())
            .https_only()
            .enable_http1()
            .build();
        let client = builder.build(https);
        over(
            move |req| client.request(req),
            host.replacen("tcp://", "https://", 1),
            version,
        )
    } else {
        let client = builder.build_http();
        over(
            move |req| client.request(req),
            host.replacen("tcp://", "http://", 1),
            version,
        )
    }
}

/// bollard over `send` (a kept-alive client's `request`), at `addr`.
///
/// bollard 0.21.1 builds its request URLs by joining an absolute path onto
/// `/vX.Y/`, which drops the version: every request goes out unversioned
/// (the daemon then speaks its own newest version). A fixed
/// `DOCKER_API_VERSION` would be ignored, so the transport puts it back.
fn over<F, Fut>(
    send: F,
    addr: String,
    version: Option<&bollard::ClientVersion>,
) -> Result<bollard::Docker, BollardError>
where
    F: Fn(bollard::BollardRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Incoming>, hyper_util::client::legacy::Error>>
        + Send
        + 'static,
{
    let prefix: Option<Arc<str>> =
        version.map(|v| format!("/v{}.{}", v.major_version, v.minor_version).into());
    bollard::Docker::connect_with_custom_transport(
        move |req: bollard::BollardRequest| {
            let answer = send(with_version(req, prefix.as_deref()));
            Box::pin(async move { answer.await.map_err(BollardError::from) })
        },
        Some(addr),
        TIMEOUT_SECS,
        version.unwrap_or(bollard::API_DEFAULT_VERSION),
    )
}

/// The request with its path under `prefix` (`/v1.41`), if there is one.
fn with_version(mut req: bollard::BollardRequest, prefix: Option<&str>) -> bollard::BollardRequest {
    let Some(prefix) = prefix else {
        return req;
    };
    let uri = req.uri();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    if path.starts_with(prefix) {
        return req;
    }
    let rebuilt = format!(
        "{}://{}{prefix}{path}",
        uri.scheme_str().unwrap_or("http"),
        uri.authority().map_or("", |a| a.as_str())
    );
    if let Ok(u) = rebuilt.parse() {
        *req.uri_mut() = u;
    }
    req
}
