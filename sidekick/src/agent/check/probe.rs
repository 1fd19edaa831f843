//! Running one check. tcp and http run on the agent's runtime and spawn no
//! process (a connection, and for http one request on it through hyper's
//! client); exec runs a command on the host, docker-exec one in the
//! container through the Engine API's exec endpoints.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bollard::exec::{CreateExecOptions, StartExecResults};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::Empty;
use hyper::header::{HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::CheckKind;
use super::health::Outcome;

/// The most output of an exec check kept for the log and STATUS=.
const OUTPUT_MAX: usize = 200;

/// One check, resolved for one container: what to run against which address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// What to run.
    pub kind: CheckKind,
    /// The registered address (the IPv4 one when both are registered).
    pub ip: IpAddr,
    /// The registered port, if any.
    pub port: Option<u16>,
    /// The container's id, for docker-exec.
    pub container_id: String,
    /// The container's name, for exec's `DISCOVERY_CONTAINER`.
    pub container_name: String,
}

impl Probe {
    /// Run the check once, within `timeout`. `docker` is the engine's
    /// client, for docker-exec (`None` while Docker is unreachable).
    pub fn run(
        &self,
        timeout: Duration,
        docker: Option<bollard::Docker>,
    ) -> impl Future<Output = Outcome> + Send + 'static {
        let probe = self.clone();
        async move {
            let run = async {
                match &probe.kind {
                    CheckKind::Tcp => probe.tcp().await,
                    CheckKind::Http { path } => probe.http(path).await,
                    CheckKind::Exec { argv } => probe.exec(argv).await,
                    CheckKind::DockerExec { argv } => match docker {
                        Some(api) => probe.docker_exec(&api, argv).await,
                        None => Outcome::Unknown("Docker is unreachable".into()),
                    },
                }
            };
            match tokio::time::timeout(timeout, run).await {
                Ok(outcome) => outcome,
                Err(_) => Outcome::Critical(format!("no answer within {timeout:?}")),
            }
        }
    }

    fn addr(&self) -> Option<SocketAddr> {
        self.port.map(|p| SocketAddr::new(self.ip, p))
    }

    async fn connect(&self) -> Result<TcpStream, Outcome> {
        let Some(addr) = self.addr() else {
            return Err(Outcome::Critical("no port to connect to".into()));
        };
        TcpStream::connect(addr)
            .await
            .map_err(|e| Outcome::Critical(format!("cannot connect to {addr}: {e}")))
    }

    async fn tcp(&self) -> Outcome {
        match self.connect().await {
            Ok(_) => Outcome::Passing,
            Err(o) => o,
        }
    }

    /// One GET on a new connection, as Consul's HTTP check does (it turns
    /// keep-alive off). Redirects are not followed: a check names the
    /// container's own address, and a redirect could point anywhere.
    async fn http(&self, path: &str) -> Outcome {
        let stream = match self.connect().await {
            Ok(s) => s,
            Err(o) => return o,
        };
        let (mut sender, conn) =
            match hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                .await
            {
                Ok(pair) => pair,
                Err(e) => return Outcome::Critical(format!("HTTP: {e}")),
            };
        let host = self.addr().map(|a| a.to_string()).unwrap_or_default();
        let request = hyper::Request::get(path)
            .header(HOST, host)
            .header(USER_AGENT, concat!("sidekick/", env!("CARGO_PKG_VERSION")))
            .body(Empty::new());
        let request = match request {
            Ok(r) => r,
            Err(e) => return Outcome::Critical(format!("HTTP request for {path:?}: {e}")),
        };
        // The connection is driven in this task, beside the request: no
        // task of its own, and it ends with the check. A server that closes
        // the connection after its answer ends `conn` first; the answer is
        // then already handed to the request.
        let answer = sender.send_request(request);
        tokio::pin!(answer);
        let answer = tokio::select! {
            r = &mut answer => r,
            _ = conn => answer.await,
        };
        match answer {
            Ok(resp) => status(resp.status()),
            Err(e) => Outcome::Critical(format!("HTTP: {e}")),
        }
    }

    /// The command on the host, with the address in its environment and
    /// without etcd's credentials; killed if it outlives the timeout.
    async fn exec(&self, argv: &[String]) -> Outcome {
        let Some((prog, args)) = argv.split_first() else {
            return Outcome::Critical("no command".into());
        };
        let mut cmd = tokio::process::Command::new(prog);
        cmd.args(args)
            .env("DISCOVERY_IP", self.ip.to_string())
            .env(
                "DISCOVERY_PORT",
                self.port.map(|p| p.to_string()).unwrap_or_default(),
            )
            .env("DISCOVERY_CONTAINER", &self.container_name)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        for secret in crate::common::etcd_args::SECRET_ENV {
            cmd.env_remove(secret);
        }
        if std::env::var("ETCDCTL_USER").is_ok_and(|u| u.contains(':')) {
            cmd.env_remove("ETCDCTL_USER");
        }
        match cmd.output().await {
            Ok(out) => {
                let mut text = out.stdout;
                text.extend_from_slice(&out.stderr);
                exit(out.status.code(), &text)
            }
            Err(e) => Outcome::Critical(format!("cannot run {prog}: {e}")),
        }
    }

    /// The command inside the container: create an exec, run it attached
    /// until its output ends, then read its exit code.
    async fn docker_exec(&self, api: &bollard::Docker, argv: &[String]) -> Outcome {
        let unknown = |e: bollard::errors::Error| match e {
            // The container is gone or not running: its events say so,
            // and this result says nothing about its health.
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404 | 409,
                message,
            } => Outcome::Unknown(format!("docker exec: {}", message.trim())),
            e => Outcome::Unknown(format!("docker exec: {}", discovery::error_chain(&e))),
        };
        let opts = CreateExecOptions {
            cmd: Some(argv.to_vec()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let exec = match api.create_exec(&self.container_id, opts).await {
            Ok(e) => e,
            Err(e) => return unknown(e),
        };
        let mut text = Vec::new();
        match api.start_exec(&exec.id, None).await {
            Ok(StartExecResults::Attached { mut output, .. }) => {
                while let Some(chunk) = output.next().await {
                    match chunk {
                        Ok(c) if text.len() < OUTPUT_MAX => text.extend_from_slice(&c.into_bytes()),
                        Ok(_) => {}
                        Err(e) => return unknown(e),
                    }
                }
            }
            Ok(StartExecResults::Detached) => {}
            Err(e) => return unknown(e),
        }
        match api.inspect_exec(&exec.id).await {
            Ok(i) => exit(i.exit_code.and_then(|c| i32::try_from(c).ok()), &text),
            Err(e) => unknown(e),
        }
    }
}

/// An HTTP status as Consul reads it: 2xx passes, 429 warns, the rest is
/// critical.
fn status(s: hyper::StatusCode) -> Outcome {
    match s.as_u16() {
        200..=299 => Outcome::Passing,
        429 => Outcome::Warning(format!("HTTP {s}")),
        300..=399 => Outcome::Critical(format!(
            "HTTP {s} (redirects are not followed: check the path it points to)"
        )),
        _ => Outcome::Critical(format!("HTTP {s}")),
    }
}

/// An exit code as Consul reads a script check's: 0 passes, 1 warns, the
/// rest (or a signal) is critical. The output's first line is the reason.
fn exit(code: Option<i32>, output: &[u8]) -> Outcome {
    let text = String::from_utf8_lossy(output);
    let line: String = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .chars()
        .take(OUTPUT_MAX)
        .collect();
    let say = |what: String| {
        if line.is_empty() {
            what
        } else {
            format!("{what}: {line}")
        }
    };
    match code {
        Some(0) => Outcome::Passing,
        Some(1) => Outcome::Warning(say("exit code 1".into())),
        Some(c) => Outcome::Critical(say(format!("exit code {c}"))),
        None => Outcome::Critical(say("killed by a signal".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_exit_codes_as_consul_reads_them() {
        use hyper::StatusCode as S;
        assert_eq!(status(S::OK), Outcome::Passing);
        assert_eq!(status(S::NO_CONTENT), Outcome::Passing);
        assert!(matches!(status(S::TOO_MANY_REQUESTS), Outcome::Warning(_)));
        for s in [S::FOUND, S::NOT_FOUND, S::SERVICE_UNAVAILABLE] {
            assert!(matches!(status(s), Outcome::Critical(_)), "{s}");
        }
        assert_eq!(exit(Some(0), b"ok"), Outcome::Passing);
        assert_eq!(
            exit(Some(1), b"\n  disk 91% full\nmore"),
            Outcome::Warning("exit code 1: disk 91% full".into())
        );
        assert_eq!(exit(Some(2), b""), Outcome::Critical("exit code 2".into()));
        assert!(matches!(exit(None, b""), Outcome::Critical(_)));
    }
}
