//! Why a Docker request failed, sorted into "retry" and "fix the
//! configuration" (exit 2), with what to do.

use bollard::errors::Error as BollardError;

use super::{DockerConn, DockerError};

/// What [`Diagnosis::classify`] needs to know about the connection, owned,
/// so that an inspect in flight (no borrow of the connection) can use it.
#[derive(Clone, Debug)]
pub(super) struct Diagnosis {
    /// `DOCKER_HOST`, named in every message.
    host: String,
    /// `DOCKER_CERT_PATH` when TLS is on: a TLS failure names it.
    tls_dir: Option<std::path::PathBuf>,
    /// `DOCKER_API_VERSION` is set: a version refusal is then ours to fix.
    fixed_version: bool,
}

impl Diagnosis {
    /// What `conn` is connected with.
    pub(super) fn of(conn: &DockerConn) -> Self {
        Self {
            host: conn.host.clone(),
            tls_dir: conn.tls.as_ref().map(|t| t.dir.clone()),
            fixed_version: conn.version.is_some(),
        }
    }

    /// Sort a failure into "retry" and "fix the configuration" (exit 2).
    ///
    /// The connection's own failures are read from the error's types
    /// (an `io::Error` of kind `PermissionDenied`, a `rustls::Error`), not
    /// its text. Only the daemon's HTTP 400 answers are read as text: that
    /// text is all the daemon says.
    pub(super) fn classify(&self, e: BollardError) -> DockerError {
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
