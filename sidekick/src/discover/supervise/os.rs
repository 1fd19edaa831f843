//! The system side of the supervisor: start a child, signal its process
//! group, write the snapshot file, reap. Behind [`ChildOs`] so that the
//! state machine's decisions are unit-tested without real processes.

use std::path::PathBuf;

use anyhow::Context;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tracing::{debug, info};

use super::input::{ChildInput, ExecOptions};

/// What the state machine asks of the system.
pub(super) trait ChildOs {
    /// Write the snapshot (with `--snapshot-file`), then start the child
    /// with `input` in its environment, in a process group of its own.
    fn spawn(&mut self, input: &ChildInput) -> anyhow::Result<Pid>;
    /// Write `input`'s snapshot for `--snapshot-file` (nothing without it).
    fn write_snapshot(&mut self, input: &ChildInput) -> anyhow::Result<()>;
    /// Send `sig` to the process group led by `pid` (errors are ignored:
    /// the group may be gone already).
    fn signal(&mut self, pid: Pid, sig: Signal);
}

/// The real thing: `std::process::Command`, `killpg`, files.
#[derive(Debug)]
pub(super) struct RealOs {
    /// The child's argv (never empty: the plan checked it).
    argv: Vec<std::ffi::OsString>,
    /// Where the snapshot goes, if anywhere.
    snapshot_file: Option<PathBuf>,
}

impl RealOs {
    /// The child and snapshot file that `opts` name.
    pub(super) fn new(opts: &ExecOptions) -> Self {
        Self {
            argv: opts.argv.clone(),
            snapshot_file: opts.snapshot_file.clone(),
        }
    }
}

impl ChildOs for RealOs {
    fn spawn(&mut self, input: &ChildInput) -> anyhow::Result<Pid> {
        self.write_snapshot(input)?;
        let (prog, args) = self.argv.split_first().context("--exec needs a command")?;
        let mut cmd = std::process::Command::new(prog);
        cmd.args(args);
        // Our own environment, minus etcd credentials, plus the backends.
        for secret in crate::common::etcd_args::SECRET_ENV {
            cmd.env_remove(secret);
        }
        if std::env::var("ETCDCTL_USER").is_ok_and(|u| u.contains(':')) {
            cmd.env_remove("ETCDCTL_USER");
        }
        for (k, v) in &input.env {
            cmd.env(k, v);
        }
        if let Some(path) = &self.snapshot_file {
            cmd.env("DISCOVER_SNAPSHOT_FILE", path);
        }
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot run {prog:?}"))?;
        let pid = Pid::from_raw(child.id() as i32);
        // The reaper waits for it; dropping the handle neither waits nor kills.
        drop(child);
        let names: Vec<&str> = input.env.iter().map(|(k, _)| k.as_str()).collect();
        info!(pid = pid.as_raw(), command = ?self.argv, env = ?names, "child started");
        Ok(pid)
    }

    /// Atomically: a temporary file in the same directory, then rename.
    fn write_snapshot(&mut self, input: &ChildInput) -> anyhow::Result<()> {
        let Some(path) = &self.snapshot_file else {
            return Ok(());
        };
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            path.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            std::process::id()
        ));
        let mut text = serde_json::to_string_pretty(&input.snapshot).unwrap_or_default();
        text.push('\n');
        std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot replace {}", path.display()))?;
        debug!(path = %path.display(), "snapshot written");
        Ok(())
    }

    fn signal(&mut self, pid: Pid, sig: Signal) {
        if let Err(e) = killpg(pid, sig) {
            debug!(pid = pid.as_raw(), signal = %sig, error = %e, "killpg failed");
        }
    }
}

/// Reap every child that has exited: `(pid, exit code)`, with 128+N for
/// a child killed by signal N.
pub(super) fn reap_all() -> Vec<(Pid, i32)> {
    let mut out = Vec::new();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => out.push((pid, code)),
            Ok(WaitStatus::Signaled(pid, sig, _)) => out.push((pid, 128 + sig as i32)),
            Ok(WaitStatus::StillAlive) | Err(_) => return out,
            Ok(_) => {}
        }
    }
}
