//! The Docker CLI's TLS settings: `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH`.
//!
//! As the CLI does: with `DOCKER_TLS_VERIFY` set to anything non-empty, a
//! `tcp://` host is spoken to over TLS, the daemon's certificate verified
//! against `ca.pem` in `DOCKER_CERT_PATH` (default `~/.docker`), and
//! `cert.pem`/`key.pem` there presented as the client certificate when both
//! exist. A file that is missing or unreadable is a usage error (exit 2),
//! never an endless retry.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::common::exit::UsageError;

/// The TLS a `tcp://` Docker host is reached with, and where its files came from.
#[derive(Debug, Clone)]
pub struct DockerTls {
    /// The rustls client configuration.
    pub config: Arc<ClientConfig>,
    /// `DOCKER_CERT_PATH` (or `~/.docker`), for error messages.
    pub dir: PathBuf,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The TLS settings the environment asks for `host`: `None` for plain HTTP
/// (a unix socket, or no `DOCKER_TLS_VERIFY`).
pub fn from_env(host: &str) -> Result<Option<DockerTls>, UsageError> {
    if !host.starts_with("tcp://") {
        return Ok(None);
    }
    if var("DOCKER_TLS_VERIFY").is_none() {
        if var("DOCKER_TLS").is_some() {
            return Err(UsageError(
                "DOCKER_TLS (TLS without verifying the daemon's certificate) is not supported; \
                 set DOCKER_TLS_VERIFY=1 and put the daemon's CA in DOCKER_CERT_PATH/ca.pem"
                    .into(),
            ));
        }
        return Ok(None);
    }
    let dir = var("DOCKER_CERT_PATH")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| Path::new(&h).join(".docker")))
        .ok_or_else(|| {
            UsageError(
                "DOCKER_TLS_VERIFY is set, but neither DOCKER_CERT_PATH nor HOME says where ca.pem is \
                 (set DOCKER_CERT_PATH to the directory with ca.pem, cert.pem and key.pem)"
                    .into(),
            )
        })?;
    let config = client_config(&dir)?;
    Ok(Some(DockerTls {
        config: Arc::new(config),
        dir,
    }))
}

fn client_config(dir: &Path) -> Result<ClientConfig, UsageError> {
    let ca = dir.join("ca.pem");
    let bad = |what: &Path, e: &dyn std::fmt::Display| {
        UsageError(format!(
            "DOCKER_TLS_VERIFY is set, but {} cannot be used: {e} \
             (DOCKER_CERT_PATH must hold the daemon's CA as ca.pem, and the client certificate as cert.pem and key.pem)",
            what.display()
        ))
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&ca).map_err(|e| bad(&ca, &e))? {
        roots
            .add(cert.map_err(|e| bad(&ca, &e))?)
            .map_err(|e| bad(&ca, &e))?;
    }
    if roots.is_empty() {
        return Err(bad(&ca, &"it holds no certificate"));
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&ca, &e))?
        .with_root_certificates(roots);
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    // The CLI presents a client certificate only when both files exist.
    if !(cert.exists() && key.exists()) {
        return Ok(builder.with_no_client_auth());
    }
    let chain = CertificateDer::pem_file_iter(&cert)
        .map_err(|e| bad(&cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&cert, &e))?;
    let key_der = PrivateKeyDer::from_pem_file(&key).map_err(|e| bad(&key, &e))?;
    builder
        .with_client_auth_cert(chain, key_der)
        .map_err(|e| bad(&cert, &e))
}

/// `DOCKER_API_VERSION` (`1.41`): the API version to speak instead of
/// negotiating one, as the CLI does.
pub fn api_version_from_env() -> Result<Option<bollard::ClientVersion>, UsageError> {
    let Some(v) = var("DOCKER_API_VERSION") else {
        return Ok(None);
    };
    let parsed = v
        .split_once('.')
        .and_then(|(major, minor)| Some((major.parse().ok()?, minor.parse().ok()?)));
    match parsed {
        Some((major_version, minor_version)) => Ok(Some(bollard::ClientVersion {
            major_version,
            minor_version,
        })),
        None => Err(UsageError(format!(
            "DOCKER_API_VERSION={v:?} is not an API version; use MAJOR.MINOR such as 1.41, or unset it to negotiate"
        ))),
    }
}
