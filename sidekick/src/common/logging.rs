//! Logging to stderr (stdout belongs to discover's JSON), through tracing.

use std::io::Write;

use clap::{Args, ValueEnum};
use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Log output formats.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging flags.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Logging")]
pub struct LogArgs {
    /// Log format on stderr; the level comes from RUST_LOG (or the tool's own variable)
    #[arg(
        long,
        value_enum,
        default_value = "text",
        global = true,
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,
}

/// Give `--log-format` the tool's own environment variable, such as
/// `SIDEKICK_LOG_FORMAT` or `DISCOVER_LOG_FORMAT`.
pub fn with_format_env(cmd: clap::Command, var: &'static str) -> clap::Command {
    cmd.mut_arg("log_format", |a| a.env(var))
}

/// Install the subscriber. The level comes from `tool_var` (such as
/// `SIDEKICK_LOG`), else `RUST_LOG`, else `info`. Under journald
/// (`JOURNAL_STREAM` set) lines carry no timestamp and no colour, since
/// the journal adds its own; when stderr is that very journal stream, each
/// line starts with its syslog priority (`<4>` for a warning), so
/// `journalctl -p warning` shows warnings and errors only.
pub fn init(args: &LogArgs, tool_var: &str) {
    let spec = std::env::var(tool_var)
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok());
    let mut filter = spec
        .as_deref()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    // hickory (discover serve's DNS server) logs two info lines per query;
    // only a filter that names it gets them.
    if !spec.is_some_and(|s| s.contains("hickory")) {
        for d in ["hickory_server=warn", "hickory_net=warn"] {
            if let Ok(d) = d.parse() {
                filter = filter.add_directive(d);
            }
        }
    }
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let ansi = !journald && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Stderr {
            priorities: stderr_is_journal(),
        })
        .with_ansi(ansi)
        .with_target(false);
    // Installing can only fail if a subscriber is already set; keep the first.
    let _ = match (args.log_format, journald) {
        (LogFormat::Json, true) => builder.json().without_time().try_init(),
        (LogFormat::Json, false) => builder.json().try_init(),
        (LogFormat::Text, true) => builder.without_time().try_init(),
        (LogFormat::Text, false) => builder.try_init(),
    };
}

/// The prefix for a line printed straight to stderr at error priority
/// (the final `tool: error` line): `<3>` on the journal stream, else nothing.
pub fn error_prefix() -> &'static str {
    if stderr_is_journal() { "<3>" } else { "" }
}

/// Whether stderr is the stream `JOURNAL_STREAM` (`DEVICE:INODE`) names:
/// systemd sets it for the service, but a child whose stderr was
/// redirected elsewhere inherits the variable, hence the check (as
/// sd_journal_stream_fd(3) advises).
fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let v = v.to_string_lossy();
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (
        dev.parse::<nix::libc::dev_t>(),
        ino.parse::<nix::libc::ino_t>(),
    ) else {
        return false;
    };
    match nix::sys::stat::fstat(std::io::stderr()) {
        Ok(st) => st.st_dev == dev && st.st_ino == ino,
        Err(_) => false,
    }
}

/// syslog(3) priority of a tracing level.
fn priority(level: &Level) -> &'static [u8] {
    match *level {
        Level::ERROR => b"<3>",
        Level::WARN => b"<4>",
        Level::INFO => b"<6>",
        Level::DEBUG | Level::TRACE => b"<7>",
    }
}

/// stderr, with each event's priority in front when it is the journal.
///
/// Hand-written rather than tracing-journald: that crate writes to the
/// journal's socket instead of stderr, which would drop `--log-format`
/// (json lines are what log shippers parse) and make the output differ
/// between a terminal and a unit; this keeps one format and adds the
/// three bytes journald's stream protocol reads.
#[derive(Clone, Copy, Debug)]
struct Stderr {
    /// Whether stderr is the journal's stream, so each line gets its
    /// syslog priority in front.
    priorities: bool,
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = PrefixedStderr;

    fn make_writer(&'a self) -> Self::Writer {
        PrefixedStderr { prefix: None }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        PrefixedStderr {
            prefix: self.priorities.then(|| priority(meta.level())),
        }
    }
}

/// One event's writer: fmt writes the whole formatted line in one call.
#[derive(Debug)]
struct PrefixedStderr {
    /// The priority (`<4>`) still to write in front of the line; taken by
    /// the first write.
    prefix: Option<&'static [u8]>,
}

impl Write for PrefixedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut err = std::io::stderr().lock();
        match self.prefix.take() {
            // One write for prefix and line, so lines of two threads
            // cannot interleave between them.
            Some(p) => {
                let mut line = Vec::with_capacity(p.len() + buf.len());
                line.extend_from_slice(p);
                line.extend_from_slice(buf);
                err.write_all(&line)?;
            }
            None => err.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_follow_syslog() {
        assert_eq!(priority(&Level::ERROR), b"<3>");
        assert_eq!(priority(&Level::WARN), b"<4>");
        assert_eq!(priority(&Level::INFO), b"<6>");
        assert_eq!(priority(&Level::TRACE), b"<7>");
    }

    #[test]
    fn no_journal_stream_means_no_prefix() {
        // The test runner's stderr is never a journal stream named by a
        // bogus JOURNAL_STREAM value; without the variable there is none.
        if std::env::var_os("JOURNAL_STREAM").is_none() {
            assert!(!stderr_is_journal());
            assert_eq!(error_prefix(), "");
        }
    }
}
