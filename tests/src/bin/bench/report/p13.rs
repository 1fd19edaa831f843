//! P13: the fleet by simulation, and its projection to 5,000 hosts × 50
//! containers against etcd's documented limits.

use std::fmt::Write;

use super::{Section, met};
use crate::fleet::Fleet;
use crate::stats::{Summary, num};

/// The fleet the projection is for.
const HOSTS: f64 = 5000.0;
const PER_HOST: f64 = 50.0;
/// sidekick's default TTL, and so its keep-alive every TTL/3.
const TTL_S: f64 = 8.0;
/// The churn the projection assumes: each container stops or starts once
/// an hour on average (a deploy a day of 24 replicas, or a crash loop
/// somewhere). Watch fan-out scales linearly with it.
const CHANGES_PER_CONTAINER_HOUR: f64 = 1.0;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const MIB: f64 = 1024.0 * 1024.0;

/// etcd's documentation, quoted where the projection leans on it.
const DOC_HARDWARE: &str = "https://etcd.io/docs/v3.4/op-guide/hardware/";
const DOC_LIMITS: &str = "https://etcd.io/docs/v3.4/dev-guide/limit/";
const DOC_WATCH: &str = "https://etcd.io/docs/v3.4/benchmarks/etcd-3-watch-memory-benchmark/";
const DOC_PROXY: &str = "https://etcd.io/docs/v3.4/op-guide/grpc_proxy/";

/// One documented limit against what the projected fleet needs.
struct Limit {
    what: &'static str,
    need: String,
    documented: String,
    /// Need over the documented figure.
    share: f64,
    advice: &'static str,
}

pub fn section(f: &Fleet) -> Section {
    let mut s = Section::default();
    let sc = &f.scale;
    let (first, last) = (Summary::of(&f.first), Summary::of(&f.last));
    let sum = |v: &[f64]| v.iter().sum::<f64>();
    let (cpu_steady, cpu_churn) = (sum(&f.etcd.cpu_steady), sum(&f.etcd.cpu_churn));
    let keys = (sc.n * sc.k) as f64;
    let change_rate = f.changes as f64 / f.churn_secs.max(f64::MIN_POSITIVE);
    let ok = last.p99 <= 250.0
        && f.missed == 0
        && f.unexpected == 0
        && f.leases_changed == 0
        && f.unsynced == 0
        && f.keys_found == f.keys_expected;
    s.row([
        "P13",
        &format!(
            "a simulated fleet on a 3-member etcd: {} hosts × {} keys, {} watchers, {} changes at {} /s: change → seen by the \
             last watcher; leases lost",
            sc.n,
            sc.k,
            sc.w,
            f.changes,
            num(change_rate)
        ),
        &format!(
            "p50 {} ms, p99 {} ms; {} leases lost, {} changes missed, {} unexpected events",
            num(last.p50),
            num(last.p99),
            f.leases_changed,
            f.missed,
            f.unexpected
        ),
        &format!("first watcher: p50 {} ms, p99 {} ms", num(first.p50), num(first.p99)),
        "—",
        "p99 ≤ 250 ms at N = W = 500; no lease lost",
        met(ok),
    ]);

    let _ = writeln!(
        s.body_mut(),
        "## P13: the fleet, by simulation\n\nOne host is what this machine runs for real; this is the fleet. A real 3-member etcd \
         cluster on this machine; {n} host agents, each a `discovery::LeaseGroup` holding {k} keys under its own lease (TTL 8 s, \
         what `sidekick --all` holds for a host's containers), played {hp} hosts per process (`bench --fleet-hosts`); {w} consumers \
         each watching all of `/services` through the library (`bench --fleet-watchers`, {wp} watches per process, each with its \
         own snapshot and state, one library client per process); and one real `discover watch /services`, what one host's \
         consumer costs. Registering all {keys} keys took {reg} s; the {w} snapshots, {wat} s, taken {starting} at a time per process \
         as a fleet's hosts start at different moments (all {w} at once never finished: each listing of the whole prefix took \
         longer than the request timeout and was retried, and the retries kept the herd going). Then {steady:.0} s of steady state \
         (keep-alives only), then {changes} changes over {churn:.0} s, spread across the fleet: a host's container stops (its key \
         deleted) and comes back at least 2 s later with a new address. Each change is timed from the moment the host agent asks \
         its group for it to the moment a watch delivers it, on the monotonic clock all the processes share; the first and the \
         last of the {w} watchers are kept. Everything here shares the machine's 2 cores with etcd's three members, so these are \
         upper bounds.\n",
        n = sc.n,
        k = sc.k,
        starting = crate::fleet_procs::STARTING,
        hp = sc.hosts_per_proc,
        w = sc.w,
        wp = sc.watchers_per_proc,
        keys = sc.n * sc.k,
        reg = num(f.registered_in.as_secs_f64()),
        wat = num(f.watching_in.as_secs_f64()),
        steady = f.steady_secs,
        changes = f.changes,
        churn = f.churn_secs,
    );
    s.rows_here();
    s.latencies(
        "p13.svg",
        "P13: a change at a host → seen by the first and the last of the watchers (CDF)",
        true,
        &[
            ("change → first watcher", &f.first),
            ("change → last watcher", &f.last),
        ],
    );
    let _ = writeln!(
        s.body_mut(),
        "Nothing was lost or added: {} of {} groups kept the lease they started with and {} were out of sync at the end; etcd \
         held {} keys where the hosts held {}; {} changes were not seen by every watcher within 30 s; {} events at etcd touched a \
         key the churn did not (a lost lease rewrites its keys; an expiry deletes them).\n",
        sc.n - f.leases_changed.min(sc.n),
        sc.n,
        f.unsynced,
        f.keys_found,
        f.keys_expected,
        f.missed,
        f.unexpected
    );

    let e = &f.etcd;
    let members = |v: &[f64], unit: &str| {
        v.iter()
            .map(|x| format!("{}{unit}", num(*x)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        s.body_mut(),
        "### What etcd did (its own `/metrics`)\n\n| | steady | churn |\n|---|---|---|\n\
         | CPU, each member (cores) | {} | {} |\n\
         | requests received per second, all members | {} | {} |\n\
         | of which lease keep-alives | {} ({} expected: {} leases every {} s) | — |\n\
         | watch responses sent per second | — | {} |\n\n\
         Memory: {} resident. Database: {} MiB empty, {} MiB with the {} keys, {} MiB after the churn ({} MiB of it in use). \
         etcd counted {:.0} watchers.\n",
        members(&e.cpu_steady, ""),
        members(&e.cpu_churn, ""),
        num(e.requests_steady_per_s),
        num(e.requests_churn_per_s),
        num(e.keepalives_per_s),
        num(sc.n as f64 * 3.0 / TTL_S),
        sc.n,
        num(TTL_S / 3.0),
        num(e.watch_sent_churn_per_s),
        members(&e.rss_mib, " MiB"),
        num(e.db_empty / MIB),
        num(e.db_registered / MIB),
        keys,
        num(e.db_after / MIB),
        num(e.db_in_use_after / MIB),
        e.watchers
    );
    let _ = writeln!(
        s.body_mut(),
        "One host's consumer, a real `discover watch /services` holding all {} keys: {} CPU s/h in steady state, {} CPU s/h \
         during the churn, RSS {} MiB. The simulation's own share during the churn: {} CPU s/h per host agent, {} per library \
         watch.\n",
        keys,
        num(f.consumer_steady),
        num(f.consumer_churn),
        num(f.consumer_rss_mib),
        num(f.per_host),
        num(f.per_watch)
    );

    // The projection: per-unit costs measured here, scaled.
    let fleet_keys = HOSTS * PER_HOST;
    let keepalives = HOSTS * 3.0 / TTL_S;
    let per_key_hour = change_rate / keys.max(1.0) * 3600.0;
    let fleet_changes = fleet_keys * CHANGES_PER_CONTAINER_HOUR / 3600.0;
    let deliveries = fleet_changes * HOSTS;
    let requests = keepalives + fleet_changes;
    let per_ka = cpu_steady / e.keepalives_per_s.max(f64::MIN_POSITIVE);
    let per_delivery =
        (cpu_churn - cpu_steady).max(0.0) / (change_rate * sc.w as f64).max(f64::MIN_POSITIVE);
    let cores = keepalives * per_ka + deliveries * per_delivery;
    let per_key_bytes = (e.db_registered - e.db_empty).max(0.0) / keys.max(1.0);
    let per_change_bytes = (e.db_after - e.db_registered).max(0.0) / (f.changes as f64).max(1.0);
    let live_db = fleet_keys * per_key_bytes;
    let hour_db = fleet_changes * 3600.0 * per_change_bytes;
    let limits = [
        Limit {
            what: "requests per second",
            need: format!(
                "{} ({} keep-alives + {} changes)",
                num(requests),
                num(keepalives),
                num(fleet_changes)
            ),
            documented: "a large cluster: fewer than 10,000 (hardware guide)".into(),
            share: requests / 10_000.0,
            advice: "a longer TTL (keep-alives scale with 1/TTL: `--ttl 30s` sends 3.75× fewer), or etcd's gRPC proxy, which \
                     coalesces lease keep-alives",
        },
        Limit {
            what: "clients",
            need: format!("{} (an agent and a consumer per host)", num(2.0 * HOSTS)),
            documented: "a large cluster: fewer than 1,500; etcd aims at O(10k) (watch memory benchmark)".into(),
            share: 2.0 * HOSTS / 1500.0,
            advice: "one `discover serve` per host for every app there (one watch per host, not per app), and etcd's gRPC \
                     proxy in front of the cluster (a proxy per zone makes its clients one)",
        },
        Limit {
            what: "watch fan-out: CPU",
            need: format!(
                "{} cores ({} events delivered per second: {} changes × {} watchers)",
                num(cores),
                num(deliveries),
                num(fleet_changes),
                num(HOSTS)
            ),
            documented: "heavy deployments: eight to sixteen dedicated cores (hardware guide)".into(),
            share: cores / 16.0,
            advice: "etcd's gRPC proxy, which coalesces the watchers of one prefix into one watch on etcd, and narrower \
                     watches (a host watches the services it uses, not all of `/services`)",
        },
        Limit {
            what: "database size",
            need: format!(
                "{} MiB for {} keys, plus {} MiB per hour of history until it is compacted",
                num(live_db / MIB),
                num(fleet_keys),
                num(hour_db / MIB)
            ),
            documented: "2 GiB by default (`--quota-backend-bytes`), 8 GiB suggested at most (system limits)".into(),
            share: (live_db + hour_db) / (2.0 * GIB),
            advice: "etcd's auto-compaction (`--auto-compaction-retention`, off by default) and a periodic defrag",
        },
    ];
    let firstlim = limits
        .iter()
        .max_by(|a, b| a.share.total_cmp(&b.share))
        .unwrap();
    let _ = writeln!(
        s.body_mut(),
        "### Projection: {hosts:.0} hosts × {per:.0} containers\n\n{keys:.0} keys under {hosts:.0} leases (TTL {ttl:.0} s), one \
         consumer per host watching `/services`, and each container changing {cph} times an hour on average: {changes} changes \
         per second across the fleet (the simulation above ran {sim}× that churn per container, to get enough samples in its \
         window; the fan-out below scales linearly with it). Each cost is scaled linearly from what this run measured per unit: \
         etcd CPU per keep-alive (all of the steady state's CPU, {per_ka} ms per keep-alive, an upper bound), per delivered watch \
         event (the churn's CPU above the steady state's, {per_ev} µs), and database bytes per key ({per_key}) and per change \
         ({per_change}). Against etcd's documented figures ([hardware guide]({DOC_HARDWARE}), [system limits]({DOC_LIMITS}), \
         [watch memory benchmark]({DOC_WATCH})):\n\n| | the fleet needs | etcd documents | need / documented | what to do \
         |\n|---|---|---|---|---|",
        hosts = HOSTS,
        per = PER_HOST,
        keys = fleet_keys,
        ttl = TTL_S,
        cph = num(CHANGES_PER_CONTAINER_HOUR),
        changes = num(fleet_changes),
        sim = num(per_key_hour / CHANGES_PER_CONTAINER_HOUR),
        per_ka = num(per_ka * 1000.0),
        per_ev = num(per_delivery * 1e6),
        per_key = num(per_key_bytes),
        per_change = num(per_change_bytes),
    );
    for l in &limits {
        let _ = writeln!(
            s.body_mut(),
            "| {} | {} | {} | {}× | {} |",
            l.what,
            l.need,
            l.documented,
            num(l.share),
            l.advice
        );
    }
    let _ = writeln!(
        s.body_mut(),
        "\nThe first limit such a fleet meets is **{}**: it needs {}× what etcd documents. What to do: {}. One `discover serve` \
         per host already makes the watchers one per host rather than one per application; etcd's [gRPC proxy]({DOC_PROXY}) \
         \"coalesces multiple client watchers (c-watchers) on the same key or range into a single watcher (s-watcher) connected \
         to an etcd server\", so a proxy per zone turns thousands of watches into a few.\n",
        firstlim.what,
        num(firstlim.share),
        firstlim.advice
    );
    s
}
