//! `discover`: parse (splitting off the `--exec` argv), log, wire signals,
//! run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use sidekick::common::{
    logging, report,
    signals::{Sig, Signals},
};
use sidekick::discover::{self, Cli, Cmd};
use tokio_util::sync::CancellationToken;
use tracing::info;

fn main() -> ExitCode {
    let (head, exec) = discover::split_exec(std::env::args_os().collect());
    let matches =
        logging::with_format_env(Cli::command(), "DISCOVER_LOG_FORMAT").get_matches_from(head);
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    // Global flags are propagated to the top-level matches.
    let user_source = matches.value_source("user");
    if let Some(argv) = exec {
        match &mut cli.cmd {
            Cmd::Watch(a) => a.exec.exec = Some(argv),
            Cmd::Config(a) => a.exec.exec = Some(argv),
            _ => {}
        }
    }
    logging::init(&cli.log, "DISCOVER_LOG");
    let exec_mode = match &cli.cmd {
        Cmd::Watch(a) => a.exec.exec.is_some(),
        Cmd::Config(a) => a.exec.exec.is_some(),
        _ => false,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return ExitCode::from(report(
                "discover",
                &anyhow::Error::new(e).context("cannot start the runtime"),
            ) as u8);
        }
    };
    let code = rt.block_on(async move {
        let shutdown = CancellationToken::new();
        if !exec_mode {
            // With --exec the supervisor owns the signals (it forwards them).
            let mut signals = match Signals::install() {
                Ok(s) => s,
                Err(e) => {
                    return report(
                        "discover",
                        &anyhow::Error::new(e).context("cannot install signal handlers"),
                    );
                }
            };
            let stop = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    let sig = signals.recv().await;
                    if sig == Sig::Hup {
                        continue;
                    }
                    if stop.is_cancelled() {
                        std::process::exit(128 + sig.number());
                    }
                    info!(signal = sig.name(), "stopping");
                    stop.cancel();
                }
            });
        }
        match discover::run(cli, user_source, shutdown).await {
            Ok(code) => code,
            Err(e) => report("discover", &e),
        }
    });
    ExitCode::from(code.clamp(0, 255) as u8)
}
