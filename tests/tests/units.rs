//! units/: every unit passes `systemd-analyze verify` (with the real
//! binaries installed where the units expect them, by `make install`), and
//! the sidekick units carry what a well-kept daemon unit should.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn units() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(repo().join("units"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".service"))
        .collect();
    v.sort();
    v
}

/// `make install` into `dest` with `prefix`, then a root that systemd-analyze
/// can verify against: systemd's own units, and the real docker and node.
fn install_root(dest: &Path, prefix: &str) {
    let out = Command::new("make")
        .arg("-C")
        .arg(repo())
        .args(["-s", "install", "PROFILE=debug"])
        .arg(format!("DESTDIR={}", dest.display()))
        .arg(format!("PREFIX={prefix}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "make install: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::create_dir_all(dest.join("lib/systemd")).unwrap();
    let cp = Command::new("cp")
        .args(["-a", "/lib/systemd/system"])
        .arg(dest.join("lib/systemd/"))
        .status()
        .unwrap();
    assert!(cp.success());
    std::fs::create_dir_all(dest.join("usr/bin")).unwrap();
    for bin in ["docker", "node", "touch"] {
        let src = Path::new("/usr/bin").join(bin);
        assert!(src.exists(), "/usr/bin/{bin} is needed to verify the units");
        let dst = dest.join("usr/bin").join(bin);
        if std::fs::hard_link(&src, &dst).is_err() {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
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
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", dest.path().display()))
        .args(&all)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // verify exits 0 on unknown keys and bad values (it only warns), so any
    // output at all is a failure.
    assert!(
        out.status.success() && text.trim().is_empty(),
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
    let verify = |u: &str| {
        Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", dest.path().display()))
            .arg(u)
            .output()
            .unwrap()
    };
    let ok = verify("memcached-sidekick@1.service");
    assert!(
        ok.status.success() && ok.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    std::fs::remove_file(dest.path().join("opt/sk/bin/sidekick")).unwrap();
    let bad = verify("memcached-sidekick@1.service");
    assert!(
        !bad.status.success(),
        "a missing binary must fail the check"
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/opt/sk/bin/sidekick"));
}

#[test]
fn sidekick_units_are_well_kept() {
    // What every sidekick unit has, the generic template included.
    let common = [
        "Type=notify",
        "Restart=always",
        "TimeoutStartSec=infinity",
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
        let text = std::fs::read_to_string(repo().join("units").join(unit)).unwrap();
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
        let text = std::fs::read_to_string(repo().join("units").join(&unit)).unwrap();
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            for banned in ["etcdctl", "while ", "sleep ", "bash -c", "sh -c"] {
                assert!(
                    !line.contains(banned),
                    "{unit} still has {banned:?}: {line}"
                );
            }
        }
    }
    let web = std::fs::read_to_string(repo().join("units/web@.service")).unwrap();
    assert!(web.contains(
        "ExecStart=/usr/local/bin/discover watch /services/couchbase /services/memcached"
    ));
    let worker = std::fs::read_to_string(repo().join("units/worker.service")).unwrap();
    assert!(worker.contains(
        "ExecStart=/usr/local/bin/discover watch /services/couchbase --wait 1s:5s --exec /usr/bin/node"
    ));
}
