//! The connection settings, as errors name them and tools map them to
//! their own flags. A leaf: both the options (`connect`) and the error
//! type (`error`) use it, and neither may import the other for it.

/// A connection setting, as errors name it (see [`Error::settings`](crate::Error::settings)):
/// tools map each to their own flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Setting {
    /// [`ConnectOptions::with_endpoints`](crate::ConnectOptions::with_endpoints), `ETCDCTL_ENDPOINTS`.
    Endpoints,
    /// [`ConnectOptions::with_ca_file`](crate::ConnectOptions::with_ca_file), `ETCDCTL_CACERT`.
    CaFile,
    /// [`ConnectOptions::with_client_cert_file`](crate::ConnectOptions::with_client_cert_file), `ETCDCTL_CERT`.
    ClientCert,
    /// [`ConnectOptions::with_client_key`](crate::ConnectOptions::with_client_key), `ETCDCTL_KEY`.
    ClientKey,
    /// [`ConnectOptions::with_user_name`](crate::ConnectOptions::with_user_name), `ETCDCTL_USER`.
    User,
    /// [`ConnectOptions::with_password`](crate::ConnectOptions::with_password), `ETCDCTL_PASSWORD`.
    Password,
}

impl Setting {
    /// etcdctl's environment variable for it.
    pub const fn env(self) -> &'static str {
        match self {
            Setting::Endpoints => "ETCDCTL_ENDPOINTS",
            Setting::CaFile => "ETCDCTL_CACERT",
            Setting::ClientCert => "ETCDCTL_CERT",
            Setting::ClientKey => "ETCDCTL_KEY",
            Setting::User => "ETCDCTL_USER",
            Setting::Password => "ETCDCTL_PASSWORD",
        }
    }

    pub(crate) const fn as_slice(&self) -> &'static [Setting] {
        match self {
            Setting::Endpoints => &[Setting::Endpoints],
            Setting::CaFile => &[Setting::CaFile],
            Setting::ClientCert => &[Setting::ClientCert],
            Setting::ClientKey => &[Setting::ClientKey],
            Setting::User => &[Setting::User],
            Setting::Password => &[Setting::Password],
        }
    }
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self {
            Setting::Endpoints => "the endpoints",
            Setting::CaFile => "the CA certificate",
            Setting::ClientCert => "the client certificate",
            Setting::ClientKey => "the client key",
            Setting::User => "the user name",
            Setting::Password => "the password",
        };
        write!(f, "{what} ({})", self.env())
    }
}
