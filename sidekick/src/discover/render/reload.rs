//! Reloading the service that reads the rendered files: a command (argv,
//! no shell), a signal to the process in a pid file, or `systemctl reload`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How to reload.
#[derive(Debug, Clone)]
pub enum Reload {
    /// Nothing to reload (the reader re-reads on its own).
    Nothing,
    /// `--reload-cmd`: run this argv; a non-zero exit is a failed reload.
    Command(Vec<String>),
    /// `--reload-signal SIG --pid-file F`.
    Signal {
        /// The signal.
        signal: Signal,
        /// The file holding the pid.
        pid_file: PathBuf,
    },
    /// `--reload-unit NAME`: `systemctl reload NAME`.
    Unit(String),
}

impl Reload {
    /// Whether there is anything to do.
    pub fn is_nothing(&self) -> bool {
        matches!(self, Reload::Nothing)
    }

    /// Reload once.
    pub async fn run(&self, timeout: Duration) -> anyhow::Result<()> {
        match self {
            Reload::Nothing => Ok(()),
            Reload::Command(argv) => run_argv(argv, timeout).await.map(drop),
            Reload::Unit(name) => {
                let argv = ["systemctl", "reload", name.as_str()].map(str::to_owned);
                run_argv(&argv, timeout).await.map(drop)
            }
            Reload::Signal { signal, pid_file } => {
                let text = std::fs::read_to_string(pid_file)
                    .with_context(|| format!("cannot read the pid file {}", pid_file.display()))?;
                let pid: i32 = text
                    .trim()
                    .parse()
                    .ok()
                    .filter(|p| *p > 0)
                    .with_context(|| {
                        format!(
                            "the pid file {} holds {:?}, not a process id",
                            pid_file.display(),
                            text.trim()
                        )
                    })?;
                kill(Pid::from_raw(pid), *signal).with_context(|| {
                    format!(
                        "cannot send {signal} to pid {pid} (from {})",
                        pid_file.display()
                    )
                })
            }
        }
    }
}

/// Run `argv` (no shell) with a deadline; its output on success, or an
/// error holding its exit status and output.
pub async fn run_argv(argv: &[String], timeout: Duration) -> anyhow::Result<String> {
    let Some((prog, args)) = argv.split_first() else {
        bail!("empty command");
    };
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot run {prog:?}"))?;
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(r) => r.with_context(|| format!("cannot wait for {prog:?}"))?,
        Err(_) => bail!(
            "{argv:?} did not finish within {timeout:?}; it was killed (give it longer with --cmd-timeout)"
        ),
    };
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    let text = text.trim().to_owned();
    if !out.status.success() {
        bail!("{argv:?} failed ({}): {text}", out.status);
    }
    Ok(text)
}
