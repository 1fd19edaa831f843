//! The crate's single error type.

use std::path::PathBuf;

use crate::setting::Setting;

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

    /// A connection setting is missing that another one needs (a client
    /// certificate without its key, a user without a password).
    #[error("{reason}: set {missing}")]
    Incomplete {
        /// Why it is needed.
        reason: String,
        /// What to set.
        missing: Setting,
    },

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
        "etcd did not answer at {endpoints}: {reason} (check the endpoints, ETCDCTL_ENDPOINTS, and that etcd is running)"
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
        /// The settings that may fix it (the CA, the client certificate).
        check: &'static [Setting],
    },

    /// etcd refused the user name or password.
    #[error(
        "etcd refused the credentials of user {user:?}: {reason} (check the user name and its password: ETCDCTL_USER, ETCDCTL_PASSWORD)"
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
            Error::Request { source, .. } => matches!(
                classify(&source.0),
                Class::Unavailable | Class::Transient | Class::StaleToken | Class::LeaseNotFound
            ),
            _ => false,
        }
    }

    /// The connection settings this error is about, so that a tool can
    /// name its own flags for them (the messages name only etcdctl's
    /// environment, which [`ConnectOptions::from_env`](crate::ConnectOptions::from_env) reads).
    pub fn settings(&self) -> &'static [Setting] {
        match self {
            Error::Unreachable { .. } => &[Setting::Endpoints],
            Error::Tls { check, .. } => check,
            Error::Authentication { .. } => &[Setting::User, Setting::Password],
            Error::Incomplete { missing, .. } => missing.as_slice(),
            _ => &[],
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

/// What an etcd failure means to the loops that retry. [`classify`] and
/// [`classify_cancel`] are the only places that read etcd's wording; every
/// loop (requests, the prefix watch, the registration) acts on this.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(crate) enum Class {
    /// The member could not be asked or could not serve (no connection, no
    /// leader, stopping): another member may.
    Unavailable,
    /// Anything else worth retrying later (a timeout, an aborted request).
    Transient,
    /// etcd no longer knows our auth token (it restarted, or the token's
    /// TTL passed): authenticate again and retry, as often as it happens.
    StaleToken,
    /// etcd says the user may not do this. etcd 3.4 also cancels a watch
    /// made with a forgotten token this way, so a watch retries once with a
    /// fresh token; a second refusal is real.
    PermissionDenied,
    /// The credentials themselves were refused.
    Unauthenticated,
    /// The lease expired or was revoked.
    LeaseNotFound,
    /// The revision asked for was compacted away.
    Compacted,
    /// The revision asked for is newer than etcd's.
    FutureRevision,
    /// A request etcd will never accept as it is.
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
                // etcd's ErrGRPCInvalidAuthToken and ErrGRPCAuthOldRevision.
                Code::Unauthenticated | Code::InvalidArgument if stale_token(msg) => {
                    Class::StaleToken
                }
                Code::Unauthenticated => Class::Unauthenticated,
                // etcd answers NotFound only for a lease (a missing key is
                // an empty range, not an error).
                Code::NotFound => Class::LeaseNotFound,
                // ErrGRPCCompacted and ErrGRPCFutureRev share OutOfRange.
                Code::OutOfRange if msg.contains("compacted") => Class::Compacted,
                Code::OutOfRange if msg.contains("future revision") => Class::FutureRevision,
                Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => Class::Fatal,
                Code::Unavailable => Class::Unavailable,
                // tonic reports a connection that could not be made or broke
                // as Unknown with the transport's words.
                Code::Unknown if transport_words(msg) => Class::Unavailable,
                // DeadlineExceeded, Aborted, ResourceExhausted, Internal,
                // Cancelled: try again.
                _ => Class::Transient,
            }
        }
        E::TransportError(_) | E::IoError(_) => Class::Unavailable,
        E::LeaseKeepAliveError(m) if m.contains("lease not found") => Class::LeaseNotFound,
        E::InvalidArgs(_) | E::InvalidUri(_) | E::InvalidMetadataValue(_) | E::Utf8Error(_) => {
            Class::Fatal
        }
        e if transport_words(&chain(e)) => Class::Unavailable,
        _ => Class::Transient,
    }
}

/// What etcd means by cancelling a watch (`WatchResponse::cancel_reason`,
/// a status rendered as text: no code to go by).
pub(crate) fn classify_cancel(reason: &str) -> Class {
    if stale_token(reason) {
        Class::StaleToken
    } else if reason.contains("permission denied") {
        Class::PermissionDenied
    } else if reason.contains("compacted") {
        Class::Compacted
    } else {
        // A member that lost its leader, or is stopping: elsewhere.
        Class::Unavailable
    }
}

fn stale_token(msg: &str) -> bool {
    msg.contains("invalid auth token") || msg.contains("revision of auth store is old")
}

fn transport_words(msg: &str) -> bool {
    let m = msg.to_lowercase();
    m.contains("tcp connect error")
        || m.contains("connection refused")
        || m.contains("error trying to connect")
        || m.contains("transport error")
}

/// An error and all its sources, joined with `: `, without repeats (tonic
/// and hyper repeat their causes in their own messages). For a gRPC status,
/// its message without tonic's decoration.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let s = match err.downcast_ref::<etcd_client::Error>() {
            Some(etcd_client::Error::GRpcStatus(st)) => st.message().to_owned(),
            _ => err.to_string(),
        };
        if !s.is_empty() && !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = err.source();
    }
    parts.join(": ")
}

pub(crate) use error_chain as chain;
