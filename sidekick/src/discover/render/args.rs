//! `discover render`'s command line. clap parses each value (a bad one
//! exits 2 with the flag, the value and why); [`Plan::new`] then makes the
//! checks that span flags, and compiles the templates (a syntax error exits
//! 2 with file, line and column), all before any I/O with etcd.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use discovery::Prefix;
use nix::sys::signal::Signal;

use super::context;
use super::reload::Reload;
use super::template::Templates;
use super::write::{self, Check, Owner, Target};
use crate::common::etcd_args::parse_positive_duration;
use crate::common::exit::usage;
use crate::discover::parse::{parse_prefix, parse_signal, parse_wait, which};

/// `discover render`.
#[derive(Args, Debug)]
#[command(
    after_help = "Example:\n  discover render --watch /services/web \\\n    --template /etc/nginx/web-lb.conf.j2:/etc/nginx/web-lb.conf \\\n    --check-cmd 'nginx -t -q -c {{src}}' --reload-cmd 'nginx -s reload -c /etc/nginx/web-lb.conf' --wait 100ms:2s"
)]
pub struct RenderArgs {
    /// Render the template SRC to DEST (MODE in octal, such as 0644; default: DEST's mode, or 0644); repeat for more
    #[arg(long = "template", required = true, value_parser = parse_target, value_name = "SRC:DEST[:MODE]")]
    pub templates: Vec<Target>,
    /// Watch PREFIX; templates see its keys as NAME (default: its last segment) and as prefixes["PREFIX"]
    #[arg(long = "watch", value_parser = parse_watch, value_name = "[NAME=]PREFIX")]
    pub watch: Vec<(Prefix, String)>,
    /// Follow the typed config under PREFIX; templates see it as `config`
    #[arg(long, value_parser = parse_prefix, value_name = "PREFIX")]
    pub config: Option<Prefix>,
    /// Check each new rendering before it replaces DEST; {{src}} is the new file's path (such as "nginx -t -c {{src}}"); split into argv, no shell
    #[arg(long, value_parser = parse_check_cmd, value_name = "CMD")]
    pub check_cmd: Option<Argv>,
    /// After a DEST changed, run CMD (split into argv, no shell: write sh -c '...' for one)
    #[arg(long, value_parser = parse_cmd, value_name = "CMD", conflicts_with_all = ["reload_signal", "reload_unit"])]
    pub reload_cmd: Option<Argv>,
    /// After a DEST changed, send SIG (such as SIGHUP) to the process in --pid-file
    #[arg(
        long,
        value_parser = parse_signal,
        value_name = "SIG",
        requires = "pid_file",
        conflicts_with = "reload_unit"
    )]
    pub reload_signal: Option<Signal>,
    /// The pid file for --reload-signal
    #[arg(long, value_name = "FILE", requires = "reload_signal")]
    pub pid_file: Option<PathBuf>,
    /// After a DEST changed, run `systemctl reload NAME`
    #[arg(long, value_name = "NAME")]
    pub reload_unit: Option<String>,
    /// Give each DEST to USER (and GROUP; without one, DEST's current group); default: DEST's current owner
    #[arg(long, value_parser = parse_owner, value_name = "USER[:GROUP]")]
    pub owner: Option<Owner>,
    /// Coalesce a burst: render once MIN passed with no further change, never later than MAX after the first [default MAX: 4*MIN; 0: at once]
    #[arg(long, default_value = "0", value_parser = parse_wait, value_name = "MIN[:MAX]")]
    pub wait: (Duration, Duration),
    /// How long --check-cmd and the reload may run before they are killed (and count as failed)
    // Not `--command-timeout`: that is etcdctl's request timeout, a global
    // flag of every subcommand, and one clap id cannot mean both.
    #[arg(long, default_value = "60s", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub cmd_timeout: Duration,
    /// Render once and exit: 0 when every template rendered (and checked, and the reload worked), 1 otherwise
    #[arg(long)]
    pub once: bool,
    /// Print the renderings to stdout instead of writing, checking or reloading
    #[arg(long)]
    pub dry_run: bool,
}

/// A command as `--check-cmd` and `--reload-cmd` take it: split into argv
/// as a shell would split it (no shell runs it), its program found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Argv(
    /// The words; the first is the program, an executable file or a
    /// command in `PATH`.
    pub Vec<String>,
);

/// Everything the command line says, checked before any I/O.
#[derive(Debug)]
pub(super) struct Plan {
    /// Where each template goes (no two to the same DEST).
    pub(super) targets: Vec<Target>,
    /// Every template, compiled once at start.
    pub(super) templates: Templates,
    /// The watched prefixes and the name each has in templates (no two
    /// alike).
    pub(super) watched: Vec<(Prefix, String)>,
    /// The config prefix, seen as `config` in templates.
    pub(super) config: Option<Prefix>,
    /// `--check-cmd`, run on each new rendering before it replaces DEST.
    pub(super) check: Option<Check>,
    /// What to do once a DEST changed.
    pub(super) reload: Reload,
    /// Who gets each DEST (by default, who has it now).
    pub(super) owner: Owner,
    /// `--wait`: (MIN, MAX) to coalesce a burst of changes; zero: at once.
    pub(super) wait: (Duration, Duration),
    /// `--cmd-timeout`: how long the check and the reload may run.
    pub(super) timeout: Duration,
    /// `--once`: one round, then exit.
    pub(super) once: bool,
    /// `--dry-run`: print the renderings instead of installing them.
    pub(super) dry_run: bool,
}

/// `--template SRC:DEST[:MODE]`, DEST's directory existing.
fn parse_target(s: &str) -> anyhow::Result<Target> {
    let parts: Vec<&str> = s.split(':').collect();
    let (src, dest, mode) = match parts.as_slice() {
        [src, dest] => (*src, *dest, None),
        [src, dest, mode] => {
            let m = u32::from_str_radix(mode, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| usage(format!("{mode:?} is not an octal mode such as 0644")))?;
            (*src, *dest, Some(m))
        }
        _ => {
            return Err(usage(
                "write SRC:DEST or SRC:DEST:MODE, such as web.conf.j2:/etc/nginx/web.conf:0644",
            ));
        }
    };
    if src.is_empty() || dest.is_empty() {
        return Err(usage("SRC and DEST must not be empty"));
    }
    let dest = PathBuf::from(dest);
    let dir = write::dir_of(&dest);
    if !dir.is_dir() {
        return Err(usage(format!(
            "the directory {} does not exist",
            dir.display()
        )));
    }
    Ok(Target {
        src: src.into(),
        dest,
        mode,
    })
}

/// `--watch [NAME=]PREFIX`: the prefix and its name in templates.
fn parse_watch(s: &str) -> anyhow::Result<(Prefix, String)> {
    let (name, p) = match s.split_once('=') {
        Some((n, p)) => (Some(n), p),
        None => (None, s),
    };
    let p = Prefix::new(p)?;
    let name = name.map_or_else(|| context::default_name(&p), str::to_owned);
    context::check_name(&name)
        .map_err(|e| usage(format!("{e}; name it yourself with --watch NAME={p}")))?;
    Ok((p, name))
}

/// `--owner USER[:GROUP]`, by name or number, looked up now.
fn parse_owner(s: &str) -> anyhow::Result<Owner> {
    use nix::unistd::{Gid, Group, Uid, User};
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let uid = match u.parse::<u32>() {
        Ok(n) => Uid::from_raw(n),
        Err(_) => {
            User::from_name(u)
                .ok()
                .flatten()
                .ok_or_else(|| usage(format!("there is no user {u:?}")))?
                .uid
        }
    };
    let gid = match g {
        None | Some("") => None,
        Some(g) => Some(match g.parse::<u32>() {
            Ok(n) => Gid::from_raw(n),
            Err(_) => {
                Group::from_name(g)
                    .ok()
                    .flatten()
                    .ok_or_else(|| usage(format!("there is no group {g:?}")))?
                    .gid
            }
        }),
    };
    Ok(Owner {
        uid: Some(uid),
        gid,
    })
}

/// `--reload-cmd CMD`: split into argv, its program found.
fn parse_cmd(s: &str) -> anyhow::Result<Argv> {
    let argv = shlex::split(s).ok_or_else(|| usage("unbalanced quotes"))?;
    let Some(prog) = argv.first() else {
        return Err(usage("it is empty; give a command"));
    };
    if which(prog).is_none() {
        return Err(usage(format!(
            "{prog:?} is not an executable file or a command in PATH"
        )));
    }
    Ok(Argv(argv))
}

/// `--check-cmd CMD`: as [`parse_cmd`], and naming the new file.
fn parse_check_cmd(s: &str) -> anyhow::Result<Argv> {
    let argv = parse_cmd(s)?;
    if !argv
        .0
        .iter()
        .any(|w| w.contains("{{src}}") || w.contains("{{ src }}"))
    {
        return Err(usage(
            "it does not name the new file: write {{src}} where its path goes, such as \"nginx -t -c {{src}}\" (without it the check would read the old file)",
        ));
    }
    Ok(argv)
}

impl Plan {
    /// The checks that span flags, and the templates compiled.
    pub(super) fn new(a: &RenderArgs) -> anyhow::Result<Self> {
        for (i, t) in a.templates.iter().enumerate() {
            if a.templates[..i].iter().any(|o| o.dest == t.dest) {
                return Err(usage(format!(
                    "two --template flags write {}",
                    t.dest.display()
                )));
            }
        }
        let mut templates = Templates::new()?;
        for t in &a.templates {
            if !templates.has(&t.src) {
                templates.add(&t.src).map_err(usage)?;
            }
        }
        for (i, (p, name)) in a.watch.iter().enumerate() {
            if let Some((q, _)) = a.watch[..i].iter().find(|(_, n)| n == name) {
                return Err(usage(format!(
                    "--watch: {q} and {p} would both be `{name}` in templates; name one with --watch NAME=PREFIX"
                )));
            }
        }
        if a.watch.is_empty() && a.config.is_none() {
            return Err(usage(
                "nothing to watch: give --watch PREFIX (and/or --config PREFIX)",
            ));
        }
        let reload = match (&a.reload_cmd, a.reload_signal, &a.pid_file, &a.reload_unit) {
            (Some(Argv(argv)), ..) => Reload::Command(argv.clone()),
            (None, Some(signal), Some(pid_file), _) => Reload::Signal {
                signal,
                pid_file: pid_file.clone(),
            },
            (None, None, None, Some(unit)) => Reload::Unit(unit.clone()),
            // clap makes --reload-signal and --pid-file go together, and
            // each of the three conflict with the others.
            _ => Reload::Nothing,
        };
        Ok(Plan {
            targets: a.templates.clone(),
            templates,
            watched: a.watch.clone(),
            config: a.config.clone(),
            check: a.check_cmd.as_ref().map(|Argv(argv)| Check {
                argv: argv.clone(),
                timeout: a.cmd_timeout,
            }),
            reload,
            owner: a.owner.unwrap_or_default(),
            wait: a.wait,
            timeout: a.cmd_timeout,
            once: a.once,
            dry_run: a.dry_run,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_watches_owners_and_commands() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("x.conf");
        let t = parse_target(&format!("a.j2:{}:0640", dest.display())).unwrap();
        assert_eq!(t.mode, Some(0o640));
        let msg = |r: anyhow::Result<Target>| r.unwrap_err().to_string();
        assert!(msg(parse_target(&format!("a.j2:{}:rw", dest.display()))).contains("octal"));
        assert!(msg(parse_target("a.j2:/no/such/dir/x.conf")).contains("does not exist"));
        assert!(msg(parse_target("a.j2")).contains("SRC:DEST"));
        assert!(msg(parse_target(":x")).contains("must not be empty"));

        let (p, name) = parse_watch("/services/web-lb").unwrap();
        assert_eq!((p.as_str(), name.as_str()), ("/services/web-lb", "web_lb"));
        assert_eq!(parse_watch("lb=/services/web").unwrap().1, "lb");
        let e = parse_watch("config=/x").unwrap_err().to_string();
        assert!(e.contains("taken by the template context"), "{e}");
        assert!(e.contains("--watch NAME=/x"), "{e}");
        assert!(parse_watch("web").is_err());

        assert_eq!(
            parse_owner("0:0").unwrap().uid,
            Some(nix::unistd::Uid::from_raw(0))
        );
        assert!(
            parse_owner("no-such-user-here")
                .unwrap_err()
                .to_string()
                .contains("there is no user")
        );

        assert_eq!(
            parse_cmd("sh -c 'exit 0'").unwrap(),
            Argv(vec!["sh".into(), "-c".into(), "exit 0".into()])
        );
        assert!(parse_cmd("sh -c 'x").is_err());
        assert!(parse_cmd("  ").unwrap_err().to_string().contains("empty"));
        assert!(parse_check_cmd("sh -n {{src}}").is_ok());
        assert!(
            parse_check_cmd("sh -n")
                .unwrap_err()
                .to_string()
                .contains("does not name the new file")
        );
    }

    /// The flags as clap parses them into a plan, and the checks that span
    /// flags.
    #[test]
    fn plans_check_across_flags() {
        use clap::Parser;
        #[derive(Parser, Debug)]
        struct Cli {
            #[command(flatten)]
            render: RenderArgs,
        }
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("t.j2");
        std::fs::write(&src, "x\n").unwrap();
        let target = format!("{}:{}/out", src.display(), d.path().display());
        let plan = |extra: &[&str]| {
            let mut args = vec!["render", "--template", &target];
            args.extend_from_slice(extra);
            Plan::new(&Cli::try_parse_from(args).unwrap().render)
        };
        let p = plan(&[
            "--watch",
            "/a",
            "--wait",
            "1s",
            "--reload-signal",
            "HUP",
            "--pid-file",
            "/run/x.pid",
        ])
        .unwrap();
        assert_eq!(p.wait, (Duration::from_secs(1), Duration::from_secs(4)));
        assert!(matches!(
            p.reload,
            Reload::Signal {
                signal: Signal::SIGHUP,
                ..
            }
        ));
        assert_eq!(
            plan(&["--watch", "/a"]).unwrap().wait,
            (Duration::ZERO, Duration::ZERO)
        );
        let err = |extra: &[&str]| plan(extra).unwrap_err().to_string();
        assert!(err(&[]).contains("nothing to watch"));
        assert!(err(&["--watch", "/a/web", "--watch", "/b/web"]).contains("would both be `web`"));
        assert!(err(&["--watch", "/a", "--template", &target]).contains("two --template flags"));
    }
}
