//! Why did a TLS connection fail? tonic reports only that the connection
//! was cancelled; a direct handshake with the same files says what rustls
//! objected to (an unknown issuer, a missing client certificate, ...).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::setting::Setting;

/// Handshake with `url` using `ca` (the system's CAs if `None`) and the
/// client certificate, and return
/// the reason it fails, or `None` if TLS itself is fine (or the endpoint
/// cannot even be reached over TCP: then it is not a TLS problem).
pub(crate) async fn why_tls_fails(
    url: &str,
    ca: Option<&Path>,
    client: Option<(&Path, &Path)>,
    limit: Duration,
) -> Option<(String, &'static [Setting])> {
    let authority = url.strip_prefix("https://")?;
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => v6.split_once("]:")?,
        None => authority.rsplit_once(':')?,
    };
    let port: u16 = port.parse().ok()?;
    let mut roots = RootCertStore::empty();
    match ca {
        Some(ca) => {
            for cert in CertificateDer::pem_file_iter(ca).ok()? {
                roots.add(cert.ok()?).ok()?;
            }
        }
        // No CA given: the system's, as the connection itself used.
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots);
    let mut config = match client {
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .ok()?
                .filter_map(Result::ok)
                .collect();
            let key = match PrivateKeyDer::from_pem_file(key) {
                Ok(k) => k,
                Err(e) => {
                    return Some((
                        format!("cannot use the client key: {e}"),
                        &[Setting::ClientKey],
                    ));
                }
            };
            match builder.with_client_auth_cert(chain, key) {
                Ok(c) => c,
                Err(e) => {
                    return Some((
                        format!("the client certificate and key do not go together: {e}"),
                        &[Setting::ClientCert, Setting::ClientKey],
                    ));
                }
            }
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = timeout(limit, TcpStream::connect((host, port)))
        .await
        .ok()?
        .ok()?;
    let name = ServerName::try_from(host.to_owned()).ok()?;
    let has_client_cert = client.is_some();
    let mut tls = match timeout(
        limit,
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    {
        Err(_) => return None,
        Ok(Err(e)) => return Some(explain(e.to_string(), has_client_cert, ca.is_some())),
        Ok(Ok(s)) => s,
    };
    // With TLS 1.3 the server judges our certificate after the handshake:
    // a refusal arrives as an alert on the first read.
    let mut byte = [0u8; 1];
    match timeout(Duration::from_millis(500), tls.read(&mut byte)).await {
        Ok(Err(e)) => Some(explain(e.to_string(), has_client_cert, ca.is_some())),
        _ => None,
    }
}

/// Say what a TLS failure means and what to do, keeping rustls's words,
/// and which settings would fix it.
pub(crate) fn explain(
    raw: String,
    has_client_cert: bool,
    ca_given: bool,
) -> (String, &'static [Setting]) {
    let unknown_issuer = raw.contains("UnknownIssuer") || raw.contains("BadSignature");
    let (hint, check): (&str, &'static [Setting]) = if unknown_issuer && ca_given {
        (
            "etcd's certificate is not signed by the CA given; pass the CA that signed etcd's server certificate",
            &[Setting::CaFile],
        )
    } else if unknown_issuer {
        (
            "etcd's certificate is not signed by a CA this system trusts, and no CA was given; pass the CA that signed etcd's server certificate",
            &[Setting::CaFile],
        )
    } else if raw.contains("NotValidForName") {
        (
            "etcd's certificate does not name the host of the endpoint; use the name or address the certificate was issued for",
            &[Setting::Endpoints],
        )
    } else if raw.contains("Expired") || raw.contains("NotValidYet") {
        (
            "etcd's certificate is expired or not valid yet; renew it, or check this machine's clock",
            &[],
        )
    } else if raw.contains("alert") && !has_client_cert {
        (
            "etcd requires a client certificate (it runs with --client-cert-auth); pass a certificate and its key",
            &[Setting::ClientCert, Setting::ClientKey],
        )
    } else if raw.contains("alert") {
        (
            "etcd refused our client certificate; it must be signed by a CA etcd trusts (its --trusted-ca-file) and be valid now",
            &[Setting::ClientCert],
        )
    } else {
        return (raw, &[]);
    };
    (format!("{hint} ({raw})"), check)
}
