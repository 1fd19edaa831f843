//! The Docker API, through bollard: inspect one container, and follow the
//! events that concern it. The only place that talks to Docker.

use std::collections::HashMap;

use bollard::errors::Error as BollardError;
use bollard::models::{EventMessage, HealthStatusEnum};
use bollard::query_parameters::EventsOptionsBuilder;
use futures::Stream;

use super::decide::ContainerView;
use crate::common::exit::UsageError;

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
/// (Debian's 20.10 speaks 1.41), or restarted with a new version.
#[derive(Debug)]
pub struct DockerConn {
    host: String,
    api: Option<bollard::Docker>,
}

/// The default Docker socket.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

impl DockerConn {
    /// Read `DOCKER_HOST` as the Docker CLI does; a scheme bollard cannot
    /// use is a usage error.
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
        Ok(Self { host, api: None })
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
        let api = kept_alive(&self.host).map_err(|e| classify(&self.host, e))?;
        let api = api
            .negotiate_version()
            .await
            .map_err(|e| classify(&self.host, e))?;
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
                Err(classify(&self.host, e))
            }
        }
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
fn kept_alive(host: &str) -> Result<bollard::Docker, BollardError> {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use std::sync::Arc;

    const TIMEOUT_SECS: u64 = 120;
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
                Box::pin(async move { client.request(req).await.map_err(BollardError::from) })
            },
            Some(format!("unix://{hex}")),
            TIMEOUT_SECS,
            bollard::API_DEFAULT_VERSION,
        )
    } else {
        let client = Arc::new(builder.build_http());
        bollard::Docker::connect_with_custom_transport(
            move |req: bollard::BollardRequest| {
                let client = Arc::clone(&client);
                Box::pin(async move { client.request(req).await.map_err(BollardError::from) })
            },
            Some(host.replacen("tcp://", "http://", 1)),
            TIMEOUT_SECS,
            bollard::API_DEFAULT_VERSION,
        )
    }
}

fn classify(host: &str, e: BollardError) -> DockerError {
    let text = discovery::error_chain(&e);
    let lower = text.to_lowercase();
    if lower.contains("permission denied") {
        return DockerError::Refused(format!(
            "Docker at {host} refused us: {text} (run sidekick as root or as a member of the docker group)"
        ));
    }
    DockerError::Unreachable(format!("Docker at {host} is unreachable: {text}"))
}

fn view(c: bollard::models::ContainerInspectResponse) -> ContainerView {
    let state = c.state.unwrap_or_default();
    let health = state.health.and_then(|h| h.status).and_then(|s| match s {
        HealthStatusEnum::HEALTHY => Some("healthy".to_owned()),
        HealthStatusEnum::UNHEALTHY => Some("unhealthy".to_owned()),
        HealthStatusEnum::STARTING => Some("starting".to_owned()),
        HealthStatusEnum::NONE | HealthStatusEnum::EMPTY => None,
    });
    let networks = c
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, ep)| (name, ep.ip_address.unwrap_or_default()))
        .collect();
    ContainerView {
        id: c.id.unwrap_or_default(),
        name: c
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned(),
        running: state.running.unwrap_or(false),
        paused: state.paused.unwrap_or(false),
        restarting: state.restarting.unwrap_or(false),
        started_at: state.started_at.unwrap_or_default(),
        networks,
        health,
    }
}

/// What an event says, reduced to what the sidekick needs.
#[derive(Debug, Clone)]
pub struct DockerEvent {
    /// `container` or `network`.
    pub kind: String,
    /// `start`, `die`, `health_status: healthy`, `connect`, ...
    pub action: String,
    /// The container's id (the actor for container events, the
    /// `container` attribute for network events).
    pub container_id: String,
    /// The container's name, when the event carries it.
    pub container_name: Option<String>,
    /// For `kill`: the signal sent.
    pub signal: Option<String>,
    /// The event's time in nanoseconds, for resubscribing.
    pub time_nano: i64,
}

impl DockerEvent {
    /// Reduce a bollard event.
    pub fn from_message(m: &EventMessage) -> Self {
        let kind = m.typ.map(|t| t.to_string()).unwrap_or_default();
        let actor = m.actor.clone().unwrap_or_default();
        let attrs = actor.attributes.unwrap_or_default();
        let (container_id, container_name) = if kind == "network" {
            (attrs.get("container").cloned().unwrap_or_default(), None)
        } else {
            (actor.id.unwrap_or_default(), attrs.get("name").cloned())
        };
        Self {
            kind,
            action: m.action.clone().unwrap_or_default(),
            container_id,
            container_name,
            signal: attrs.get("signal").cloned(),
            time_nano: m
                .time_nano
                .or(m.time.map(|t| t * 1_000_000_000))
                .unwrap_or(0),
        }
    }

    /// Whether this event concerns the container called `name` (or with
    /// id `id`, once known).
    pub fn concerns(&self, name: &str, id: Option<&str>) -> bool {
        self.container_name.as_deref() == Some(name)
            || id.is_some_and(|id| !id.is_empty() && self.container_id == id)
            || (!self.container_id.is_empty()
                && self.container_id.starts_with(name)
                && name.len() >= 12)
    }
}
