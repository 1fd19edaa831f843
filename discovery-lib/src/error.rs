//! The crate's single error type.

use std::path::PathBuf;

/// Everything that can go wrong in this crate, named by cause.
///
/// Messages are lowercase, carry no trailing period, and say what to do where
/// there is something to do. Binaries print them with `{:#}` so that the
/// source chain is shown too.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key failed validation (see [`validate_key`](crate::validate_key)).
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The key as given, lossily decoded and possibly shortened.
        key: String,
        /// Why it was refused.
        reason: String,
    },

    /// A prefix failed validation (see [`Prefix`](crate::Prefix)).
    #[error("invalid prefix {prefix:?}: {reason}")]
    InvalidPrefix {
        /// The prefix as given, possibly shortened.
        prefix: String,
        /// Why it was refused.
        reason: String,
    },

    /// An endpoint URL is malformed or uses a scheme that cannot work.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why it was refused.
        reason: String,
    },

    /// An option has a value etcd cannot honour, or options contradict each other.
    #[error("{0}")]
    InvalidOption(String),

    /// A TLS file (CA, certificate or key) or a password file could not be read.
    #[error("cannot read {what} {path:?}: {source}")]
    ReadFile {
        /// Which file it was ("CA certificate", "client key", ...).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// No endpoint answered.
    #[error(
        "etcd did not answer at {endpoints}: {reason} (check --endpoints / ETCDCTL_ENDPOINTS and that etcd is running)"
    )]
    Unreachable {
        /// The endpoints tried, comma-separated.
        endpoints: String,
        /// What the last attempt saw.
        reason: String,
    },

    /// The TLS handshake failed (wrong CA, missing or refused client certificate).
    #[error("TLS handshake with etcd at {endpoints} failed: {reason}")]
    Tls {
        /// The endpoints tried.
        endpoints: String,
        /// What the handshake reported.
        reason: String,
    },

    /// etcd refused the user name or password.
    #[error(
        "etcd refused the credentials of user {user:?}: {reason} (check --user and ETCDCTL_PASSWORD or --password-file)"
    )]
    Authentication {
        /// The user name (never the password).
        user: String,
        /// What etcd said.
        reason: String,
    },

    /// etcd refused an operation for lack of permission.
    #[error(
        "etcd denied {op} on {key:?}: {reason} (grant the user's role access to this key range)"
    )]
    PermissionDenied {
        /// The operation ("put", "watch", ...).
        op: &'static str,
        /// The key or prefix concerned.
        key: String,
        /// What etcd said.
        reason: String,
    },

    /// The requested revision is older than etcd's compaction point.
    #[error(
        "revision {requested} has been compacted; etcd no longer has that history (start from the current state instead)"
    )]
    Compacted {
        /// The revision that was asked for.
        requested: i64,
        /// etcd's compaction revision, when etcd said it.
        compacted: Option<i64>,
    },

    /// A config document under a prefix could not be built, parsed or validated.
    #[error("config under {prefix} is invalid: {reason}")]
    Config {
        /// The config prefix.
        prefix: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An etcd request failed for a reason that retrying may fix.
    #[error("etcd {op} failed: {source}")]
    Request {
        /// The operation ("get", "grant lease", ...).
        op: &'static str,
        /// The client error.
        #[source]
        source: RequestError,
    },

    /// The background task behind a handle has stopped.
    #[error("the {0} task has stopped")]
    Stopped(&'static str),
}

/// The underlying client error of [`Error::Request`], kept opaque so that
/// users of this crate never need to name `etcd_client` types.
#[derive(Debug)]
pub struct RequestError(pub(crate) etcd_client::Error);

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            // tonic's Display for a status is long and repeats itself; keep
            // the code and the message.
            etcd_client::Error::GRpcStatus(s) => {
                write!(f, "{:?}: {}", s.code(), s.message())
            }
            e => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for RequestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0 {
            etcd_client::Error::TransportError(e) => std::error::Error::source(e),
            _ => None,
        }
    }
}

/// A specialised `Result` for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether retrying the same operation later may succeed.
    ///
    /// Network failures, timeouts, a member without a leader and an expired
    /// auth token are transient; bad input, permission errors and
    /// compaction are not.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable { .. } | Error::Stopped(_) => true,
            Error::Request { source, .. } => {
                matches!(classify(&source.0), Class::Transient | Class::LeaseNotFound)
            }
            _ => false,
        }
    }

    pub(crate) fn request(op: &'static str, e: etcd_client::Error) -> Self {
        Error::Request {
            op,
            source: RequestError(e),
        }
    }

    /// Turn a client error into the most specific variant for `op` on `key`.
    pub(crate) fn from_etcd(op: &'static str, key: &str, e: etcd_client::Error) -> Self {
        match classify(&e) {
            Class::PermissionDenied => Error::PermissionDenied {
                op,
                key: key.to_owned(),
                reason: status_message(&e),
            },
            _ => Error::request(op, e),
        }
    }
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(crate) enum Class {
    Transient,
    PermissionDenied,
    Unauthenticated,
    LeaseNotFound,
    Compacted,
    Fatal,
}

pub(crate) fn status_message(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => s.message().to_owned(),
        e => e.to_string(),
    }
}

/// Sort a client error into what the retry loops need to know.
pub(crate) fn classify(e: &etcd_client::Error) -> Class {
    use etcd_client::Error as E;
    use tonic::Code;
    match e {
        E::GRpcStatus(s) => {
            let msg = s.message();
            match s.code() {
                Code::PermissionDenied => Class::PermissionDenied,
                Code::Unauthenticated if msg.contains("invalid auth token") => Class::Transient,
                Code::Unauthenticated => Class::Unauthenticated,
                Code::NotFound if msg.contains("lease not found") => Class::LeaseNotFound,
                Code::OutOfRange if msg.contains("compacted") => Class::Compacted,
                Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => Class::Fatal,
                // Unavailable (no leader, connection refused, member
                // stopping), DeadlineExceeded, Unknown (transport), Aborted,
                // ResourceExhausted, Internal, Cancelled: try again.
                _ => Class::Transient,
            }
        }
        E::LeaseKeepAliveError(m) if m.contains("lease not found") => Class::LeaseNotFound,
        E::InvalidArgs(_) | E::InvalidUri(_) | E::InvalidMetadataValue(_) | E::Utf8Error(_) => {
            Class::Fatal
        }
        _ => Class::Transient,
    }
}
