//! The Docker API, through bollard: inspect one container, and follow the
//! events that concern it. The only place that talks to Docker.

use std::collections::HashMap;

use bollard::errors::Error as BollardError;
use bollard::models::EventMessage;
use bollard::query_parameters::{EventsOptionsBuilder, ListContainersOptionsBuilder};
use futures::Stream;

use super::decide::ContainerView;
use crate::common::exit::UsageError;

mod diagnosis;
mod model;
mod tls;
mod transport;

use diagnosis::Diagnosis;
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
    /// `DOCKER_HOST` (or the default socket): where every request goes.
    host: String,
    /// `DOCKER_TLS_VERIFY`'s client configuration, for a `tcp://` host.
    tls: Option<tls::DockerTls>,
    /// `DOCKER_API_VERSION`: the version to speak instead of negotiating one.
    version: Option<bollard::ClientVersion>,
    /// The client, once made (and its version negotiated); dropped by
    /// [`DockerConn::reset`] after a failure so the next request starts over.
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
        let api = transport::kept_alive(&self.host, self.tls.as_ref(), self.version.as_ref())
            .map_err(|e| Diagnosis::of(self).classify(e))?;
        let api = match self.version {
            Some(_) => api,
            None => api
                .negotiate_version()
                .await
                .map_err(|e| Diagnosis::of(self).classify(e))?,
        };
        self.api = Some(api.clone());
        Ok(api)
    }

    /// The client, if one is made: for requests that must not wait for a
    /// new connection (a docker-exec check while Docker is away is a
    /// result that counts neither way).
    pub fn cached(&self) -> Option<&bollard::Docker> {
        self.api.as_ref()
    }

    /// Inspect `name`: `Ok(None)` when no such container exists.
    pub async fn inspect(&mut self, name: &str) -> Result<Option<ContainerView>, DockerError> {
        let answer = self.inspect_later(name).await?.await;
        if answer.is_err() {
            self.reset();
        }
        answer
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
        let (diagnosis, name) = (Diagnosis::of(self), name.to_owned());
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
                Err(Diagnosis::of(self).classify(e))
            }
        }
    }
}
