//! Logging to stderr (stdout belongs to discover's JSON), through tracing.

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

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
/// the journal adds its own.
pub fn init(args: &LogArgs, tool_var: &str) {
    let filter = std::env::var(tool_var)
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let ansi = !journald && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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
