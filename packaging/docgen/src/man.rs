//! The man pages: `sidekick(1)`, `discover(1)` and one
//! `discover-SUBCOMMAND(1)` page per subcommand, as git and cargo have
//! them (`discover render` alone has some thirty flags; one page for all
//! would bury each). clap_mangen renders NAME, SYNOPSIS, DESCRIPTION and
//! the options from the definitions; this adds what clap does not know:
//! the variables read outside clap, the labels of `--all`, signals, exit
//! status, FILES (from the installed units) and SEE ALSO.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::Command;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, italic, roman};

use crate::units::{self, Unit};

/// `sidekick-docgen man`.
#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// The directory to write the pages into
    dir: PathBuf,
    /// Where the units are installed, as the installed system sees it (for FILES)
    #[arg(long, value_name = "PATH")]
    unit_dir: String,
    /// A directory holding the units as installed, to read (for FILES)
    #[arg(long, value_name = "DIR")]
    units: PathBuf,
    /// Where the binaries are installed, as the installed system sees it
    #[arg(long, value_name = "PATH")]
    bin_dir: String,
    /// Where sidekick.env.example is installed
    #[arg(long, value_name = "PATH")]
    env_example: String,
    /// Where the README is installed
    #[arg(long, value_name = "PATH")]
    readme: String,
    /// The footer's date (YYYY-MM-DD): the commit's, so pages are reproducible
    #[arg(long, default_value = "")]
    date: String,
}

/// Which tool a page documents.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tool {
    Sidekick,
    Discover,
}

impl Tool {
    fn bin(self) -> &'static str {
        match self {
            Tool::Sidekick => "sidekick",
            Tool::Discover => "discover",
        }
    }
}

/// Write every page into `a.dir`.
pub fn write_all(a: &ManArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&a.dir)
        .with_context(|| format!("cannot create {}", a.dir.display()))?;
    let units = units::read(&a.units)?;

    let mut sk = sidekick::cli::sidekick();
    sk.build();
    write(a, "sidekick.1", &page(a, &sk, Tool::Sidekick, &units, &[])?)?;

    // Globals (the etcd flags, --log-format) propagate to each subcommand
    // on build, so each subcommand's page lists them as its --help does.
    let mut dc = sidekick::cli::discover().disable_help_subcommand(true);
    dc.build();
    let subs: Vec<Command> = dc
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    let sub_pages: Vec<String> = subs
        .iter()
        .map(|s| format!("discover-{}", s.get_name()))
        .collect();
    write(
        a,
        "discover.1",
        &page(a, &dc, Tool::Discover, &units, &sub_pages)?,
    )?;
    for sub in &subs {
        let name = format!("discover-{}.1", sub.get_name());
        let mut see: Vec<String> = vec!["discover".into()];
        see.extend(
            sub_pages
                .iter()
                .filter(|p| **p != name[..name.len() - 2])
                .cloned(),
        );
        write(a, &name, &page(a, sub, Tool::Discover, &units, &see)?)?;
    }
    Ok(())
}

fn write(a: &ManArgs, name: &str, text: &[u8]) -> anyhow::Result<()> {
    let path = a.dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// One page. `related` are the other pages of the same tool (SEE ALSO,
/// and for discover(1) its subcommands' pages).
fn page(
    a: &ManArgs,
    cmd: &Command,
    tool: Tool,
    units: &[Unit],
    related: &[String],
) -> anyhow::Result<Vec<u8>> {
    let name = cmd
        .get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_owned();
    // NAME is the whatis line: the summary up to its first colon (the
    // rest of it opens DESCRIPTION, which has the whole text).
    let summary = cmd.get_about().map(|a| a.to_string()).unwrap_or_default();
    let summary = summary
        .split([':', '\n'])
        .next()
        .unwrap_or_default()
        .trim()
        .trim_end_matches('.')
        .to_owned();
    let man = Man::new(cmd.clone().about(summary))
        .title(name.to_uppercase())
        .section("1")
        .date(&a.date)
        .source(format!("sidekick {}", sidekick::cli::VERSION))
        .manual("User Commands");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    // Ragged right and no hyphenation: flags, paths and keys stay whole.
    let mut head = Roff::new();
    head.control("ad", ["l"]).control("nh", []);
    head.to_writer(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    let mut desc = Roff::new();
    desc.control("SH", ["DESCRIPTION"]);
    if let Some(text) = cmd.get_long_about().or_else(|| cmd.get_about()) {
        preformatted(&mut desc, &text.to_string());
    }
    desc.to_writer(&mut out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut out)?;
    }
    if cmd.has_subcommands() {
        man.render_subcommands_section(&mut out)?;
    }
    let mut roff = Roff::new();
    if let Some(after) = cmd.get_after_long_help().or_else(|| cmd.get_after_help()) {
        roff.control("SH", ["NOTES"]);
        preformatted(&mut roff, &after.to_string());
    }
    if tool == Tool::Sidekick {
        labels(&mut roff);
        sidekick_signals(&mut roff);
    }
    environment(&mut roff, cmd, tool);
    exit_status(&mut roff, tool);
    files(&mut roff, a, tool, units);
    see_also(&mut roff, tool, related, &a.readme);
    roff.to_writer(&mut out)?;
    Ok(out)
}

/// Help text: blank lines start a paragraph; indented lines (an example
/// command, a unit line) are indented, each on a line of its own (wrapped
/// only where it is wider than the page).
fn preformatted(roff: &mut Roff, text: &str) {
    let mut in_example = false;
    for line in text.lines() {
        let indented = line.starts_with(' ');
        if indented && !in_example {
            roff.control("RS", ["4"]);
            in_example = true;
        } else if !indented && in_example {
            roff.control("RE", []);
            in_example = false;
        }
        if line.trim().is_empty() {
            roff.control("PP", []);
        } else if indented {
            roff.text([roman(line.trim())]).control("br", []);
        } else {
            roff.text([roman(line)]);
        }
    }
    if in_example {
        roff.control("RE", []);
    }
}

fn item(roff: &mut Roff, term: &str, text: &str) {
    roff.control("TP", []);
    roff.text([bold(term)]);
    roff.text([roman(text)]);
}

/// LABELS: what `--all` reads from a container, from the agent's own table.
fn labels(roff: &mut Roff) {
    roff.control("SH", ["LABELS"]);
    roff.text([
        roman("With "),
        bold("--all"),
        roman(", a container opts in with labels (docker run --label NAME=VALUE):"),
    ]);
    for (label, meaning) in sidekick::agent::labels::LABELS {
        item(roff, label, meaning);
    }
    roff.control("PP", []);
    roff.text([roman(
        "Registrator's settings work too, as labels or in the container's environment: \
         SERVICE_NAME (or SERVICE_<port>_NAME) registers IP:PORT at \
         PREFIX/NAME/HOST:CONTAINER:PORT for each exposed port (PREFIX is --prefix); \
         SERVICE_IGNORE and SERVICE_<port>_IGNORE skip. A label the agent does not know, \
         or a value it cannot use, is reported for that container (journal and STATUS=), \
         which is then not registered; the other containers are.",
    )]);
}

/// SIGNALS (sidekick): what each signal means to it.
fn sidekick_signals(roff: &mut Roff) {
    roff.control("SH", ["SIGNALS"]);
    item(
        roff,
        "SIGTERM, SIGINT",
        "Stop: revoke the lease, so every key it keeps disappears at once, then exit 0. \
         A second one exits at once.",
    );
    item(
        roff,
        "SIGHUP",
        "Look at Docker now (list and inspect), besides its event stream.",
    );
    item(
        roff,
        "SIGUSR2",
        "Not handled: it ends the process at once without revoking the lease, as a crash \
         would. The units set RestartKillSignal=SIGUSR2, so systemctl restart (and a \
         package upgrade, which restarts running sidekicks) hands the registration to the \
         new process, which adopts the lease: watchers see nothing. systemctl stop \
         deregisters.",
    );
}

/// Variables read outside clap (clap's own are listed from the definitions).
fn extra_env(tool: Tool) -> Vec<(&'static str, &'static str)> {
    let mut v = vec![
        (
            "RUST_LOG",
            "The log level and filter (such as info, or debug), when the tool's own variable is not set.",
        ),
        (
            "ETCDCTL_PASSWORD",
            "The etcd password, as etcdctl reads it; never from the command line. Removed from an --exec child's environment.",
        ),
        (
            "ETCDCTL_PASSWORD_FILE",
            "The old name of DISCOVERY_PASSWORD_FILE (etcdctl never read it); still read, with a warning.",
        ),
        (
            "CREDENTIALS_DIRECTORY",
            "Set by systemd for LoadCredential=: the credentials etcd-password, etcd-cacert, etcd-cert and etcd-key are read from it when no flag or variable names a file.",
        ),
        (
            "JOURNAL_STREAM",
            "Set by systemd: log lines carry no timestamp or colour, and each starts with its syslog priority when stderr is the journal.",
        ),
    ];
    match tool {
        Tool::Sidekick => v.extend([
            (
                "SIDEKICK_LOG",
                "The log level and filter, before RUST_LOG.",
            ),
            (
                "DOCKER_HOST",
                "The Docker engine: unix:///path/to/docker.sock (default unix:///var/run/docker.sock) or tcp://host:port, as the Docker CLI reads it; Podman's socket works too.",
            ),
            (
                "DOCKER_TLS_VERIFY",
                "Non-empty: a tcp:// DOCKER_HOST is reached over TLS, with the files in DOCKER_CERT_PATH.",
            ),
            (
                "DOCKER_TLS",
                "Refused (TLS without verifying the daemon's certificate): set DOCKER_TLS_VERIFY=1 and put the daemon's CA in DOCKER_CERT_PATH/ca.pem.",
            ),
            (
                "DOCKER_CERT_PATH",
                "The directory holding ca.pem, cert.pem and key.pem for DOCKER_TLS_VERIFY (default $HOME/.docker).",
            ),
            (
                "HOME",
                "Where DOCKER_CERT_PATH defaults to ($HOME/.docker), as for the Docker CLI.",
            ),
            (
                "DOCKER_API_VERSION",
                "Speak this Docker Engine API version (such as 1.41) instead of negotiating one.",
            ),
            (
                "NOTIFY_SOCKET, WATCHDOG_USEC",
                "Set by systemd for Type=notify and WatchdogSec=: READY=1 after the first round, STATUS= with what it waits for, watchdog pings.",
            ),
        ]),
        Tool::Discover => v.extend([
            (
                "DISCOVER_LOG",
                "The log level and filter, before RUST_LOG.",
            ),
            (
                "PATH",
                "Where --exec looks up a command given without a slash.",
            ),
        ]),
    }
    v
}

/// ENVIRONMENT: each variable a flag reads (from the definition), then
/// the ones read outside clap.
fn environment(roff: &mut Roff, cmd: &Command, tool: Tool) {
    roff.control("SH", ["ENVIRONMENT"]);
    let mut from_flags: BTreeMap<String, String> = BTreeMap::new();
    for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        if let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) {
            from_flags
                .entry(env.to_string_lossy().into_owned())
                .or_insert_with(|| format!("--{long}"));
        }
    }
    for (var, flag) in &from_flags {
        roff.control("TP", []);
        roff.text([bold(var.as_str())]);
        roff.text([roman("The same as "), bold(flag.as_str()), roman(".")]);
    }
    for (var, text) in extra_env(tool) {
        item(roff, var, text);
    }
}

fn exit_status(roff: &mut Roff, tool: Tool) {
    roff.control("SH", ["EXIT STATUS"]);
    item(
        roff,
        "0",
        match tool {
            Tool::Sidekick => "Stopped as asked (SIGTERM or SIGINT), the lease revoked.",
            Tool::Discover => "Success; or stopped as asked (SIGTERM or SIGINT).",
        },
    );
    item(roff, "1", "A runtime failure that retrying did not fix.");
    item(
        roff,
        "2",
        "Bad usage or configuration: a flag, a credential etcd refuses, a key outside the etcd \
         user's role. The message says what is wrong and what to do; restarting cannot fix it, \
         so the units do not restart on it (RestartPreventExitStatus=2).",
    );
    item(
        roff,
        "128+N",
        "A second SIGTERM or SIGINT (signal N) ended it at once.",
    );
    if tool == Tool::Discover {
        item(
            roff,
            "other",
            "With --exec, the child's exit status passes through (128+N when signal N ended it).",
        );
    }
    roff.control("PP", []);
    roff.text([roman("A broken pipe on standard output exits 0.")]);
}

/// FILES: the binary, the environment example, and each installed unit
/// that runs the tool with the environment files it reads.
fn files(roff: &mut Roff, a: &ManArgs, tool: Tool, units: &[Unit]) {
    roff.control("SH", ["FILES"]);
    item(
        roff,
        &format!("{}/{}", a.bin_dir, tool.bin()),
        "The program.",
    );
    let ours: Vec<&Unit> = units.iter().filter(|u| u.runs(tool.bin())).collect();
    let mut env_files: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for u in &ours {
        for f in &u.env_files {
            env_files
                .entry(f.as_str())
                .or_default()
                .push(u.name.as_str());
        }
    }
    for (file, readers) in &env_files {
        roff.control("TP", []);
        roff.text([bold(*file)]);
        roff.text([roman(format!(
            "Environment (KEY=value lines) for {}; the operator's own file, never overwritten \
             or removed by an upgrade or a purge.",
            readers.join(", ")
        ))]);
    }
    item(
        roff,
        &a.env_example,
        "An example /etc/default/sidekick: etcd endpoints, user, TLS files, the credentials \
         drop-in.",
    );
    for u in &ours {
        roff.control("TP", []);
        roff.text([bold(format!("{}/{}", a.unit_dir, u.name))]);
        roff.text([roman(format!("{}.", u.description))]);
    }
    if tool == Tool::Sidekick {
        item(
            roff,
            "/var/run/docker.sock",
            "The Docker engine's socket (see DOCKER_HOST); the units reach it through the docker group.",
        );
    }
    roff.control("TP", []);
    roff.text([
        bold("$CREDENTIALS_DIRECTORY/"),
        italic("etcd-password, etcd-cacert, etcd-cert, etcd-key"),
    ]);
    roff.text([roman(
        "systemd credentials (LoadCredential=), read when no flag or variable names a file.",
    )]);
}

fn see_also(roff: &mut Roff, tool: Tool, related: &[String], readme: &str) {
    roff.control("SH", ["SEE ALSO"]);
    let mut refs: Vec<String> = Vec::new();
    if tool == Tool::Discover {
        refs.push("sidekick".into());
    } else {
        refs.push("discover".into());
    }
    refs.extend(related.iter().cloned());
    let mut line = Vec::new();
    for (i, r) in refs.iter().enumerate() {
        if i > 0 {
            line.push(roman(", "));
        }
        line.push(bold(r.as_str()));
        line.push(roman("(1)"));
    }
    for r in ["systemctl(1)", "systemd.service(5)", "etcdctl(1)"] {
        line.push(roman(", "));
        let (n, s) = r.split_once('(').unwrap_or((r, ""));
        line.push(bold(n));
        line.push(roman(format!("({s}")));
    }
    roff.text(line);
    roff.control("PP", []);
    roff.text([
        roman("The README, with the units, the chapter's stack and every figure: "),
        italic(readme),
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(f: impl FnOnce(&mut Roff)) -> String {
        let mut r = Roff::new();
        f(&mut r);
        r.to_roff()
    }

    #[test]
    fn preformatted_keeps_indented_lines_apart() {
        let s = render(|r| preformatted(r, "Example:\n  a --b\n  c\n\nExit codes: 0"));
        assert_eq!(
            s,
            "Example:\n.RS 4\na \\-\\-b\n.br\nc\n.br\n.RE\n.PP\nExit codes: 0\n"
        );
    }

    #[test]
    fn every_label_of_the_agent_is_listed() {
        let s = render(labels);
        for (label, _) in sidekick::agent::labels::LABELS {
            let escaped = label.replace('-', "\\-");
            assert!(
                s.contains(&format!("\\fB{escaped}\\fR")),
                "{label} missing:\n{s}"
            );
        }
    }

    #[test]
    fn environment_lists_the_variables_of_the_flags() {
        let mut cmd = sidekick::cli::sidekick();
        cmd.build();
        let s = render(|r| environment(r, &cmd, Tool::Sidekick));
        for var in [
            "ETCDCTL_ENDPOINTS",
            "SIDEKICK_TTL",
            "SIDEKICK_LOG_FORMAT",
            "DOCKER_HOST",
        ] {
            assert!(s.contains(var), "{var} missing:\n{s}");
        }
    }

    /// A path with a trailing separator would print `//`.
    #[test]
    fn paths_join_once() {
        let a = ManArgs {
            dir: PathBuf::new(),
            unit_dir: "/usr/lib/systemd/system".into(),
            units: PathBuf::from("/nonexistent"),
            bin_dir: "/usr/bin".into(),
            env_example: "/usr/share/doc/sidekick/examples/sidekick.env.example".into(),
            readme: "/usr/share/doc/sidekick/README.md".into(),
            date: String::new(),
        };
        let s = render(|r| files(r, &a, Tool::Sidekick, &[]));
        assert!(s.contains("/usr/bin/sidekick") && !s.contains("//"), "{s}");
    }
}
