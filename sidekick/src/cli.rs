//! The two command lines as shipped: the clap definitions
//! ([`crate::agent::Args`], [`crate::discover::Cli`]) with what the
//! binaries add to them (the `--log-format` variable, the version lines).
//! The binaries parse with these, and `packaging/docgen` generates the man
//! pages and shell completions from the very same, so neither can drift
//! from what `--help` says.

use std::sync::LazyLock;

use clap::CommandFactory;

use crate::agent::Args;
use crate::common::logging;
use crate::discover::Cli;

/// The crate version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit this was built from (12 hex digits), or `unknown` for a
/// build outside a checkout (`sidekick/build.rs`).
pub const COMMIT: &str = env!("SIDEKICK_GIT_COMMIT");

/// The etcd API both tools speak, and the etcd releases they work with
/// (the README's support matrix tests 3.4 and 3.5).
pub const ETCD_API: &str = "v3 (gRPC), etcd 3.4 and later";

/// `-V`: the version and the commit on one line.
const SHORT_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SIDEKICK_GIT_COMMIT"),
    ")"
);

/// The Docker Engine API the sidekick speaks: bollard's own version, or
/// the engine's when that is older (negotiated on each connection).
pub fn docker_api() -> String {
    let v = bollard::API_DEFAULT_VERSION;
    format!(
        "{}.{} or the engine's own if older (negotiated; DOCKER_API_VERSION fixes one)",
        v.major_version, v.minor_version
    )
}

/// `sidekick --version`: never touches etcd or Docker.
static SIDEKICK_LONG: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{VERSION}\ncommit: {COMMIT}\netcd API: {ETCD_API}\nDocker Engine API: {}",
        docker_api()
    )
});

/// `discover --version` (discover never talks to Docker).
static DISCOVER_LONG: LazyLock<String> =
    LazyLock::new(|| format!("{VERSION}\ncommit: {COMMIT}\netcd API: {ETCD_API}"));

/// The `sidekick` command line.
pub fn sidekick() -> clap::Command {
    logging::with_format_env(Args::command(), "SIDEKICK_LOG_FORMAT")
        .version(SHORT_VERSION)
        .long_version(SIDEKICK_LONG.as_str())
}

/// The `discover` command line.
pub fn discover() -> clap::Command {
    logging::with_format_env(Cli::command(), "DISCOVER_LOG_FORMAT")
        .version(SHORT_VERSION)
        .long_version(DISCOVER_LONG.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both definitions pass clap's own consistency checks, as shipped.
    #[test]
    fn commands_are_consistent() {
        sidekick().debug_assert();
        discover().debug_assert();
    }

    #[test]
    fn long_versions_name_the_commit_and_the_apis() {
        let s = sidekick().render_long_version();
        assert!(s.starts_with(&format!("sidekick {VERSION}\n")), "{s}");
        assert!(s.contains(&format!("commit: {COMMIT}")), "{s}");
        assert!(s.contains("etcd API: v3"), "{s}");
        let v = bollard::API_DEFAULT_VERSION;
        let docker = format!("Docker Engine API: {}.{}", v.major_version, v.minor_version);
        assert!(s.contains(&docker), "{s}");
        let d = discover().render_long_version();
        assert!(d.contains("etcd API: v3") && !d.contains("Docker"), "{d}");
        assert_eq!(
            sidekick().render_version(),
            format!("sidekick {VERSION} (commit {COMMIT})\n")
        );
    }
}
