//! `make bench` cannot rot: its binary runs every figure at a tiny scale
//! (`--quick`) against a real etcd and Docker, and writes a report with a
//! row and a measured number for each of P1..P8 and R (discover render). The figures themselves
//! mean nothing at this scale and on a loaded machine; only `make bench`
//! produces the ones in BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use harness::proc::bin_path;

#[test]
fn bench_quick_writes_every_figure() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("BENCHMARKS.md");
    let run = Command::new(bin_path("bench"))
        .arg("--quick")
        .arg("--out")
        .arg(&out)
        .env_remove("DOCKER_HOST")
        .env_remove("ETCDCTL_ENDPOINTS")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "bench --quick failed:\n{stderr}");
    let report = std::fs::read_to_string(&out).expect("the report was written");
    for id in ["P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "R"] {
        let row = report
            .lines()
            .find(|l| l.starts_with(&format!("| {id} |")))
            .unwrap_or_else(|| panic!("no summary row for {id}:\n{report}"));
        // "ours" is the third column: it must hold a measured number.
        let ours = row.split('|').nth(3).unwrap_or_default();
        assert!(
            ours.chars().any(|c| c.is_ascii_digit()) && !row.contains("NaN"),
            "{id} has no figure: {row}"
        );
    }
    assert!(report.contains("- Command:"), "the command is named");
    assert!(report.contains("- Kernel:"), "the machine is described");
    assert!(report.contains("etcd"), "the etcd version is named");
}
