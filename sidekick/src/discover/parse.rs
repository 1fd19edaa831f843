//! Value parsers that `--exec` and `discover render` share, used by clap
//! (`value_parser`): a bad value exits 2 with clap's "invalid value 'X'
//! for '--flag'" and our reason and remedy after it. Also [`which`], how
//! both find the commands they will run.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use discovery::Prefix;
use nix::sys::signal::Signal;

use crate::common::exit::usage;

/// A signal by name (`SIGHUP`, `HUP`, `hup`) or number.
fn lookup_signal(s: &str) -> anyhow::Result<Signal> {
    let t = s.trim();
    let sig = if let Ok(n) = t.parse::<i32>() {
        Signal::try_from(n).ok()
    } else {
        let upper = t.to_ascii_uppercase();
        let name = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        Signal::from_str(&name).ok()
    };
    sig.ok_or_else(|| {
        usage(format!(
            "{s:?} is not a signal; use a name such as SIGHUP, HUP or SIGUSR1, or a number"
        ))
    })
}

/// Parse a signal a child must be able to handle (`--reload-signal`):
/// `SIGHUP`, `HUP`, `hup` or a number; SIGKILL and SIGSTOP are refused.
pub fn parse_signal(s: &str) -> anyhow::Result<Signal> {
    match lookup_signal(s)? {
        Signal::SIGKILL | Signal::SIGSTOP => Err(usage(
            "SIGKILL and SIGSTOP cannot be handled by a process; use SIGHUP, SIGUSR1 or SIGUSR2",
        )),
        sig => Ok(sig),
    }
}

/// Parse `--kill-signal`: any signal that ends a process by default or
/// that the child handles; SIGSTOP (which only pauses) is refused.
pub fn parse_kill_signal(s: &str) -> anyhow::Result<Signal> {
    match lookup_signal(s)? {
        Signal::SIGSTOP | Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU => Err(usage(
            "that signal pauses a process instead of stopping it; use SIGTERM, SIGINT, SIGQUIT or SIGKILL",
        )),
        Signal::SIGCONT | Signal::SIGCHLD => Err(usage(
            "that signal does not stop a process; use SIGTERM, SIGINT, SIGQUIT or SIGKILL",
        )),
        sig => Ok(sig),
    }
}

/// Parse `--wait MIN[:MAX]` into `(MIN, MAX)`: plain seconds or humantime,
/// MAX defaults to 4×MIN, and `0` means at once (no coalescing).
pub fn parse_wait(s: &str) -> anyhow::Result<(Duration, Duration)> {
    let (min, max) = match s.split_once(':') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let min = discovery::parse_duration(min).map_err(|e| usage(format!("MIN: {e}")))?;
    let max = match max {
        Some(m) => discovery::parse_duration(m).map_err(|e| usage(format!("MAX: {e}")))?,
        None => min * 4,
    };
    if max < min {
        return Err(usage(format!(
            "MAX ({max:?}) is shorter than MIN ({min:?}); write MIN:MAX, such as 1s:5s"
        )));
    }
    Ok((min, max))
}

/// Parse a key prefix (`/services/web`; a trailing `/` is optional).
pub fn parse_prefix(s: &str) -> Result<Prefix, discovery::Error> {
    Prefix::new(s)
}

/// Find `prog` as a path or in `PATH`, as execvp would.
pub fn which(prog: impl AsRef<OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let prog = prog.as_ref();
    let is_exec = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let p = Path::new(prog);
    if p.components().count() > 1 || prog.to_string_lossy().contains('/') {
        return is_exec(p).then(|| p.to_owned());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|c| is_exec(c))
}

/// One item of `--restart-on`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// A new key, or a key whose value changed.
    Set,
    /// A key that went away.
    Delete,
}

/// Parse one item of `--restart-on` (the flag is comma-separated).
pub fn parse_trigger(s: &str) -> anyhow::Result<Trigger> {
    match s.trim() {
        "set" => Ok(Trigger::Set),
        "delete" => Ok(Trigger::Delete),
        "update" => Err(usage(
            "an update is a same-value re-put (a heartbeat), and restarting on it is the bug this tool exists to avoid; use set or set,delete",
        )),
        _ => Err(usage("it is not set or delete; use set or set,delete")),
    }
}

/// Which changes restart (or signal) a `watch --exec` child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartOn {
    /// A set or a delete (the default): the child never keeps a backend
    /// that is gone.
    SetAndDelete,
    /// Only a set (the chapter's rule): a vanished backend stays in the
    /// child's environment until the next set.
    SetOnly,
}

impl RestartOn {
    /// The rule `--restart-on` gives; none given means the default.
    pub fn from_triggers(items: &[Trigger]) -> anyhow::Result<Self> {
        if items.is_empty() {
            return Ok(RestartOn::SetAndDelete);
        }
        if !items.contains(&Trigger::Set) {
            return Err(usage(
                "--restart-on must include set (a new location is what the child must learn)",
            ));
        }
        Ok(if items.contains(&Trigger::Delete) {
            RestartOn::SetAndDelete
        } else {
            RestartOn::SetOnly
        })
    }

    /// Whether a delete calls for a restart.
    pub fn on_delete(self) -> bool {
        self == RestartOn::SetAndDelete
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        assert_eq!(parse_signal("SIGHUP").unwrap(), Signal::SIGHUP);
        assert_eq!(parse_signal("usr1").unwrap(), Signal::SIGUSR1);
        assert_eq!(parse_signal("15").unwrap(), Signal::SIGTERM);
        let msg = |r: anyhow::Result<Signal>| r.unwrap_err().to_string();
        assert!(msg(parse_signal("SIGNOPE")).contains("not a signal"));
        assert!(msg(parse_signal("KILL")).contains("cannot be handled"));
        assert!(msg(parse_signal("0")).contains("not a signal"));
        assert_eq!(parse_kill_signal("KILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_kill_signal("sigquit").unwrap(), Signal::SIGQUIT);
        assert!(msg(parse_kill_signal("STOP")).contains("pauses"));
        assert!(msg(parse_kill_signal("CHLD")).contains("does not stop"));
    }

    #[test]
    fn waits() {
        assert_eq!(
            parse_wait("200ms:2s").unwrap(),
            (Duration::from_millis(200), Duration::from_secs(2))
        );
        assert_eq!(
            parse_wait("1s").unwrap(),
            (Duration::from_secs(1), Duration::from_secs(4))
        );
        assert!(
            parse_wait("2s:1s")
                .unwrap_err()
                .to_string()
                .contains("shorter than MIN")
        );
        // 0 is at once, for render (its default) and --exec alike.
        assert_eq!(parse_wait("0").unwrap(), (Duration::ZERO, Duration::ZERO));
        assert_eq!(
            parse_wait("0:2s").unwrap(),
            (Duration::ZERO, Duration::from_secs(2))
        );
        let msg = |s| parse_wait(s).unwrap_err().to_string();
        assert!(msg("soon").starts_with("MIN: "), "{}", msg("soon"));
        assert!(msg("1s:soon").starts_with("MAX: "), "{}", msg("1s:soon"));
        assert!(parse_wait("-1s").is_err());
    }

    #[test]
    fn prefixes_and_commands() {
        assert_eq!(
            parse_prefix("/services/web/").unwrap().as_str(),
            "/services/web"
        );
        assert!(parse_prefix("services").is_err());
        assert!(which("sh").is_some_and(|p| p.is_absolute()));
        assert_eq!(which("/bin/sh"), Some(PathBuf::from("/bin/sh")));
        assert!(which("no-such-command-here").is_none());
        // A directory is not a command.
        assert!(which("/bin").is_none());
    }

    #[test]
    fn restart_on() {
        use Trigger::*;
        assert_eq!(parse_trigger(" set").unwrap(), Set);
        assert!(
            parse_trigger("update")
                .unwrap_err()
                .to_string()
                .contains("heartbeat")
        );
        assert!(parse_trigger("sets").is_err());
        assert_eq!(
            RestartOn::from_triggers(&[]).unwrap(),
            RestartOn::SetAndDelete
        );
        assert_eq!(
            RestartOn::from_triggers(&[Set]).unwrap(),
            RestartOn::SetOnly
        );
        assert_eq!(
            RestartOn::from_triggers(&[Delete, Set]).unwrap(),
            RestartOn::SetAndDelete
        );
        assert!(
            RestartOn::from_triggers(&[Delete])
                .unwrap_err()
                .to_string()
                .contains("must include set")
        );
    }
}
