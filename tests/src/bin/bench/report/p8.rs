//! P8: one agent per host. Wake-ups per keep-alive cycle first, then CPU
//! against one lone sidekick in the same run (with the spread of its
//! copies), then churn: Docker's kill event → key gone, with the stop call
//! → key gone beside it.

use std::fmt::Write;

use super::p4::with_spread;
use super::{Section, met};
use crate::host::P8;
use crate::stats::{Summary, copies_spread, flat, ms, num};

pub fn section(p: &P8) -> Section {
    let mut s = Section::default();
    let agent = Summary::of(&p.cpu_agent);
    let lone = Summary::of(&flat(&p.cpu_lone));
    let wakes_agent = Summary::of(&p.wakes_agent);
    let wakes_lone = Summary::of(&flat(&p.wakes_lone));
    let rss = Summary::of(&p.rss_agent);
    let writes_h = p.writes_agent as f64 * 3600.0 / p.window.as_secs_f64();
    let (event, stop) = (ms(&p.churn_event), ms(&p.churn_stop));
    let (ev, st) = (Summary::of(&event), Summary::of(&stop));
    let delivery = Summary::of(&ms(&p.churn_delivery));
    let peer_delivery = Summary::of(&ms(&p.churn_peer_delivery));
    let rate = p.churn_ops as f64 / p.churn_secs;
    let vs_lone = agent.p50 / lone.p50.max(f64::MIN_POSITIVE);
    let loop_n = Summary::of(&p.cpu_loop).p50 * p.n as f64;
    s.row([
        "P8",
        &format!(
            "`--all` with {} containers, steady: wake-ups per keep-alive cycle; CPU against one lone sidekick in the same run",
            p.n
        ),
        &format!(
            "{} wake-ups; {} CPU s/h (slices {}–{}); RSS {} MiB; {} writes/h",
            num(wakes_agent.p50),
            num(agent.p50),
            num(agent.min),
            num(agent.max),
            num(rss.max),
            num(writes_h)
        ),
        &format!(
            "one lone sidekick: {} wake-ups; {}",
            num(wakes_lone.p50),
            with_spread(&p.cpu_lone, "CPU s/h")
        ),
        &format!(
            "{}× one lone sidekick; recorded: loops ×{}: {} CPU s/h",
            num(vs_lone),
            p.n,
            num(loop_n)
        ),
        "≤ 2× one lone sidekick; RSS ≤ 16 MiB; 0 writes/h",
        met(vs_lone <= 2.0 && rss.max <= 16.0 && p.writes_agent == 0),
    ]);
    s.row([
        "P8",
        &format!("start-up: all {} registered", p.n),
        &format!("{} ms", num(p.startup.as_secs_f64() * 1000.0)),
        "—",
        "—",
        "≤ 2 s",
        met(p.startup <= std::time::Duration::from_secs(2)),
    ]);
    s.row([
        "P8",
        &format!(
            "churn {:.0} s at {} ops/s: Docker's kill event → key gone (the `docker stop` call → key gone); then etcd vs docker ps",
            p.churn_secs,
            num(rate)
        ),
        &format!(
            "p99 {} ms ({} ms); {} stale, {} missing",
            num(ev.p99),
            num(st.p99),
            p.stale,
            p.missing
        ),
        "—",
        "—",
        "p99 ≤ 50 ms; ≥ 5 ops/s; 0 and 0",
        met(ev.p99 <= 50.0 && rate >= 5.0 && p.stale == 0 && p.missing == 0),
    ]);

    if !p.churn_delivery.is_empty() {
        s.row([
            "P8",
            "churn, the kill event → key gone split in two: Docker's event → the agent's log line saying the container goes down (both timestamps on the wall clock)",
            &format!(
                "p50 {} ms, p99 {} ms, max {} ms (n {})",
                num(delivery.p50),
                num(delivery.p99),
                num(delivery.max),
                p.churn_delivery.len()
            ),
            &format!(
                "the same events to the bench's own subscriber: p50 {} ms, p99 {} ms, max {} ms",
                num(peer_delivery.p50),
                num(peer_delivery.p99),
                num(peer_delivery.max)
            ),
            &format!(
                "the rest (the agent's delete and etcd's commit, to the watch): about {} ms at p50",
                num((ev.p50 - delivery.p50).max(0.0))
            ),
            "—",
            "recorded",
        ]);
    }
    let _ = writeln!(
        s.body_mut(),
        "## P8: one agent per host\n\n{} containers from the test image, each labelled `discovery.key=/bench/p8/%n` and \
         `discovery.port=11211`, started before the agent; one `sidekick --all` registers them. Side by side over {:.0} s of steady \
         state: {} lone sidekicks, each one process following one container of its own (as P4 runs it), and one chapter loop, \
         extrapolated ×{}. CPU from schedstat (the loop from clock ticks), per slice, in CPU seconds per hour.\n",
        p.n,
        p.window.as_secs_f64(),
        p.cpu_lone.len(),
        p.n
    );
    s.rows_here();
    s.text(
        "### Wake-ups per keep-alive cycle\n\nThe agent holds every key under one lease, so it has one keep-alive cycle (2.67 s at \
         its defaults) whatever the number of containers. Voluntary context switches of all its threads per cycle, the same count \
         on any machine:\n\n| | median | spread | min | max |\n|---|---|---|---|---|\n",
    );
    let (lo, hi) = copies_spread(&p.cpu_lone);
    let (wlo, whi) = copies_spread(&p.wakes_lone);
    let _ = writeln!(
        s.body_mut(),
        "| `sidekick --all` ({} containers) | {} | — (one agent) | {} | {} |",
        p.n,
        num(wakes_agent.p50),
        num(wakes_agent.min),
        num(wakes_agent.max)
    );
    let _ = writeln!(
        s.body_mut(),
        "| one lone sidekick (one container) | {} | copies {}–{} | {} | {} |\n",
        num(wakes_lone.p50),
        num(wlo),
        num(whi),
        num(wakes_lone.min),
        num(wakes_lone.max)
    );
    let _ = writeln!(
        s.body_mut(),
        "### CPU, against one lone sidekick in the same run\n\nThe agent runs once (its containers' keys cannot be held twice), \
         so its spread is across slices; the lone sidekick runs in {} copies, each with the spread of its copies' medians.\n",
        p.cpu_lone.len()
    );
    s.stats(
        &[
            ("`sidekick --all`", &p.cpu_agent),
            ("one lone sidekick", &flat(&p.cpu_lone)),
            ("one chapter loop", &p.cpu_loop),
            ("probe: N keys under one lease", &p.probe_group),
            ("probe: N leases, one per key", &p.probe_leases),
        ],
        "CPU s/h",
    );
    let _ = writeln!(
        s.body_mut(),
        "With {} containers the agent costs {}× one lone sidekick with one (goal ≤ 2×); the lone sidekick's copies measured {}–{} \
         CPU s/h, which is how far apart identical processes measure here. Its RSS: {} MiB at most. {} chapter loops, one per \
         container, would cost {} CPU s/h (recorded, from one loop). Start-up: every key in etcd {} ms after the agent was \
         spawned.\n",
        p.n,
        num(vs_lone),
        num(lo),
        num(hi),
        num(rss.max),
        p.n,
        num(loop_n),
        num(p.startup.as_secs_f64() * 1000.0)
    );
    let _ = writeln!(
        s.body_mut(),
        "### Churn\n\n{} stop/start commands over {:.1} s from 8 concurrent workers through the Docker API. The figure the agent \
         owns starts at Docker's `kill` event (the engine's own timestamp of it) and ends at the delete seen by a raw watch; the \
         `docker stop` call → key gone, beside it, adds dockerd's own delay before it emits the event. Even the kill event's \
         figure is not all the agent's: dockerd stamps the event, then writes it to every subscriber's stream while it runs 8 \
         stops and starts at once. The split row says how much of it passed before the agent logged the container going down \
         (that line's timestamp against the event's, both on this machine's wall clock), beside the same events' delivery to the \
         bench's own event subscriber, which does nothing else.\n",
        p.churn_ops,
        p.churn_secs
    );
    s.latencies(
        "p8-churn.svg",
        "P8: churn, a stopped container's key gone (CDF)",
        true,
        &[
            ("Docker's kill event → key gone", &event),
            ("docker stop call → key gone", &stop),
        ],
    );
    let _ = writeln!(
        s.body_mut(),
        "Median {} ms from the event, {} ms from the call: dockerd takes {} ms of the median before the agent can know. After \
         the churn, etcd held {} stale and {} missing keys against `docker ps`.\n",
        num(ev.p50),
        num(st.p50),
        num((st.p50 - ev.p50).max(0.0)),
        p.stale,
        p.missing
    );
    let _ = writeln!(
        s.body_mut(),
        "**Lease choice.** Two probe processes (`bench --lease-probe`, the same binary and runtime) each hold {} keys with TTL 8 s: \
         one under one lease (`discovery::LeaseGroup`, what `--all` uses), one with a lease per key (`discovery::Registration` \
         each). The first sends one keep-alive every 2.67 s, the second {}; both withdraw a key with one request (a delete, or a \
         revoke). So the agent holds every key under one lease and deletes explicitly.\n",
        p.n,
        p.n
    );
    s
}
