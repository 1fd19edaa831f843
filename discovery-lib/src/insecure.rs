//! TLS to etcd without checking its certificate, as etcdctl's
//! `--insecure-skip-tls-verify` does.
//!
//! tonic's TLS settings have no way to turn server verification off, so
//! this builds the member's channel itself: TCP, a rustls handshake whose
//! verifier accepts any server certificate (signatures are still checked,
//! so the handshake is real, and a client certificate is still sent), and
//! plain HTTP/2 on top. etcd-client takes the channel as it is
//! (`Client::from_channel`).

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{
    CryptoProvider, verify_tls12_signature, verify_tls13_signature,
};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tonic::transport::{Channel, Endpoint};

/// What the channel needs from the connect options.
#[derive(Clone)]
pub(crate) struct Settings {
    /// How long to wait for a connection to a member.
    pub(crate) dial_timeout: Duration,
    /// How long one request may take on the channel.
    pub(crate) request_timeout: Duration,
    /// HTTP/2 pings (interval, timeout), if asked for.
    pub(crate) keep_alive: Option<(Duration, Duration)>,
    /// A client certificate chain and key, PEM.
    pub(crate) identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// Accepts any server certificate; checks the handshake's signatures.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, tokio_rustls::rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn invalid(reason: String) -> etcd_client::Error {
    etcd_client::Error::InvalidArgs(reason)
}

/// A lazily connecting channel to the `https://` member `url`.
pub(crate) fn channel(url: &str, s: &Settings) -> Result<Channel, etcd_client::Error> {
    let authority = url
        .strip_prefix("https://")
        .ok_or_else(|| invalid(format!("{url} is not an https endpoint")))?;
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => v6.split_once("]:"),
        None => authority.rsplit_once(':'),
    }
    .ok_or_else(|| invalid(format!("{url} has no port")))?;
    let port: u16 = port
        .parse()
        .map_err(|_| invalid(format!("{url} has a bad port")))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)));
    let mut config = match &s.identity {
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
                .filter_map(Result::ok)
                .collect();
            let key = PrivateKeyDer::from_pem_slice(key)
                .map_err(|e| invalid(format!("cannot use the client key: {e}")))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                invalid(format!(
                    "the client certificate and key do not go together: {e}"
                ))
            })?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| invalid(format!("{host} is not a host name: {e}")))?;
    let host = host.to_owned();
    let mut endpoint = Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|e| invalid(e.to_string()))?
        .connect_timeout(s.dial_timeout)
        .timeout(s.request_timeout);
    if let Some((interval, timeout)) = s.keep_alive {
        endpoint = endpoint
            .http2_keep_alive_interval(interval)
            .keep_alive_timeout(timeout)
            .keep_alive_while_idle(false);
    }
    Ok(
        endpoint.connect_with_connector_lazy(tower::service_fn(move |_uri| {
            let (connector, name, host) = (connector.clone(), name.clone(), host.clone());
            async move {
                let tcp = TcpStream::connect((host.as_str(), port)).await?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        })),
    )
}
