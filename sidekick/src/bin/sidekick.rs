//! `sidekick`: parse, log, wire signals, run, map the outcome to an exit code.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::FromArgMatches;
use sidekick::agent::{self, Args, Control};
use sidekick::common::signals::{self, Intents, OnHup};
use sidekick::common::{logging, report};

fn main() -> ExitCode {
    let matches = sidekick::cli::sidekick().get_matches();
    let args = match Args::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    let user_source = matches.value_source("user");
    logging::init(&args.log, "SIDEKICK_LOG");
    // One thread: a sidekick does one small thing every few seconds, and a
    // multi-threaded runtime spends more CPU waking its workers (futex) than
    // on the work itself.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let outcome = rt.context("cannot start the runtime").and_then(|rt| {
        rt.block_on(async move {
            let ctl = Control {
                shutdown: tokio_util::sync::CancellationToken::new(),
                reconcile: Arc::new(tokio::sync::Notify::new()),
            };
            // SIGHUP: reconcile with Docker now.
            let intents = Intents {
                hup: OnHup::Reload(ctl.reconcile.clone()),
                stopping: "stopping: revoking the lease",
            };
            signals::handle(intents, ctl.shutdown.clone())
                .context("cannot install signal handlers")?;
            agent::run(args, user_source, ctl).await
        })
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => ExitCode::from(report("sidekick", &e) as u8),
    }
}
