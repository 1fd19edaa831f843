//! Connection options shared by the library and both tools: endpoints,
//! TLS, credentials and timeouts, checked before any I/O; and `connect`,
//! which makes a [`Client`] and proves etcd answers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::client::Client;
use crate::error::{Class, Error, Result, chain, classify};
use crate::pool::Pool;
use crate::retry::Backoff;

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
    endpoints: Vec<String>,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    user: Option<String>,
    password: Option<Password>,
    dial_timeout: Duration,
    request_timeout: Duration,
    keep_alive_interval: Duration,
    keep_alive_timeout: Duration,
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
            // etcd's server refuses pings more often than every 5 s
            // (--grpc-keepalive-min-time); stay at that floor.
            keep_alive_interval: Duration::from_secs(5),
            keep_alive_timeout: Duration::from_secs(3),
        }
    }

    /// Read etcdctl's environment: `ETCDCTL_ENDPOINTS` (comma-separated),
    /// `ETCDCTL_CACERT`, `ETCDCTL_CERT`, `ETCDCTL_KEY`, `ETCDCTL_USER`
    /// (`name` or `name:password`), `ETCDCTL_PASSWORD`,
    /// `ETCDCTL_DIAL_TIMEOUT` and `ETCDCTL_COMMAND_TIMEOUT` (`2s`, `500ms`).
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

    /// HTTP/2 keep-alive: ping after `interval` without traffic, drop the
    /// connection if no answer comes within `timeout`. etcd refuses pings
    /// more frequent than its `--grpc-keepalive-min-time` (5 s by default).
    pub const fn with_keep_alive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keep_alive_interval = interval;
        self.keep_alive_timeout = timeout;
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

    /// Check everything that can be checked without a network: endpoint
    /// syntax, TLS files that exist, a password with a user. Returns the
    /// endpoints as full URLs.
    pub fn validate(&self) -> Result<Vec<String>> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => {
                return Err(Error::InvalidOption(
                    "a client certificate needs its private key: set --tls-key (or ETCDCTL_KEY) too".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(Error::InvalidOption(
                    "a client key needs its certificate: set --cert (or ETCDCTL_CERT) too".into(),
                ));
            }
            _ => {}
        }
        if self.password.is_some() && self.user.is_none() {
            return Err(Error::InvalidOption(
                "a password was given without a user: set --user or ETCDCTL_USER".into(),
            ));
        }
        if self.user.is_some() && self.password.is_none() {
            return Err(Error::InvalidOption(format!(
                "user {:?} has no password: set ETCDCTL_PASSWORD or --password-file (never on the command line)",
                self.user.as_deref().unwrap_or_default()
            )));
        }
        for d in [self.dial_timeout, self.request_timeout] {
            if d.is_zero() {
                return Err(Error::InvalidOption(
                    "timeouts must be greater than zero".into(),
                ));
            }
        }
        let tls = self.tls_enabled();
        let mut urls = Vec::new();
        for ep in self.endpoints() {
            urls.push(normalize_endpoint(&ep, tls)?);
        }
        if urls.iter().any(|u| u.starts_with("https://")) && self.ca_file.is_none() {
            return Err(Error::InvalidOption(
                "https endpoints need the CA that signed etcd's certificate: set --cacert or ETCDCTL_CACERT".into(),
            ));
        }
        for (path, what) in [
            (&self.ca_file, "CA certificate"),
            (&self.cert_file, "client certificate"),
            (&self.key_file, "client key"),
        ] {
            if let Some(p) = path {
                if let Err(source) = std::fs::metadata(p) {
                    return Err(Error::ReadFile {
                        what,
                        path: p.clone(),
                        source,
                    });
                }
            }
        }
        Ok(urls)
    }

    fn client_options(&self) -> Result<etcd_client::ConnectOptions> {
        let mut o = etcd_client::ConnectOptions::new()
            .with_connect_timeout(self.dial_timeout)
            .with_timeout(self.request_timeout)
            .with_keep_alive(self.keep_alive_interval, self.keep_alive_timeout)
            // Pings only while a stream is open: etcd counts idle pings
            // against the client and answers too many with GOAWAY.
            .with_keep_alive_while_idle(false)
            // A member that lost its leader refuses the request (and cancels
            // watches) instead of serving stale data; we then move on.
            .with_require_leader(true)
            .with_auto_token_refresh(true);
        if let (Some(user), Some(pw)) = (&self.user, &self.password) {
            o = o.with_user(user.clone(), pw.expose().to_owned());
        }
        if self.tls_enabled() {
            let mut tls = etcd_client::TlsOptions::new();
            if let Some(ca) = &self.ca_file {
                let pem = read(ca, "CA certificate")?;
                tls = tls.ca_certificate(etcd_client::Certificate::from_pem(pem));
            }
            if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
                let cert = read(cert, "client certificate")?;
                let key = read(key, "client key")?;
                tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
            }
            o = o.with_tls(tls);
        }
        Ok(o)
    }

    /// Connect and check that etcd answers.
    ///
    /// etcd-client's own `connect` does no I/O without auth, so it succeeds
    /// while etcd is down; this one asks a member for its status and fails
    /// with [`Error::Unreachable`] (naming the endpoints tried),
    /// [`Error::Tls`] or [`Error::Authentication`] if it cannot.
    pub async fn connect(&self) -> Result<Client> {
        let urls = self.validate()?;
        let joined = urls.join(", ");
        let opts = self.client_options()?;
        let client = Client::new(Pool::new(urls.clone(), opts), self.request_timeout);
        let status = client
            .call("status", |c| {
                let mut m = c.maintenance();
                async move { m.status().await }
            })
            .await;
        match status {
            Ok(_) => Ok(client),
            Err(e) => Err(self.diagnose(&urls, &joined, &e).await),
        }
    }

    /// Turn a failed connection into the most useful error, asking the
    /// endpoints directly when TLS may be the reason.
    async fn diagnose(&self, urls: &[String], joined: &str, e: &etcd_client::Error) -> Error {
        let err = self.connect_error(joined, e);
        if !matches!(err, Error::Unreachable { .. }) {
            return err;
        }
        if let Some(ca) = &self.ca_file {
            let client = self.cert_file.as_deref().zip(self.key_file.as_deref());
            for url in urls {
                if let Some(reason) =
                    crate::tls_probe::why_tls_fails(url, ca, client, self.dial_timeout).await
                {
                    return Error::Tls {
                        endpoints: url.clone(),
                        reason,
                    };
                }
            }
        }
        err
    }

    /// [`ConnectOptions::connect`], retrying with backoff for as long as the
    /// failure is transient (etcd down or unreachable). Configuration errors
    /// (bad endpoint, TLS refused, wrong password) return at once.
    ///
    /// Daemons use this at startup so that unit ordering does not matter;
    /// `select!` it against a shutdown signal.
    pub async fn connect_retrying(&self) -> Result<Client> {
        let mut backoff = Backoff::for_watch();
        loop {
            match self.connect().await {
                Ok(c) => return Ok(c),
                Err(e) if e.is_transient() => {
                    let d = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in = ?d, "etcd not reachable yet");
                    tokio::time::sleep(d).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn connect_error(&self, endpoints: &str, e: &etcd_client::Error) -> Error {
        let reason = chain(e);
        let lower = reason.to_lowercase();
        if let Some(user) = &self.user {
            if lower.contains("authentication failed") || classify(e) == Class::Unauthenticated {
                return Error::Authentication {
                    user: user.clone(),
                    reason,
                };
            }
        }
        if self.tls_enabled()
            && (lower.contains("certificate")
                || lower.contains("tls")
                || lower.contains("handshake")
                || lower.contains("alert"))
        {
            return Error::Tls {
                endpoints: endpoints.to_owned(),
                reason: crate::tls_probe::explain(reason, self.cert_file.is_some()),
            };
        }
        if classify(e) == Class::PermissionDenied {
            return Error::from_etcd("status", "", clone_status(e));
        }
        Error::Unreachable {
            endpoints: endpoints.to_owned(),
            reason,
        }
    }
}

fn clone_status(e: &etcd_client::Error) -> etcd_client::Error {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            etcd_client::Error::GRpcStatus(tonic::Status::new(s.code(), s.message()))
        }
        e => etcd_client::Error::Internal(e.to_string()),
    }
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::ReadFile {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Turn `host:port`, `http://host:port` or `https://host:port` into a full URL.
fn normalize_endpoint(ep: &str, tls: bool) -> Result<String> {
    let bad = |reason: String| Error::InvalidEndpoint {
        endpoint: ep.to_owned(),
        reason,
    };
    let (scheme, rest) = match ep.split_once("://") {
        Some(("http", rest)) => ("http", rest),
        Some(("https", rest)) => ("https", rest),
        Some((other, _)) => {
            return Err(bad(format!(
                "the scheme {other:?} is not supported; use http://host:port or https://host:port"
            )));
        }
        None => (if tls { "https" } else { "http" }, ep),
    };
    if scheme == "http" && tls {
        return Err(bad(
            "it is http:// but TLS options (--cacert/--cert/--tls-key) are set; use https://"
                .into(),
        ));
    }
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains('/') {
        return Err(bad(
            "etcd endpoints have no path; use scheme://host:port".into()
        ));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        match v6.split_once("]:") {
            Some((h, p)) => (h, p),
            None => return Err(bad("an IPv6 endpoint needs a port: [addr]:port".into())),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, p),
            None => {
                return Err(bad(
                    "it has no port; etcd's client port is usually 2379".into()
                ));
            }
        }
    };
    if host.is_empty() {
        return Err(bad("the host is empty".into()));
    }
    if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(
            "the host contains whitespace or control characters".into()
        ));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => {
            return Err(bad(format!(
                "the port {port:?} is not a number from 1 to 65535"
            )));
        }
    }
    Ok(format!("{scheme}://{authority}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_normalised_or_refused() {
        assert_eq!(
            normalize_endpoint("127.0.0.1:2379", false).unwrap(),
            "http://127.0.0.1:2379"
        );
        assert_eq!(
            normalize_endpoint("127.0.0.1:2379", true).unwrap(),
            "https://127.0.0.1:2379"
        );
        assert_eq!(
            normalize_endpoint("http://h:1/", false).unwrap(),
            "http://h:1"
        );
        assert_eq!(
            normalize_endpoint("[::1]:2379", false).unwrap(),
            "http://[::1]:2379"
        );
        for (bad, why) in [
            ("ftp://h:1", "scheme"),
            ("h", "no port"),
            ("http://:2379", "host is empty"),
            ("h:99999", "port"),
            ("h:0", "port"),
            ("http://h:1/v2", "no path"),
            ("[::1]", "IPv6"),
        ] {
            let e = normalize_endpoint(bad, false).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let e = normalize_endpoint("http://h:1", true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("use https://"), "{e}");
    }

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
