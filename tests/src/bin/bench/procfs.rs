//! CPU time and resident memory from /proc.

use std::time::Duration;

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU time of `pid`; with `children`, also of its children it has reaped
/// (for a shell loop: every docker, jq and etcdctl it ran).
pub fn cpu(pid: i32, children: bool) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return Duration::ZERO;
    };
    // Fields after "(comm)": state is index 0; utime 11, stime 12, cutime 13, cstime 14.
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let ticks = if children {
        f[11] + f[12] + f[13] + f[14]
    } else {
        f[11] + f[12]
    };
    Duration::from_secs_f64(ticks / clock_ticks())
}

/// User and kernel CPU time of `pid` (clock ticks; coarse, for windows of
/// seconds of CPU): what share of a process's time the kernel spends on
/// its behalf.
pub fn cpu_split(pid: i32) -> (Duration, Duration) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return (Duration::ZERO, Duration::ZERO);
    };
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let t = clock_ticks();
    (
        Duration::from_secs_f64(f[11] / t),
        Duration::from_secs_f64(f[12] / t),
    )
}

/// Resident memory of `pid` in KiB.
pub fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Resident memory of `pid` and all its descendants, in KiB.
pub fn tree_rss_kib(pid: i32) -> u64 {
    rss_kib(pid)
        + harness::proc::descendants(pid)
            .into_iter()
            .map(rss_kib)
            .sum::<u64>()
}

/// CPU time of every thread of `pid`, to the nanosecond (schedstat), for
/// processes too frugal for clock ticks.
pub fn cpu_precise(pid: i32) -> Duration {
    let mut ns = 0u64;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                ns += s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    Duration::from_nanos(ns)
}

/// Wake-ups of every thread of `pid` so far: its voluntary context
/// switches (each one a sleep that something had to end).
pub fn wakeups(pid: i32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .sum()
}
