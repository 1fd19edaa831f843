//! `discover`: parse (splitting off the `--exec` argv), log, wire signals,
//! run, map the outcome to an exit code.

use std::process::ExitCode;

use anyhow::Context;
use clap::FromArgMatches;
use sidekick::common::signals::{self, Intents, OnHup};
use sidekick::common::{logging, report};
use sidekick::discover::{self, Cli, Cmd};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let (head, exec) = discover::split_exec(std::env::args_os().collect());
    let matches = sidekick::cli::discover().get_matches_from(head);
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
    let exec_mode = cli.supervises();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let outcome = rt.context("cannot start the runtime").and_then(|rt| {
        rt.block_on(async move {
            let shutdown = CancellationToken::new();
            // With --exec the supervisor owns the signals (it passes them
            // on to the child). Without, there is nothing to reload.
            if !exec_mode {
                let intents = Intents {
                    hup: OnHup::Ignore,
                    stopping: "stopping",
                };
                signals::handle(intents, shutdown.clone())
                    .context("cannot install signal handlers")?;
            }
            discover::run(cli, user_source, shutdown).await
        })
    });
    match outcome {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => ExitCode::from(report("discover", &e) as u8),
    }
}
