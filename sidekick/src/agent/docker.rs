//! The Docker API, through bollard: inspect one container, and follow the
//! events that concern it. The only place that talks to Docker.

use std::collections::HashMap;

use bollard::errors::Error as BollardError;
use bollard::models::EventMessage;
use bollard::query_parameters::{EventsOptionsBuilder, ListContainersOptionsBuilder};
use futures::Stream;

use super::decide::ContainerView;
use crate::common::exit::UsageError;

mod model;
mod tls;

pub use model::{DockerEvent, Summary};
use model::{summarize, view};

/// Why a Docker request failed.
#[derive(Debug)]
pub enum DockerError {
    /// The daemon could not be reached (no socket, refused, timed out, cut).
    Unreachable(String),
    /// The daemon refused us for good (permission denied on the socket).
    Refused(String),
}

impl std::fmt::Display for DockerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DockerError::Unreachable(m) | DockerError::Refused(m) => f.write_str(m),
        }
    }
}

/// A Docker connection that is (re)made on demand, with the API version
/// negotiated each time: the engine may be older than bollard's default
/// (Debian's 20.10 speaks 1.41), or restarted with a new version. As the
/// Docker CLI: `DOCKER_API_VERSION` fixes the version instead, and
/// `DOCKER_TLS_VERIFY`/`DOCKER_CERT_PATH` make a `tcp://` host TLS.
#[derive(Debug)]
pub struct DockerConn {
    host: String,
    tls: Option<tls::DockerTls>,
    version: Option<bollard::ClientVersion>,
    api: Option<bollard::Docker>,
}

/// The default Docker socket.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

impl DockerConn {
    /// Read `DOCKER_HOST`, `DOCKER_TLS_VERIFY`, `DOCKER_CERT_PATH` and
    /// `DOCKER_API_VERSION` as the Docker CLI does; a scheme bollard cannot
    /// use, a TLS file that cannot be read or a malformed version is a usage
    /// error.
    pub fn from_env() -> Result<Self, UsageError> {
        let host = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| DEFAULT_HOST.to_owned());
        if !(host.starts_with("unix://")
            || host.starts_with("tcp://")
            || host.starts_with("http://"))
        {
            return Err(UsageError(format!(
                "DOCKER_HOST={host:?} is not supported; use unix:///path/to/docker.sock or tcp://host:port"
            )));
        }
        let tls = tls::from_env(&host)?;
        let version = tls::api_version_from_env()?;
        Ok(Self {
            host,
            tls,
            version,
            api: None,
        })
    }

    /// Where Docker is expected.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Forget the connection, so the next call reconnects and renegotiates.
    pub fn reset(&mut self) {
        self.api = None;
    }

    async fn api(&mut self) -> Result<bollard::Docker, DockerError> {
        if let Some(api) = &self.api {
            return Ok(api.clone());
        }
        let api = kept_alive(&self.host, self.tls.as_ref(), self.version.as_ref())
            .map_err(|e| self.classify(e))?;
        let api = match self.version {
            Some(_) => api,
            None => api
                .negotiate_version()
                .await
                .map_err(|e| self.classify(e))?,
        };
        self.api = Some(api.clone());
        Ok(api)
    }

    /// Inspect `name`: `Ok(None)` when no such container exists.
    pub async fn inspect(&mut self, name: &str) -> Result<Option<ContainerView>, DockerError> {
        let api = self.api().await?;
        match api.inspect_container(name, None).await {
            Ok(c) => Ok(Some(view(c))),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => {
                self.reset();
                Err(self.classify(e))
            }
        }
    }

    /// An inspect that does not borrow the connection, so that several can
    /// be in flight (host mode: one slow inspect must not hold up another
    /// container's delete). A failure resets nothing here: the caller
    /// calls [`DockerConn::reset`].
    pub async fn inspect_later(
        &mut self,
        name: &str,
    ) -> Result<
        impl std::future::Future<Output = Result<Option<ContainerView>, DockerError>> + use<>,
        DockerError,
    > {
        let api = self.api().await?;
        let (diagnosis, name) = (self.diagnosis(), name.to_owned());
        Ok(async move {
            match api.inspect_container(&name, None).await {
                Ok(c) => Ok(Some(view(c))),
                Err(BollardError::DockerResponseServerError {
                    status_code: 404, ..
                }) => Ok(None),
                Err(e) => Err(diagnosis.classify(e)),
            }
        })
    }

    /// Container and network events from `since` (Docker's `timeNano`
    /// of the last event seen, or now). The stream ends when the daemon
    /// restarts; the caller resubscribes from the last event and reconciles.
    pub async fn events(
        &mut self,
        since_nanos: Option<i64>,
    ) -> Result<impl Stream<Item = Result<EventMessage, BollardError>> + use<>, DockerError> {
        let api = self.api().await?;
        // By type only: a `container` filter would also drop the network
        // connect/disconnect events (their actor is the network), so the
        // events of other containers are received and dropped here.
        let filters = HashMap::from([("type", vec!["container", "network"])]);
        let mut opts = EventsOptionsBuilder::new().filters(&filters);
        if let Some(n) = since_nanos {
            let since = format!(
                "{}.{:09}",
                n.div_euclid(1_000_000_000),
                n.rem_euclid(1_000_000_000)
            );
            opts = opts.since(&since);
        }
        Ok(api.events(Some(opts.build())))
    }
}

/// bollard's own transports open a new connection for every request (they
/// turn hyper's pool off), so each inspect would also cost a socket setup
/// here and an accept and a goroutine in dockerd, every few seconds for as
/// long as the host runs. This gives bollard a client that keeps its
/// connection; a request whose idle connection the daemon closed just
/// before is sent again on a new one (hyper retries what it never wrote).
fn kept_alive(
    host: &str,
    tls: Option<&tls::DockerTls>,
    version: Option<&bollard::ClientVersion>,
) -> Result<bollard::Docker, BollardError> {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use std::sync::Arc;

    const TIMEOUT_SECS: u64 = 120;
    // bollard 0.21.1 builds its request URLs by joining an absolute path
    // onto `/vX.Y/`, which drops the version: every request goes out
    // unversioned (the daemon then speaks its own newest version). A fixed
    // DOCKER_API_VERSION would be ignored, so the transport puts it back.
    let prefix: Option<Arc<str>> =
        version.map(|v| format!("/v{}.{}", v.major_version, v.minor_version).into());
    let version = version.unwrap_or(bollard::API_DEFAULT_VERSION);
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .pool_max_idle_per_host(2);
    if let Some(path) = host.strip_prefix("unix://") {
        if !std::path::Path::new(path).exists() {
            return Err(BollardError::SocketNotFoundError(path.to_owned()));
        }
        let client = Arc::new(builder.build(hyperlocal::UnixConnector));
        // hyperlocal reads the socket's path from the URI's host, in hex.
        let hex: String = path.bytes().map(|b| format!("{b:02x}")).collect();
        bollard::Docker::connect_with_custom_transport(
            move |req: bollard::BollardRequest| {
                let client = Arc::clone(&client);
                let req = with_version(req, prefix.as_deref());
                Box::pin(async move { client.request(req).await.map_err(BollardError::from) })
            },
            Some(format!("unix://{hex}")),
            TIMEOUT_SECS,
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
        let client = Arc::new(builder.build(https));
        bollard::Docker::connect_with_custom_transport(
            move |req: bollard::BollardRequest| {
                let client = Arc::clone(&client);
                let req = with_version(req, prefix.as_deref());
                Box::pin(async move { client.request(req).await.map_err(BollardError::from) })
            },
            Some(host.replacen("tcp://", "https://", 1)),
            TIMEOUT_SECS,
            version,
        )
    } else {
        let client = Arc::new(builder.build_http());
        bollard::Docker::connect_with_custom_transport(
            move |req: bollard::BollardRequest| {
                let client = Arc::clone(&client);
                let req = with_version(req, prefix.as_deref());
                Box::pin(async move { client.request(req).await.map_err(BollardError::from) })
            },
            Some(host.replacen("tcp://", "http://", 1)),
            TIMEOUT_SECS,
            version,
        )
    }
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

/// What [`Diagnosis::classify`] needs to know about the connection, owned,
/// so that an inspect in flight (no borrow of the connection) can use it.
#[derive(Clone, Debug)]
struct Diagnosis {
    host: String,
    tls_dir: Option<std::path::PathBuf>,
    fixed_version: bool,
}

impl DockerConn {
    fn diagnosis(&self) -> Diagnosis {
        Diagnosis {
            host: self.host.clone(),
            tls_dir: self.tls.as_ref().map(|t| t.dir.clone()),
            fixed_version: self.version.is_some(),
        }
    }

    /// Sort a failure into "retry" and "fix the configuration" (exit 2).
    fn classify(&self, e: BollardError) -> DockerError {
        self.diagnosis().classify(e)
    }
}

impl Diagnosis {
    /// Sort a failure into "retry" and "fix the configuration" (exit 2).
    ///
    /// The connection's own failures are read from the error's types
    /// (an `io::Error` of kind `PermissionDenied`, a `rustls::Error`), not
    /// its text. Only the daemon's HTTP 400 answers are read as text: that
    /// text is all the daemon says.
    fn classify(&self, e: BollardError) -> DockerError {
        let host = &self.host;
        let text = discovery::error_chain(&e);
        let cause = Cause::of(&e);
        if cause.permission_denied {
            return DockerError::Refused(format!(
                "Docker at {host} refused us: {text} (run sidekick as root or as a member of the docker group)"
            ));
        }
        if let Some(tls_dir) = self.tls_dir.as_ref().filter(|_| cause.tls) {
            // A certificate the daemon or we reject does not heal by retrying.
            return DockerError::Refused(format!(
                "Docker at {host}: the TLS connection was refused: {text} (DOCKER_CERT_PATH={}: ca.pem must be the CA that signed the daemon's certificate, and cert.pem and key.pem a client certificate the daemon trusts)",
                tls_dir.display()
            ));
        }
        if let BollardError::DockerResponseServerError {
            status_code: 400,
            message,
        } = &e
        {
            let message = message.to_lowercase();
            // Go's HTTPS server answers a plain-HTTP request with this 400.
            if message.contains("http request to an https server") {
                return DockerError::Refused(format!(
                    "Docker at {host} speaks TLS: {} (set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH to the directory with ca.pem, cert.pem and key.pem)",
                    text.trim_end()
                ));
            }
            if self.fixed_version && message.contains("version") {
                return DockerError::Refused(format!(
                    "Docker at {host} refuses the API version DOCKER_API_VERSION asks for: {text} (unset DOCKER_API_VERSION to negotiate one)"
                ));
            }
        }
        DockerError::Unreachable(format!("Docker at {host} is unreachable: {text}"))
    }
}

/// What a failure's chain of causes holds, by type.
#[derive(Debug, Default)]
struct Cause {
    /// The socket refused us (`EACCES`).
    permission_denied: bool,
    /// TLS failed: a certificate rejected by us or by the daemon.
    tls: bool,
}

impl Cause {
    fn of(e: &(dyn std::error::Error + 'static)) -> Self {
        let mut cause = Cause::default();
        let mut next = Some(e);
        while let Some(err) = next {
            cause.tls |= err.is::<tokio_rustls::rustls::Error>();
            next = match err.downcast_ref::<std::io::Error>() {
                Some(io) => {
                    cause.permission_denied |= io.kind() == std::io::ErrorKind::PermissionDenied;
                    // An io::Error's `source` skips the error it wraps
                    // (rustls' among them): step into it instead.
                    match io.get_ref() {
                        Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
                        None => err.source(),
                    }
                }
                None => err.source(),
            };
        }
        cause
    }
}

impl DockerConn {
    /// The running containers (`docker ps`).
    pub async fn list_running(&mut self) -> Result<Vec<Summary>, DockerError> {
        let api = self.api().await?;
        let filters = HashMap::from([("status", vec!["running"])]);
        let opts = ListContainersOptionsBuilder::new()
            .filters(&filters)
            .build();
        match api.list_containers(Some(opts)).await {
            Ok(list) => Ok(list.into_iter().map(summarize).collect()),
            Err(e) => {
                self.reset();
                Err(self.classify(e))
            }
        }
    }
}
