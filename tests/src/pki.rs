//! Certificates for the TLS tests, made with the openssl CLI: a CA, a
//! server certificate for 127.0.0.1, a client certificate, and a second,
//! unrelated CA to test refusals.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::etcd::TlsFiles;

/// A throwaway PKI in a temporary directory.
pub struct Pki {
    dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl (make test installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
        ],
    );
}

fn leaf(dir: &Path, ca: &str, name: &str, ext: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    std::fs::write(dir.join(format!("{name}.ext")), ext).expect("write ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

impl Pki {
    /// Make the CA, the server and client certificates and a wrong CA.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        ca(d, "ca");
        ca(d, "other-ca");
        leaf(
            d,
            "ca",
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
        );
        leaf(d, "ca", "client", "extendedKeyUsage=clientAuth\n");
        leaf(d, "other-ca", "stranger", "extendedKeyUsage=clientAuth\n");
        Self { dir }
    }

    /// A file of this PKI (`ca.pem`, `client.key`, ...).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// What etcd needs, requiring client certificates.
    pub fn etcd_files(&self) -> TlsFiles {
        TlsFiles {
            ca: self.path("ca.pem"),
            server_cert: self.path("server.pem"),
            server_key: self.path("server.key"),
            client_cert_auth: true,
            client_cert: self.path("client.pem"),
            client_key: self.path("client.key"),
        }
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}
