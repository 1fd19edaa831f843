//! units/: every unit passes `systemd-analyze verify` (with the real
//! binaries installed where the units expect them, by `make install`), and
//! the sidekick units carry what a well-kept daemon unit should, and no
//! unit that runs our tools is exposed above 2.0 (`systemd-analyze
//! security`). tests/tests/systemd_units.rs runs them under a real systemd.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

fn units() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(harness::repo().join("units"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".service"))
        .collect();
    v.sort();
    v
}

/// The programs the units name, for `systemd-analyze verify`.
const PROGRAMS: &[&str] = &["/usr/bin/docker", "/usr/bin/node", "/usr/bin/touch"];

fn install_root(dest: &Path, prefix: &str) {
    harness::install::install_root(dest, prefix, PROGRAMS);
}

fn instance(unit: &str) -> String {
    unit.replace("@.service", "@1.service")
}

#[test]
fn every_unit_verifies_with_the_binaries_installed() {
    let dest = tempfile::tempdir().unwrap();
    install_root(dest.path(), "/usr/local");
    for bin in ["sidekick", "discover"] {
        assert!(
            dest.path().join("usr/local/bin").join(bin).exists(),
            "make install put {bin} in PREFIX/bin"
        );
    }
    assert!(
        dest.path()
            .join("usr/local/share/sidekick/examples/node-web/app.js")
            .exists()
    );
    let all: Vec<String> = units().iter().map(|u| instance(u)).collect();
    assert!(all.len() >= 8, "{all:?}");
    let (ok, text) = harness::install::verify(dest.path(), &all);
    assert!(
        ok && text.trim().is_empty(),
        "systemd-analyze verify {all:?}:\n{text}"
    );
}

#[test]
fn prefix_is_honoured_and_the_check_catches_a_missing_binary() {
    let dest = tempfile::tempdir().unwrap();
    install_root(dest.path(), "/opt/sk");
    // Outside /usr and /usr/local, units go where systemd looks: /etc/systemd/system.
    let unit = std::fs::read_to_string(
        dest.path()
            .join("etc/systemd/system/memcached-sidekick@.service"),
    )
    .unwrap();
    assert!(
        unit.contains("ExecStart=/opt/sk/bin/sidekick --key /services/memcached/%i"),
        "{unit}"
    );
    let unit = ["memcached-sidekick@1.service".to_owned()];
    let (ok, said) = harness::install::verify(dest.path(), &unit);
    assert!(ok && said.trim().is_empty(), "{said}");
    std::fs::remove_file(dest.path().join("opt/sk/bin/sidekick")).unwrap();
    let (ok, said) = harness::install::verify(dest.path(), &unit);
    assert!(!ok, "a missing binary must fail the check");
    assert!(said.contains("/opt/sk/bin/sidekick"), "{said}");
}

#[test]
fn sidekick_units_are_well_kept() {
    // What every sidekick unit has, the generic template included.
    let common = [
        "Type=notify",
        "Restart=always",
        "TimeoutStartSec=30s",
        "RestartPreventExitStatus=2",
        "EnvironmentFile=-/etc/default/sidekick",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
    ];
    let mut specific = vec![(
        "sidekick@.service",
        vec!["ExecStart=/usr/local/bin/sidekick --key ${SIDEKICK_PREFIX}/%i --container %i $SIDEKICK_ARGS".to_owned()],
    )];
    for (unit, container, port) in [
        ("memcached-sidekick@.service", "memcached", "11211"),
        ("couchbase-sidekick@.service", "couchbase", "8091"),
    ] {
        specific.push((
            unit,
            vec![
                format!(
                    "ExecStart=/usr/local/bin/sidekick --key /services/{container}/%i --container {container}-%i --port {port}"
                ),
                format!("BindsTo={container}@%i.service"),
                format!("After={container}@%i.service"),
            ],
        ));
    }
    for (unit, lines) in &specific {
        let text = std::fs::read_to_string(harness::repo().join("units").join(unit)).unwrap();
        for line in common
            .iter()
            .copied()
            .chain(lines.iter().map(String::as_str))
        {
            assert!(text.lines().any(|l| l == line), "{unit} lacks {line:?}");
        }
        let families = text
            .lines()
            .find(|l| l.starts_with("RestrictAddressFamilies="))
            .expect("RestrictAddressFamilies");
        assert!(
            families.contains("AF_UNIX"),
            "{unit}: the Docker socket needs AF_UNIX: {families}"
        );
    }
    // Better than the chapter on every point: no etcdctl, no shell loops, no sleeps.
    for unit in units() {
        let text = std::fs::read_to_string(harness::repo().join("units").join(&unit)).unwrap();
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            for banned in ["etcdctl", "while ", "sleep ", "bash -c", "sh -c"] {
                assert!(
                    !line.contains(banned),
                    "{unit} still has {banned:?}: {line}"
                );
            }
        }
    }
    let web = std::fs::read_to_string(harness::repo().join("units/web@.service")).unwrap();
    assert!(web.contains(
        "ExecStart=/usr/local/bin/discover watch /services/couchbase /services/memcached"
    ));
    let worker = std::fs::read_to_string(harness::repo().join("units/worker.service")).unwrap();
    assert!(worker.contains(
        "ExecStart=/usr/local/bin/discover watch /services/couchbase --wait 1s:5s --exec /usr/bin/node"
    ));
}

/// The highest exposure `systemd-analyze security` may rate a unit that
/// runs sidekick or discover (it rated them 3.5-3.7 before the sandbox was
/// tightened; 1.3 now).
const MAX_EXPOSURE: f64 = 2.0;

/// `systemd-analyze security --offline` of `unit` in `root`: its score.
fn exposure(root: &Path, unit: &str) -> (f64, String) {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(format!("--root={}", root.display()))
        .arg(unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let score = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for ").nth(1))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no score for {unit}:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    (score, text)
}

#[test]
fn every_unit_that_runs_our_tools_is_exposed_at_most_2() {
    let dest = tempfile::tempdir().unwrap();
    install_root(dest.path(), "/usr/local");
    let ours: Vec<String> = units()
        .into_iter()
        .filter(|u| {
            let text = std::fs::read_to_string(harness::repo().join("units").join(u)).unwrap();
            text.lines().any(|l| {
                l.starts_with("ExecStart=/usr/local/bin/sidekick")
                    || l.starts_with("ExecStart=/usr/local/bin/discover")
            })
        })
        .collect();
    assert!(ours.len() >= 5, "{ours:?}");
    // And the nginx example's render unit, which `make install` installs
    // beside them (its nginx unit runs nginx, not our tools).
    let mut ours = ours;
    ours.push("web-lb.service".into());
    for u in &ours {
        let (score, text) = exposure(dest.path(), &instance(u));
        assert!(
            score <= MAX_EXPOSURE,
            "{u}: exposure {score} > {MAX_EXPOSURE}:\n{text}"
        );
    }
    // The check can fail: the same unit without its sandbox scores far higher.
    let unit = dest
        .path()
        .join("usr/local/lib/systemd/system/memcached-sidekick@.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    let bare: String = text
        .lines()
        .filter(|l| {
            !l.starts_with("Protect") && !l.starts_with("SystemCall") && !l.starts_with("Private")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&unit, bare).unwrap();
    let (score, _) = exposure(dest.path(), "memcached-sidekick@1.service");
    assert!(score > MAX_EXPOSURE, "unsandboxed score {score}");
}
