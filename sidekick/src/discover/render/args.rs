//! `discover render`'s command line, checked before any I/O: the
//! templates compiled (a syntax error exits 2 with file, line and column),
//! the destinations' directories, the commands and the reload.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use discovery::Prefix;

use super::context;
use super::reload::Reload;
use super::template::Templates;
use super::write::{self, Check, Owner, Target};
use crate::common::etcd_args::parse_positive_duration;
use crate::common::exit::usage;

/// `discover render`.
#[derive(Args, Debug)]
#[command(
    after_help = "Example:\n  discover render --watch /services/web \\\n    --template /etc/nginx/web-lb.conf.j2:/etc/nginx/web-lb.conf \\\n    --check-cmd 'nginx -t -q -c {{src}}' --reload-cmd 'nginx -s reload -c /etc/nginx/web-lb.conf' --wait 100ms:2s"
)]
pub struct RenderArgs {
    /// Render the template SRC to DEST (MODE in octal, such as 0644; default: DEST's mode, or 0644); repeat for more
    #[arg(long = "template", required = true, value_name = "SRC:DEST[:MODE]")]
    pub templates: Vec<String>,
    /// Watch PREFIX; templates see its keys as NAME (default: its last segment) and as prefixes["PREFIX"]
    #[arg(long = "watch", value_name = "[NAME=]PREFIX")]
    pub watch: Vec<String>,
    /// Follow the typed config under PREFIX; templates see it as `config`
    #[arg(long, value_name = "PREFIX")]
    pub config: Option<String>,
    /// Check each new rendering before it replaces DEST; {{src}} is the new file's path (such as "nginx -t -c {{src}}"); split into argv, no shell
    #[arg(long, value_name = "CMD")]
    pub check_cmd: Option<String>,
    /// After a DEST changed, run CMD (split into argv, no shell: write sh -c '...' for one)
    #[arg(long, value_name = "CMD", conflicts_with_all = ["reload_signal", "reload_unit"])]
    pub reload_cmd: Option<String>,
    /// After a DEST changed, send SIG (such as SIGHUP) to the process in --pid-file
    #[arg(
        long,
        value_name = "SIG",
        requires = "pid_file",
        conflicts_with = "reload_unit"
    )]
    pub reload_signal: Option<String>,
    /// The pid file for --reload-signal
    #[arg(long, value_name = "FILE", requires = "reload_signal")]
    pub pid_file: Option<PathBuf>,
    /// After a DEST changed, run `systemctl reload NAME`
    #[arg(long, value_name = "NAME")]
    pub reload_unit: Option<String>,
    /// Give each DEST to USER (and GROUP; without one, DEST's current group); default: DEST's current owner
    #[arg(long, value_name = "USER[:GROUP]")]
    pub owner: Option<String>,
    /// Coalesce a burst: render once MIN passed with no further change, never later than MAX after the first [default MAX: 4*MIN; 0: at once]
    #[arg(long, value_name = "MIN[:MAX]")]
    pub wait: Option<String>,
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

/// Everything the command line says, checked before any I/O.
#[derive(Debug)]
pub(super) struct Plan {
    pub(super) targets: Vec<Target>,
    pub(super) templates: Templates,
    pub(super) watched: Vec<(Prefix, String)>,
    pub(super) config: Option<Prefix>,
    pub(super) check: Option<Check>,
    pub(super) reload: Reload,
    pub(super) owner: Owner,
    pub(super) wait: (Duration, Duration),
    pub(super) timeout: Duration,
    pub(super) once: bool,
    pub(super) dry_run: bool,
}

fn split_cmd(flag: &str, s: &str) -> anyhow::Result<Vec<String>> {
    let argv = shlex::split(s).ok_or_else(|| usage(format!("{flag} {s:?}: unbalanced quotes")))?;
    let Some(prog) = argv.first() else {
        return Err(usage(format!("{flag} is empty; give a command")));
    };
    if super::super::exec_args::which(&prog.into()).is_none() {
        return Err(usage(format!(
            "{flag}: {prog:?} is not an executable file or a command in PATH"
        )));
    }
    Ok(argv)
}

/// `--wait MIN[:MAX]`, where 0 means at once.
fn parse_wait(s: &str) -> anyhow::Result<(Duration, Duration)> {
    let bad = |e: String| usage(format!("--wait {s}: {e}"));
    let (min, max) = match s.split_once(':') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let min = discovery::parse_duration(min).map_err(bad)?;
    let max = match max {
        Some(m) => discovery::parse_duration(m).map_err(bad)?,
        None => min * 4,
    };
    if max < min {
        return Err(usage(format!(
            "--wait {s}: MAX ({max:?}) is shorter than MIN ({min:?})"
        )));
    }
    Ok((min, max))
}

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
                .ok_or_else(|| usage(format!("--owner {s}: there is no user {u:?}")))?
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
                    .ok_or_else(|| usage(format!("--owner {s}: there is no group {g:?}")))?
                    .gid
            }
        }),
    };
    Ok(Owner {
        uid: Some(uid),
        gid,
    })
}

fn parse_target(s: &str) -> anyhow::Result<Target> {
    let parts: Vec<&str> = s.split(':').collect();
    let (src, dest, mode) = match parts.as_slice() {
        [src, dest] => (*src, *dest, None),
        [src, dest, mode] => {
            let m = u32::from_str_radix(mode, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| {
                    usage(format!(
                        "--template {s}: {mode:?} is not an octal mode such as 0644"
                    ))
                })?;
            (*src, *dest, Some(m))
        }
        _ => {
            return Err(usage(format!(
                "--template {s:?}: write SRC:DEST or SRC:DEST:MODE, such as web.conf.j2:/etc/nginx/web.conf:0644"
            )));
        }
    };
    if src.is_empty() || dest.is_empty() {
        return Err(usage(format!(
            "--template {s:?}: SRC and DEST must not be empty"
        )));
    }
    let dest = PathBuf::from(dest);
    let dir = write::dir_of(&dest);
    if !dir.is_dir() {
        return Err(usage(format!(
            "--template {s}: the directory {} does not exist",
            dir.display()
        )));
    }
    Ok(Target {
        src: src.into(),
        dest,
        mode,
    })
}

impl Plan {
    pub(super) fn new(a: &RenderArgs) -> anyhow::Result<Self> {
        let targets = a
            .templates
            .iter()
            .map(|t| parse_target(t))
            .collect::<anyhow::Result<Vec<_>>>()?;
        for (i, t) in targets.iter().enumerate() {
            if targets[..i].iter().any(|o| o.dest == t.dest) {
                return Err(usage(format!(
                    "two --template flags write {}",
                    t.dest.display()
                )));
            }
        }
        let mut templates = Templates::new()?;
        for t in &targets {
            if !templates.has(&t.src) {
                templates.add(&t.src).map_err(usage)?;
            }
        }
        let mut watched: Vec<(Prefix, String)> = Vec::new();
        for w in &a.watch {
            let (name, p) = match w.split_once('=') {
                Some((n, p)) => (Some(n), p),
                None => (None, w.as_str()),
            };
            let p = Prefix::new(p)?;
            let name = name.map_or_else(|| context::default_name(&p), str::to_owned);
            context::check_name(&name).map_err(|e| {
                usage(format!(
                    "--watch {w}: {e}; name it yourself with --watch NAME={p}"
                ))
            })?;
            if let Some((q, _)) = watched.iter().find(|(_, n)| *n == name) {
                return Err(usage(format!(
                    "--watch: {q} and {p} would both be `{name}` in templates; name one with --watch NAME=PREFIX"
                )));
            }
            watched.push((p, name));
        }
        let config = a.config.as_deref().map(Prefix::new).transpose()?;
        if watched.is_empty() && config.is_none() {
            return Err(usage(
                "nothing to watch: give --watch PREFIX (and/or --config PREFIX)",
            ));
        }
        let check = a
            .check_cmd
            .as_deref()
            .map(|c| {
                let argv = split_cmd("--check-cmd", c)?;
                if !argv.iter().any(|w| w.contains("{{src}}") || w.contains("{{ src }}")) {
                    return Err(usage(format!(
                        "--check-cmd {c:?} does not name the new file: write {{{{src}}}} where its path goes, such as \"nginx -t -c {{{{src}}}}\" (without it the check would read the old file)"
                    )));
                }
                Ok(argv)
            })
            .transpose()?
            .map(|argv| Check {
                argv,
                timeout: a.cmd_timeout,
            });
        let reload = match (&a.reload_cmd, &a.reload_signal, &a.pid_file, &a.reload_unit) {
            (Some(c), ..) => Reload::Command(split_cmd("--reload-cmd", c)?),
            (None, Some(sig), Some(pid_file), _) => Reload::Signal {
                signal: super::super::parse_signal(sig)?,
                pid_file: pid_file.clone(),
            },
            (None, None, None, Some(unit)) => Reload::Unit(unit.clone()),
            // clap makes --reload-signal and --pid-file go together.
            _ => Reload::Nothing,
        };
        let owner = a
            .owner
            .as_deref()
            .map(parse_owner)
            .transpose()?
            .unwrap_or_default();
        let wait = a
            .wait
            .as_deref()
            .map(parse_wait)
            .transpose()?
            .unwrap_or_default();
        Ok(Plan {
            targets,
            templates,
            watched,
            config,
            check,
            reload,
            owner,
            wait,
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
    fn waits_targets_and_owners() {
        assert_eq!(parse_wait("0").unwrap(), (Duration::ZERO, Duration::ZERO));
        assert_eq!(
            parse_wait("1s").unwrap(),
            (Duration::from_secs(1), Duration::from_secs(4))
        );
        assert!(parse_wait("2s:1s").is_err());
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("x.conf");
        let t = parse_target(&format!("a.j2:{}:0640", dest.display())).unwrap();
        assert_eq!(t.mode, Some(0o640));
        assert!(parse_target(&format!("a.j2:{}:rw", dest.display())).is_err());
        assert!(parse_target("a.j2:/no/such/dir/x.conf").is_err());
        assert!(parse_target("a.j2").is_err());
        assert_eq!(
            parse_owner("0:0").unwrap().uid,
            Some(nix::unistd::Uid::from_raw(0))
        );
        assert!(parse_owner("no-such-user-here").is_err());
    }
}
