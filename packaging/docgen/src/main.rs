//! `sidekick-docgen`: the man pages, the shell completions and the Debian
//! copyright file, generated from the command lines the binaries parse
//! with (`sidekick::cli`), the label table of `--all`
//! (`sidekick::agent::labels::LABELS`), the installed units and
//! `cargo metadata`. Nothing here keeps its own list of flags.
//!
//! A build tool, never installed: `make install` and `make deb` run it.
//! Chosen over a hidden `--generate` flag in the binaries (ripgrep's
//! `rg --generate man`): the shipped tools carry no flag and no code that
//! is not for their users, and everyone who builds from source builds
//! through `make install`, which runs this.
//!
//! ```text
//! sidekick-docgen man DIR --unit-dir /usr/lib/systemd/system --units STAGED_UNITS ...
//! sidekick-docgen completions DIR
//! cargo metadata --format-version 1 --filter-platform TRIPLE | sidekick-docgen copyright --years 2026
//! ```

mod copyright;
mod man;
mod units;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use clap_complete::Shell;

/// Generate sidekick's man pages, completions and copyright file.
#[derive(Parser, Debug)]
#[command(name = "sidekick-docgen")]
struct Opts {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand, Debug)]
enum What {
    /// Man pages: sidekick.1, discover.1 and discover-SUBCOMMAND.1 into DIR
    Man(man::ManArgs),
    /// Completions into DIR/bash, DIR/zsh and DIR/fish
    Completions {
        /// The directory to write into
        dir: PathBuf,
    },
    /// The Debian copyright file (DEP-5) on stdout, from `cargo metadata --format-version 1 --filter-platform TRIPLE` on stdin
    Copyright {
        /// The years of the copyright notice, such as 2026 or 2025-2026
        #[arg(long)]
        years: String,
    },
}

fn main() -> anyhow::Result<()> {
    match Opts::parse().what {
        What::Man(a) => man::write_all(&a),
        What::Completions { dir } => completions(&dir),
        What::Copyright { years } => {
            let metadata: serde_json::Value = serde_json::from_reader(std::io::stdin().lock())
                .context("cannot read cargo metadata's JSON on stdin")?;
            print!("{}", copyright::render(&metadata, &years)?);
            Ok(())
        }
    }
}

/// Where each shell's script goes under `dir`, and its file name there
/// (the names each shell looks for: `sidekick`, `_sidekick`, `sidekick.fish`).
fn completions(dir: &std::path::Path) -> anyhow::Result<()> {
    for (shell, sub) in [
        (Shell::Bash, "bash"),
        (Shell::Zsh, "zsh"),
        (Shell::Fish, "fish"),
    ] {
        let out = dir.join(sub);
        std::fs::create_dir_all(&out)
            .with_context(|| format!("cannot create {}", out.display()))?;
        for (mut cmd, name) in [
            (sidekick::cli::sidekick(), "sidekick"),
            (sidekick::cli::discover(), "discover"),
        ] {
            let file = match shell {
                Shell::Zsh => format!("_{name}"),
                Shell::Fish => format!("{name}.fish"),
                _ => name.to_owned(),
            };
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, name, &mut buf);
            let path = out.join(file);
            std::fs::write(&path, buf)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(())
}
