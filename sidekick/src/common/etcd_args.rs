//! etcd connection flags, named as etcdctl names them, also read from
//! etcdctl's `ETCDCTL_*` environment.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use clap::parser::ValueSource;
use discovery::{ConnectOptions, Password, Setting};

use tracing::warn;

use super::exit::usage;

/// etcd connection flags.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "etcd connection")]
pub struct EtcdArgs {
    /// etcd client URLs, comma-separated (host:port, http://host:port or https://host:port)
    #[arg(
        long,
        global = true,
        env = "ETCDCTL_ENDPOINTS",
        value_delimiter = ',',
        default_value = discovery::DEFAULT_ENDPOINT,
        value_name = "URLS"
    )]
    pub endpoints: Vec<String>,

    /// CA certificate that signed etcd's server certificate (enables TLS; https:// endpoints without it use the system's CAs, as etcdctl does)
    #[arg(long, global = true, env = "ETCDCTL_CACERT", value_name = "FILE")]
    pub cacert: Option<PathBuf>,

    /// Client certificate, for etcd's --client-cert-auth
    #[arg(long, global = true, env = "ETCDCTL_CERT", value_name = "FILE")]
    pub cert: Option<PathBuf>,

    /// Client certificate's private key
    #[arg(
        long = "tls-key",
        global = true,
        env = "ETCDCTL_KEY",
        value_name = "FILE"
    )]
    pub tls_key: Option<PathBuf>,

    /// etcd user name; the password comes from ETCDCTL_PASSWORD or --password-file, never the command line
    #[arg(long, global = true, env = "ETCDCTL_USER", value_name = "NAME")]
    pub user: Option<String>,

    /// File whose first line is the etcd password. Without it (and without
    /// ETCDCTL_PASSWORD), the systemd credential `etcd-password` is read from
    /// $CREDENTIALS_DIRECTORY if there is one
    #[arg(
        long,
        global = true,
        env = PASSWORD_FILE_ENV,
        value_name = "FILE"
    )]
    pub password_file: Option<PathBuf>,

    /// Accept any certificate from etcd, as etcdctl's flag does: encrypted, but anyone in the path can pose as etcd (tests and first steps only)
    #[arg(long, global = true, env = "ETCDCTL_INSECURE_SKIP_TLS_VERIFY")]
    pub insecure_skip_tls_verify: bool,

    /// Timeout for connecting to an endpoint (8, 2s, 500ms)
    #[arg(long, global = true, env = "ETCDCTL_DIAL_TIMEOUT", default_value = "2s", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub dial_timeout: Duration,

    /// Timeout for each etcd request
    #[arg(long, global = true, env = "ETCDCTL_COMMAND_TIMEOUT", default_value = "5s", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub command_timeout: Duration,
}

/// A duration above zero, as plain seconds or humantime.
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = discovery::parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("{s:?} is zero; it must be above zero"));
    }
    Ok(d)
}

impl EtcdArgs {
    /// Build the library's options, refusing what cannot work (exit 2).
    ///
    /// `user_source` is where clap found `--user`: a `name:password` form
    /// is accepted from `ETCDCTL_USER` (etcdctl's convention) but never
    /// from the command line, where `ps` would show it.
    pub fn connect_options(
        &self,
        user_source: Option<ValueSource>,
    ) -> anyhow::Result<ConnectOptions> {
        let mut o = ConnectOptions::new()
            .with_endpoints(
                self.endpoints
                    .iter()
                    .map(|e| e.trim().to_owned())
                    .filter(|e| !e.is_empty()),
            )
            .with_dial_timeout(self.dial_timeout)
            .with_request_timeout(self.command_timeout)
            .with_insecure_skip_tls_verify(self.insecure_skip_tls_verify);
        let creds = credentials_dir();
        if let Some(ca) = self
            .cacert
            .clone()
            .or_else(|| credential(&creds, "etcd-cacert"))
        {
            o = o.with_ca_file(ca);
        }
        if let Some(c) = self
            .cert
            .clone()
            .or_else(|| credential(&creds, "etcd-cert"))
        {
            o = o.with_client_cert_file(c);
        }
        if let Some(k) = self
            .tls_key
            .clone()
            .or_else(|| credential(&creds, "etcd-key"))
        {
            o = o.with_client_key(k);
        }
        if let Some(user) = &self.user {
            match user.split_once(':') {
                Some(_) if user_source == Some(ValueSource::CommandLine) => {
                    return Err(usage(
                        "--user must not carry a password (name:password would show in ps and the journal); \
                         pass only the name and set ETCDCTL_PASSWORD or --password-file",
                    ));
                }
                Some((name, pw)) => o = o.with_user(name, Password::new(pw)),
                None => o = o.with_user_name(user),
            }
        }
        let password_file = self.password_file.clone().or_else(|| {
            let old = std::env::var_os(OLD_PASSWORD_FILE_ENV).filter(|v| !v.is_empty())?;
            warn!(
                "{OLD_PASSWORD_FILE_ENV} is deprecated (etcdctl never read it); \
                 set {PASSWORD_FILE_ENV} instead"
            );
            Some(PathBuf::from(old))
        });
        if let Some(f) = &password_file {
            let pw = Password::from_file(f).with_context(|| "cannot use --password-file")?;
            o = o.with_password(pw);
        } else if let Some(pw) = std::env::var("ETCDCTL_PASSWORD")
            .ok()
            .filter(|p| !p.is_empty())
        {
            o = o.with_password(Password::new(pw));
        } else if let Some(f) = credential(&creds, "etcd-password") {
            let pw = Password::from_file(&f)
                .with_context(|| "cannot use the systemd credential etcd-password")?;
            o = o.with_password(pw);
        }
        o.validate()?;
        Ok(o)
    }
}

/// The flags that set `settings`, as a phrase: `--cert and --tls-key`.
pub fn flags_for(settings: &[Setting]) -> String {
    let flags: Vec<&str> = settings
        .iter()
        .map(|s| match s {
            Setting::Endpoints => "--endpoints",
            Setting::CaFile => "--cacert",
            Setting::ClientCert => "--cert",
            Setting::ClientKey => "--tls-key",
            Setting::User => "--user",
            Setting::Password => "--password-file",
            _ => "",
        })
        .filter(|f| !f.is_empty())
        .collect();
    match flags.as_slice() {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// Where `--password-file` is read from the environment. Our own name:
/// etcdctl has no such variable, so an `ETCDCTL_` name would pretend to be
/// one (the same file serves sidekick and discover).
pub const PASSWORD_FILE_ENV: &str = "DISCOVERY_PASSWORD_FILE";

/// The name `--password-file` was read from before; still honoured, with a
/// warning.
pub const OLD_PASSWORD_FILE_ENV: &str = "ETCDCTL_PASSWORD_FILE";

/// Environment variables that carry etcd credentials, or say where to read
/// them: never handed to a child.
pub const SECRET_ENV: &[&str] = &["ETCDCTL_PASSWORD", PASSWORD_FILE_ENV, OLD_PASSWORD_FILE_ENV];

/// systemd's `$CREDENTIALS_DIRECTORY` (set when a unit has
/// `LoadCredential=`/`SetCredential=`).
fn credentials_dir() -> Option<PathBuf> {
    std::env::var_os("CREDENTIALS_DIRECTORY")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
}

/// The credential `name` in that directory, if the unit loaded it: used
/// only when the matching flag or variable names no file.
fn credential(dir: &Option<PathBuf>, name: &str) -> Option<PathBuf> {
    let path = dir.as_ref()?.join(name);
    path.exists().then_some(path)
}
