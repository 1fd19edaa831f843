//! Connection options shared by the library and both tools: endpoints,
//! TLS, credentials and timeouts, checked before any I/O; and `connect`,
//! which makes a [`Client`] and proves etcd answers.

mod establish;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

/// A password that never shows up in `Debug` output or logs.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// Wrap a password.
    pub fn new(p: impl Into<String>) -> Self {
        Self(p.into())
    }

    /// Read a password from the first line of a file (a trailing newline is dropped).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
            what: "password file",
            path: path.to_owned(),
            source,
        })?;
        let first = text.lines().next().unwrap_or("");
        Ok(Self(first.to_owned()))
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// How to reach etcd: endpoints, TLS, credentials and timeouts.
///
/// The defaults match etcdctl's (`127.0.0.1:2379`, 2 s dial timeout, 5 s
/// request timeout), with HTTP/2 keep-alive on so that a dead or frozen
/// member is noticed on idle connections too.
///
/// ```no_run
/// # async fn f() -> Result<(), discovery::Error> {
/// use std::time::Duration;
/// let client = discovery::ConnectOptions::new()
///     .with_endpoints(["http://10.0.0.1:2379", "http://10.0.0.2:2379"])
///     .with_request_timeout(Duration::from_secs(3))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// The etcd members to dial, as `http(s)://host:port`.
    endpoints: Vec<String>,
    /// The CA bundle that verifies the members' certificates (`--cacert`).
    ca_file: Option<PathBuf>,
    /// Our client certificate, for etcd's `--client-cert-auth` (`--cert`).
    cert_file: Option<PathBuf>,
    /// The private key of `cert_file` (`--tls-key`).
    key_file: Option<PathBuf>,
    /// The etcd user to authenticate as (`--user`); `None` when auth is off.
    user: Option<String>,
    /// The password of `user`; never logged.
    password: Option<Password>,
    /// How long to wait for a connection to a member before trying the next.
    dial_timeout: Duration,
    /// How long one request may take before it is retried on another member.
    request_timeout: Duration,
    /// HTTP/2 pings (interval, timeout): off unless asked for, see
    /// [`ConnectOptions::with_keep_alive`].
    keep_alive: Option<(Duration, Duration)>,
    /// Accept any server certificate: for tests and debugging only.
    insecure_skip_tls_verify: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// etcdctl's default endpoint.
pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:2379";

impl ConnectOptions {
    /// Defaults: `127.0.0.1:2379`, no TLS, no auth.
    pub const fn new() -> Self {
        Self {
            endpoints: Vec::new(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            user: None,
            password: None,
            dial_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            keep_alive: None,
            insecure_skip_tls_verify: false,
        }
    }

    /// Read etcdctl's environment: `ETCDCTL_ENDPOINTS` (comma-separated),
    /// `ETCDCTL_CACERT`, `ETCDCTL_CERT`, `ETCDCTL_KEY`, `ETCDCTL_USER`
    /// (`name` or `name:password`), `ETCDCTL_PASSWORD`,
    /// `ETCDCTL_DIAL_TIMEOUT` and `ETCDCTL_COMMAND_TIMEOUT` (`2s`, `500ms`),
    /// and `ETCDCTL_INSECURE_SKIP_TLS_VERIFY` (`true`).
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`ConnectOptions::from_env`] over any variable source.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut o = Self::new();
        let get = |name: &str| get(name).filter(|v| !v.is_empty());
        if let Some(eps) = get("ETCDCTL_ENDPOINTS") {
            o = o.with_endpoints(eps.split(',').map(str::trim).filter(|e| !e.is_empty()));
        }
        o.ca_file = get("ETCDCTL_CACERT").map(PathBuf::from);
        o.cert_file = get("ETCDCTL_CERT").map(PathBuf::from);
        o.key_file = get("ETCDCTL_KEY").map(PathBuf::from);
        if let Some(user) = get("ETCDCTL_USER") {
            match user.split_once(':') {
                Some((name, password)) => {
                    o.user = Some(name.to_owned());
                    o.password = Some(Password::new(password));
                }
                None => o.user = Some(user),
            }
        }
        if let Some(p) = get("ETCDCTL_PASSWORD") {
            o.password = Some(Password::new(p));
        }
        if let Some(v) = get("ETCDCTL_INSECURE_SKIP_TLS_VERIFY") {
            o.insecure_skip_tls_verify = match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => {
                    return Err(Error::InvalidOption(format!(
                        "ETCDCTL_INSECURE_SKIP_TLS_VERIFY={v:?} is not true or false"
                    )));
                }
            };
        }
        for (var, slot) in [
            ("ETCDCTL_DIAL_TIMEOUT", &mut o.dial_timeout),
            ("ETCDCTL_COMMAND_TIMEOUT", &mut o.request_timeout),
        ] {
            if let Some(v) = get(var) {
                *slot = crate::parse_duration(&v).map_err(|e| {
                    Error::InvalidOption(format!("{var}={v:?} is not a duration: {e}"))
                })?;
            }
        }
        Ok(o)
    }

    /// Accept any certificate from etcd, as etcdctl's
    /// `--insecure-skip-tls-verify` does: the connection is encrypted but
    /// anyone in the path can impersonate etcd. For tests and first steps
    /// only; pass the CA instead ([`ConnectOptions::with_ca_file`]).
    pub const fn with_insecure_skip_tls_verify(mut self, skip: bool) -> Self {
        self.insecure_skip_tls_verify = skip;
        self
    }

    /// Whether [`ConnectOptions::with_insecure_skip_tls_verify`] is on.
    pub const fn insecure_skip_tls_verify(&self) -> bool {
        self.insecure_skip_tls_verify
    }

    /// The etcd client URLs, such as `http://10.0.0.1:2379`. A bare
    /// `host:port` gets `http://`, or `https://` when a CA is set.
    pub fn with_endpoints<I, S>(mut self, endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.endpoints = endpoints.into_iter().map(Into::into).collect();
        self
    }

    /// The CA that signed etcd's server certificate (etcdctl `--cacert`).
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// A client certificate and its private key, for etcd's
    /// `--client-cert-auth` (etcdctl `--cert` and `--key`).
    pub fn with_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.cert_file = Some(cert.into());
        self.key_file = Some(key.into());
        self
    }

    /// Only the client certificate; pair it with [`ConnectOptions::with_client_key`].
    pub fn with_client_cert_file(mut self, cert: impl Into<PathBuf>) -> Self {
        self.cert_file = Some(cert.into());
        self
    }

    /// Only the client key; pair it with [`ConnectOptions::with_client_cert_file`].
    pub fn with_client_key(mut self, key: impl Into<PathBuf>) -> Self {
        self.key_file = Some(key.into());
        self
    }

    /// Authenticate as `user` (etcd's `Authenticate` RPC). An expired or
    /// invalid token is renewed with these credentials on the next request.
    pub fn with_user(mut self, user: impl Into<String>, password: Password) -> Self {
        self.user = Some(user.into());
        self.password = Some(password);
        self
    }

    /// Set only the user name, keeping any password already set.
    pub fn with_user_name(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Set only the password, keeping any user name already set.
    pub fn with_password(mut self, password: Password) -> Self {
        self.password = Some(password);
        self
    }

    /// How long to wait for a TCP (and TLS) connection to an endpoint.
    pub const fn with_dial_timeout(mut self, d: Duration) -> Self {
        self.dial_timeout = d;
        self
    }

    /// How long a unary request (get, put, grant, ...) may take.
    pub const fn with_request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    /// HTTP/2 keep-alive: while a stream is open, ping after `interval`
    /// without traffic, and drop the connection if no answer comes within
    /// `timeout`. etcd refuses pings more frequent than its
    /// `--grpc-keepalive-min-time` (5 s by default).
    ///
    /// Off by default: every stream this library opens already proves its
    /// member alive on its own (a lease keep-alive must be answered within
    /// half an interval, an idle watch asks for a progress report, every
    /// request has a deadline), and each failure moves to another member.
    /// The pings only added cost: measured, about 40 % of an idle
    /// sidekick's CPU (0.9 ms a minute beside 1.4 ms, `make bench` P4).
    pub const fn with_keep_alive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keep_alive = Some((interval, timeout));
        self
    }

    /// The endpoints as given, or the default.
    pub fn endpoints(&self) -> Vec<String> {
        if self.endpoints.is_empty() {
            vec![DEFAULT_ENDPOINT.to_owned()]
        } else {
            self.endpoints.clone()
        }
    }

    /// The user name, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    fn tls_enabled(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_follows_etcdctl() {
        let env = |k: &str| match k {
            "ETCDCTL_ENDPOINTS" => Some("h1:2379, h2:2379".to_owned()),
            "ETCDCTL_USER" => Some("root:s3cret".to_owned()),
            "ETCDCTL_DIAL_TIMEOUT" => Some("500ms".to_owned()),
            _ => None,
        };
        let o = ConnectOptions::from_lookup(env).unwrap();
        assert_eq!(o.endpoints(), vec!["h1:2379", "h2:2379"]);
        assert_eq!(o.user(), Some("root"));
        assert_eq!(o.dial_timeout, Duration::from_millis(500));
        assert!(!format!("{o:?}").contains("s3cret"));
        assert!(o.validate().is_ok());

        let o =
            ConnectOptions::from_lookup(|k| (k == "ETCDCTL_USER").then(|| "bob".into())).unwrap();
        assert!(
            o.validate()
                .unwrap_err()
                .to_string()
                .contains("no password")
        );
    }
}
