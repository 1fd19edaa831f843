//! The git commit `--version` names, as ripgrep's build script finds its
//! own: `git rev-parse` at build time. Hand-written rather than vergen,
//! which would compile a dozen crates into every build for one command.
//!
//! - `SIDEKICK_GIT_COMMIT`, when set, wins: a build from a source tarball
//!   (no `.git`) can still name its commit.
//! - Else `git rev-parse --short=12 HEAD` in this checkout (a worktree
//!   too: `.git` may be a file).
//! - Else `unknown`: no git, or not a checkout. The build never fails
//!   for want of git.
//!
//! Cargo reruns this when HEAD moves (a commit, a checkout), so an
//! incremental build never names a stale commit.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=SIDEKICK_GIT_COMMIT");
    let commit = std::env::var("SIDEKICK_GIT_COMMIT")
        .ok()
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=SIDEKICK_GIT_COMMIT={commit}");
}

/// `git args…` in this crate's directory: its trimmed stdout, if it succeeded.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !s.is_empty()).then_some(s)
}

/// The commit HEAD names, and the files whose change means HEAD moved:
/// HEAD itself (a checkout, a detached commit), the branch file it points
/// to, and packed-refs (where a branch lives once packed). Only existing
/// files are named: cargo reruns a build script on every build while a
/// named file is missing.
fn git_commit() -> Option<String> {
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name]) {
            if Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
    Some(commit)
}
