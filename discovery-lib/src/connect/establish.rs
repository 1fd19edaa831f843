//! Turning [`ConnectOptions`] into a [`Client`]: check what can be checked
//! without a network, build etcd-client's options (TLS roots, identity,
//! auth), connect, and when that fails, say why as precisely as possible.

use std::path::Path;

use super::ConnectOptions;
use crate::client::Client;
use crate::error::{Class, Error, Result, chain, classify};
use crate::pool::Pool;
use crate::retry::Backoff;
use crate::rpc::Rpc;
use crate::setting::Setting;

impl ConnectOptions {
    /// Check everything that can be checked without a network: endpoint
    /// syntax, TLS files that exist, a password with a user. Returns the
    /// endpoints as full URLs.
    pub fn validate(&self) -> Result<Vec<String>> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => {
                return Err(Error::Incomplete {
                    reason: "a client certificate needs its private key".into(),
                    missing: Setting::ClientKey,
                });
            }
            (None, Some(_)) => {
                return Err(Error::Incomplete {
                    reason: "a client key needs its certificate".into(),
                    missing: Setting::ClientCert,
                });
            }
            _ => {}
        }
        if self.password.is_some() && self.user.is_none() {
            return Err(Error::Incomplete {
                reason: "a password was given without a user".into(),
                missing: Setting::User,
            });
        }
        if self.user.is_some() && self.password.is_none() {
            return Err(Error::Incomplete {
                reason: format!(
                    "user {:?} has no password",
                    self.user.as_deref().unwrap_or_default()
                ),
                missing: Setting::Password,
            });
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

    fn client_options(&self, https: bool) -> Result<etcd_client::ConnectOptions> {
        let mut o = etcd_client::ConnectOptions::new()
            .with_connect_timeout(self.dial_timeout)
            .with_timeout(self.request_timeout)
            // A member that lost its leader refuses the request (and cancels
            // watches) instead of serving stale data; we then move on.
            .with_require_leader(true)
            .with_auto_token_refresh(true);
        if let Some((interval, timeout)) = self.keep_alive {
            o = o
                .with_keep_alive(interval, timeout)
                // Pings only while a stream is open: etcd counts idle pings
                // against the client and answers too many with GOAWAY.
                .with_keep_alive_while_idle(false);
        }
        if let (Some(user), Some(pw)) = (&self.user, &self.password) {
            o = o.with_user(user.clone(), pw.expose().to_owned());
        }
        if self.tls_enabled() || https {
            let mut tls = etcd_client::TlsOptions::new();
            match &self.ca_file {
                Some(ca) => {
                    let pem = read(ca, "CA certificate")?;
                    tls = tls.ca_certificate(etcd_client::Certificate::from_pem(pem));
                }
                // As etcdctl: without a CA, the system's trusted CAs.
                None => tls = tls.with_native_roots(),
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
        let https = urls.iter().any(|u| u.starts_with("https://"));
        let opts = self.client_options(https)?;
        let insecure = match self.insecure_skip_tls_verify && https {
            false => None,
            true => {
                tracing::warn!(endpoints = %joined, "not verifying etcd's TLS certificate (insecure skip TLS verify): anyone in the path can impersonate etcd");
                let identity = match (&self.cert_file, &self.key_file) {
                    (Some(c), Some(k)) => {
                        Some((read(c, "client certificate")?, read(k, "client key")?))
                    }
                    _ => None,
                };
                Some(crate::insecure::Settings {
                    dial_timeout: self.dial_timeout,
                    request_timeout: self.request_timeout,
                    keep_alive: self.keep_alive,
                    identity,
                })
            }
        };
        let rpc = Rpc::new(
            Pool::new(urls.clone(), opts, insecure),
            self.request_timeout,
        );
        let status = rpc
            .call("status", |c| {
                let mut m = c.maintenance();
                async move { m.status().await }
            })
            .await;
        match status {
            Ok(_) => Ok(Client::new(rpc)),
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
        if !self.insecure_skip_tls_verify {
            let ca = self.ca_file.as_deref();
            let client = self.cert_file.as_deref().zip(self.key_file.as_deref());
            for url in urls.iter().filter(|u| u.starts_with("https://")) {
                if let Some((reason, check)) =
                    crate::tls_probe::why_tls_fails(url, ca, client, self.dial_timeout).await
                {
                    return Error::Tls {
                        endpoints: url.clone(),
                        reason,
                        check,
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
        if (self.tls_enabled() || endpoints.contains("https://"))
            && (lower.contains("certificate")
                || lower.contains("tls")
                || lower.contains("handshake")
                || lower.contains("alert"))
        {
            let (reason, check) =
                crate::tls_probe::explain(reason, self.cert_file.is_some(), self.ca_file.is_some());
            return Error::Tls {
                endpoints: endpoints.to_owned(),
                reason,
                check,
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
}
