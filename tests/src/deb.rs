//! The Debian package as `make deb` builds it, from the debug build
//! (`packaging/build-deb` with `PROFILE=debug`): the tests lint it,
//! install it in a [`crate::systemd::SystemdHost`] and upgrade it.
//! gzip at its fastest instead of xz: xz over a debug build's binaries
//! takes a minute, and the compression is dpkg-deb's business, not ours.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace version: what the package is versioned by default.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Build the package into `out`, at `version` (default: [`VERSION`]);
/// return its path. Panics with build-deb's output if it fails.
pub fn build(out: &Path, version: Option<&str>) -> PathBuf {
    let mut cmd = Command::new(crate::repo().join("packaging/build-deb"));
    cmd.env("PROFILE", "debug")
        .env("DEB_OUT", out)
        .env("DEB_COMPRESS", "-Zgzip -z1")
        .env_remove("VERSION");
    if let Some(v) = version {
        cmd.env("VERSION", v);
    }
    let o = cmd.output().expect("packaging/build-deb");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "packaging/build-deb failed ({}):\n{stdout}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    let path = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    assert!(
        path.is_file(),
        "build-deb named {path:?}, which is not there:\n{stdout}"
    );
    path
}

/// `dpkg --print-architecture`.
pub fn arch() -> String {
    run(Command::new("dpkg").arg("--print-architecture"))
        .trim()
        .to_owned()
}

/// A control field of the package (`dpkg-deb -f`), empty if absent.
pub fn field(deb: &Path, name: &str) -> String {
    run(Command::new("dpkg-deb").arg("-f").arg(deb).arg(name))
        .trim()
        .to_owned()
}

/// Every path the package holds, as `/usr/bin/sidekick` (directories end
/// without `/`), from `dpkg-deb -c`.
pub fn contents(deb: &Path) -> Vec<String> {
    run(Command::new("dpkg-deb").arg("-c").arg(deb))
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| {
            let p = p.trim_start_matches('.').trim_end_matches('/');
            if p.is_empty() {
                "/".to_owned()
            } else {
                p.to_owned()
            }
        })
        .collect()
}

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}
