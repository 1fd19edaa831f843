//! The man pages and `--version`, as `make install` (and so the package)
//! installs them: man-db renders each page without a warning, and each
//! page names every flag and variable its command's `--help` lists, and
//! every variable the tool's code reads. `--version` names the commit and
//! the APIs, and touches neither etcd nor Docker.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `make install PREFIX=/usr` into `dest`; the man pages' directory.
fn install(dest: &Path) -> PathBuf {
    harness::install::make_install(dest, "/usr");
    dest.join("usr/share/man/man1")
}

/// `bin args… --help`.
fn help(bin: &str, args: &[&str]) -> String {
    let o = Command::new(harness::bin_path(bin))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(o.status.success(), "{bin} {args:?} --help");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The flags of a `--help`: each option line's `-x` and `--name`.
fn flags(help: &str) -> Vec<String> {
    let mut v = Vec::new();
    for line in help.lines() {
        let t = line.trim_start();
        if !t.starts_with('-') {
            continue;
        }
        // The option part ends where the description starts (two spaces).
        let head = t.split("  ").next().unwrap_or(t);
        for word in head.split([' ', ',', '=']) {
            let w = word.split('<').next().unwrap_or(word);
            if w.starts_with('-') && w.len() > 1 {
                v.push(w.to_owned());
            }
        }
    }
    v
}

/// The `[env: NAME=…]` variables of a `--help`.
fn env_vars(help: &str) -> Vec<String> {
    help.split("[env: ")
        .skip(1)
        .filter_map(|s| s.split('=').next())
        .map(str::to_owned)
        .collect()
}

/// Whether `text` names `word` on its own (not as part of a longer flag).
fn names(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(i, _)| {
        let after = text[i + word.len()..].chars().next();
        let before = text[..i].chars().next_back();
        !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

/// `man --warnings -l PAGE` at 80 columns: the text, or a panic with the warnings.
fn render(page: &Path) -> String {
    let o = Command::new("man")
        .args(["--warnings", "-l"])
        .arg(page)
        .env("MANWIDTH", "80")
        .env("LC_ALL", "C.UTF-8")
        .env("MAN_KEEP_FORMATTING", "")
        .env_remove("MANPAGER")
        .env_remove("PAGER")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && stderr.trim().is_empty(),
        "man --warnings -l {}: {}\n{stderr}",
        page.display(),
        o.status
    );
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    // Rendered for a terminal: bold and underline as overstrikes.
    let mut plain = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if chars.peek() == Some(&'\u{8}') {
            chars.next();
            continue;
        }
        plain.push(c);
    }
    plain.replace(['\u{2010}', '\u{2212}'], "-")
}

/// The variables a tool's code reads by name (`var("X")`, `var_os("X")`).
fn read_vars(dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            read_vars(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let text = std::fs::read_to_string(&p).unwrap();
            for pat in ["var(\"", "var_os(\""] {
                for s in text.split(pat).skip(1) {
                    let name: String = s.chars().take_while(|c| *c != '"').collect();
                    if !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_')
                    {
                        out.push(name);
                    }
                }
            }
        }
    }
}

#[test]
fn man_pages_render_cleanly_and_name_every_flag_and_variable() {
    let dest = tempfile::tempdir().unwrap();
    let man = install(dest.path());
    let mut pages: Vec<(String, String, Vec<String>)> = vec![
        ("sidekick.1".into(), help("sidekick", &[]), vec![]),
        ("discover.1".into(), help("discover", &[]), vec![]),
    ];
    let top = help("discover", &[]);
    let subs: Vec<String> = top
        .split("Commands:")
        .nth(1)
        .unwrap()
        .lines()
        .skip(1)
        .map_while(|l| l.strip_prefix("  "))
        // A wrapped line of a command's description is indented further.
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .map(str::to_owned)
        .collect();
    assert!(subs.len() >= 5, "{subs:?}");
    for s in &subs {
        pages.push((
            format!("discover-{s}.1"),
            help("discover", &[s]),
            vec![s.clone()],
        ));
    }
    let src = harness::repo().join("sidekick/src");
    let (mut agent_vars, mut discover_vars, mut common_vars) = (vec![], vec![], vec![]);
    read_vars(&src.join("agent"), &mut agent_vars);
    read_vars(&src.join("discover"), &mut discover_vars);
    read_vars(&src.join("common"), &mut common_vars);
    assert!(
        agent_vars.contains(&"DOCKER_HOST".to_owned()),
        "{agent_vars:?}"
    );

    for (page, help, _) in &pages {
        let text = render(&man.join(page));
        for section in [
            "NAME",
            "SYNOPSIS",
            "DESCRIPTION",
            "ENVIRONMENT",
            "EXIT STATUS",
            "FILES",
            "SEE ALSO",
        ] {
            assert!(
                text.lines().any(|l| l == section),
                "{page}: no {section} section\n{text}"
            );
        }
        let fl = flags(help);
        assert!(fl.len() > 5, "{page}: {fl:?}");
        for f in &fl {
            assert!(
                names(&text, f),
                "{page} does not name {f}, which --help lists\n{text}"
            );
        }
        for v in env_vars(help) {
            assert!(
                names(&text, &v),
                "{page} does not name {v}, which --help lists"
            );
        }
        let mut read = common_vars.clone();
        read.extend(if page.starts_with("sidekick") {
            agent_vars.clone()
        } else {
            discover_vars.clone()
        });
        for v in &read {
            assert!(
                names(&text, v),
                "{page} does not name {v}, which the code reads"
            );
        }
        for line in text.lines() {
            assert!(
                line.chars().count() <= 80,
                "{page}: a line over 80 columns: {line:?}"
            );
        }
    }
    let sk = render(&man.join("sidekick.1"));
    for needle in [
        "LABELS",
        "discovery.key",
        "discovery.port",
        "SERVICE_NAME",
        "SIGNALS",
        "SIGUSR2",
        "128+N",
    ] {
        assert!(sk.contains(needle), "sidekick.1 lacks {needle}");
    }
    let files = sk
        .split("\nFILES\n")
        .nth(1)
        .and_then(|f| f.split("\nSEE ALSO\n").next())
        .unwrap_or_default();
    assert!(
        files.contains("/usr/lib/systemd/system/memcached-sidekick@.service")
            && files.contains("/etc/default/sidekick")
            && files.contains("/usr/bin/sidekick")
            && !files.contains("/usr/local"),
        "sidekick.1's FILES names the installed units and their files:\n{files}"
    );
    let dc = render(&man.join("discover.1"));
    for s in &subs {
        assert!(
            dc.contains(&format!("discover-{s}(1)")),
            "discover.1 refers to discover-{s}(1)"
        );
    }
    assert!(dc.contains("/usr/lib/systemd/system/web@.service"), "{dc}");
}

fn git_commit() -> Option<String> {
    let o = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(harness::repo())
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

#[test]
fn version_names_the_commit_and_the_apis_and_touches_nothing() {
    // An etcd endpoint and a Docker socket that record any connection.
    let etcd = TcpListener::bind("127.0.0.1:0").unwrap();
    etcd.set_nonblocking(true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("docker.sock");
    let docker = UnixListener::bind(&sock).unwrap();
    docker.set_nonblocking(true).unwrap();
    let endpoint = format!("http://{}", etcd.local_addr().unwrap());
    let commit = git_commit();
    let v = bollard::API_DEFAULT_VERSION;
    for (bin, args) in [
        ("sidekick", &["--version"][..]),
        ("sidekick", &["--all", "--version"]),
        ("discover", &["--version"]),
    ] {
        let o = Command::new(harness::bin_path(bin))
            .args(args)
            .env("ETCDCTL_ENDPOINTS", &endpoint)
            .env("DOCKER_HOST", format!("unix://{}", sock.display()))
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{bin} {args:?}: {out}");
        if args.len() == 1 {
            assert!(
                out.starts_with(&format!("{bin} {}\n", env!("CARGO_PKG_VERSION"))),
                "{out}"
            );
            let line = out
                .lines()
                .find(|l| l.starts_with("commit: "))
                .unwrap_or_default();
            let built = line.trim_start_matches("commit: ");
            assert!(
                built.len() == 12 && built.chars().all(|c| c.is_ascii_hexdigit()),
                "{out}"
            );
            if let Some(c) = &commit {
                assert_eq!(
                    built, c,
                    "the commit checked out (rebuild after committing)"
                );
            }
            assert!(out.contains("etcd API: v3"), "{out}");
            let docker_line = format!("Docker Engine API: {}.{}", v.major_version, v.minor_version);
            assert_eq!(out.contains(&docker_line), bin == "sidekick", "{out}");
        }
    }
    let short = Command::new(harness::bin_path("sidekick"))
        .arg("-V")
        .output()
        .unwrap();
    let short = String::from_utf8_lossy(&short.stdout);
    assert!(
        short.starts_with(&format!("sidekick {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{short}"
    );
    assert!(etcd.accept().is_err(), "--version connected to etcd");
    assert!(docker.accept().is_err(), "--version connected to Docker");
}
