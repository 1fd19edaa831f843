//! `sidekick`: parse, log, wire signals, run, map the outcome to an exit code.

use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, FromArgMatches};
use sidekick::agent::{self, Args, Control};
use sidekick::common::{
    logging, report,
    signals::{Sig, Signals},
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

fn main() -> ExitCode {
    let matches = logging::with_format_env(Args::command(), "SIDEKICK_LOG_FORMAT").get_matches();
    let args = match Args::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    let user_source = matches.value_source("user");
    logging::init(&args.log, "SIDEKICK_LOG");
    // One thread: a sidekick does one small thing every few seconds, and a
    // multi-threaded runtime spends more CPU waking its workers (futex) than
    // on the work itself.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return ExitCode::from(report(
                "sidekick",
                &anyhow::Error::new(e).context("cannot start the runtime"),
            ) as u8);
        }
    };
    let code = rt.block_on(async move {
        let ctl = Control {
            shutdown: CancellationToken::new(),
            reconcile: Arc::new(tokio::sync::Notify::new()),
        };
        let mut signals = match Signals::install() {
            Ok(s) => s,
            Err(e) => {
                return report(
                    "sidekick",
                    &anyhow::Error::new(e).context("cannot install signal handlers"),
                );
            }
        };
        let sig_ctl = ctl.clone();
        tokio::spawn(async move {
            loop {
                let sig = signals.recv().await;
                match sig {
                    Sig::Hup => sig_ctl.reconcile.notify_one(),
                    Sig::Term | Sig::Int if !sig_ctl.shutdown.is_cancelled() => {
                        info!(signal = sig.name(), "stopping: revoking the lease");
                        sig_ctl.shutdown.cancel();
                    }
                    Sig::Term | Sig::Int => {
                        warn!(signal = sig.name(), "second signal: exiting now");
                        std::process::exit(128 + sig.number());
                    }
                }
            }
        });
        match agent::run(args, user_source, ctl).await {
            Ok(()) => 0,
            Err(e) => report("sidekick", &e),
        }
    });
    ExitCode::from(code as u8)
}
