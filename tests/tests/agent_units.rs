//! The host-shape units: sidekick-host.service carries the same hardening
//! as the per-container sidekick units, and the labelled memcached unit
//! gives its container the key as a label instead of a sidekick unit.
//! (`units.rs` checks that every unit verifies with systemd-analyze.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

fn unit(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../units")
            .join(name),
    )
    .unwrap_or_else(|e| panic!("units/{name}: {e}"))
}

/// Directive lines from `[Service]`'s hardening block on: everything
/// after `WatchdogSec=` up to `[Install]`, comments dropped.
fn hardening(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| !l.starts_with("WatchdogSec="))
        .take_while(|l| !l.starts_with("[Install]"))
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn sidekick_host_is_hardened_like_the_other_sidekick_units() {
    let host = unit("sidekick-host.service");
    let reference = hardening(&unit("memcached-sidekick@.service"));
    assert!(reference.len() > 10, "{reference:#?}");
    assert_eq!(hardening(&host), reference);
    for line in [
        "Type=notify",
        "ExecStart=/usr/local/bin/sidekick --all $SIDEKICK_HOST_ARGS",
        "EnvironmentFile=-/etc/default/sidekick",
        "TimeoutStopSec=5",
        "Restart=always",
    ] {
        assert!(host.lines().any(|l| l == line), "missing {line:?}");
    }
}

#[test]
fn the_labelled_memcached_needs_no_sidekick_unit() {
    let m = unit("memcached-labelled@.service");
    assert!(m.contains("--label discovery.key=/services/memcached/%i"));
    assert!(m.contains("--label discovery.port=11211"));
    assert!(m.contains("Wants=sidekick-host.service"));
    assert!(
        m.lines()
            .filter(|l| !l.starts_with('#'))
            .all(|l| !l.contains("memcached-sidekick")),
        "no per-instance sidekick"
    );
}
