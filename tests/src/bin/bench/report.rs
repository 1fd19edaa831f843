//! BENCHMARKS.md: every figure with its peer, min / median / p99 / max,
//! the ratio of medians, the goal and whether it is met.

use std::fmt::Write;
use std::time::Duration;

use crate::agents::Agents;
use crate::cost::{COPIES, Cost, LOOP, WHO};
use crate::get::{Gets, ManyRegistrations};
use crate::host::P8;
use crate::render::Render;
use crate::stats::{Summary, num};
use crate::stream::{CONSUMERS, Latency, Throughput};

pub struct All {
    pub command: String,
    pub machine: Vec<(String, String)>,
    pub took: Duration,
    pub agents: Agents,
    pub cost: Cost,
    pub throughput: Throughput,
    pub latency: Latency,
    pub gets: Gets,
    pub many: ManyRegistrations,
    pub p8: P8,
    pub render: Render,
}

fn row(out: &mut String, label: &str, s: &Summary, unit: &str) {
    let _ = writeln!(
        out,
        "| {label} | {} | {} {unit} | {} {unit} | {} {unit} | {} {unit} |",
        s.n,
        num(s.min),
        num(s.p50),
        num(s.p99),
        num(s.max)
    );
}

fn table(out: &mut String, rows: &[(&str, &Summary)], unit: &str) {
    out.push_str("| | n | min | median | p99 | max |\n|---|---|---|---|---|---|\n");
    for (label, s) in rows {
        row(out, label, s, unit);
    }
    out.push('\n');
}

/// The head of a section's own copy of its summary rows (without the id).
const SECTION_HEAD: &str =
    "| measure | ours (median) | peer (median) | ratio | goal | met |\n|---|---|---|---|---|---|\n";

fn met(ok: bool) -> &'static str {
    if ok { "yes" } else { "**no**" }
}

pub fn render(a: &All) -> String {
    let mut o = String::new();
    let ag = &a.agents;
    let p1o = Summary::of_durations_ms(&ag.stop_ours);
    let p1p = Summary::of_durations_ms(&ag.stop_peer);
    let p2o = Summary::of_durations_ms(&ag.start_ours);
    let p2p = Summary::of_durations_ms(&ag.start_peer);
    let p3o = Summary::of_durations_ms(&ag.move_ours);
    let p3p = Summary::of_durations_ms(&ag.move_peer);
    let updates = ag
        .move_peer_actions
        .iter()
        .filter(|x| *x == "update")
        .count();
    let c = &a.cost;
    let cpu: Vec<Summary> = c.per_hour.iter().map(|v| Summary::of(v)).collect();
    let (cpu_o, cpu_o5, cpu_p) = (cpu[0].p50, cpu[1].p50, cpu[2].p50);
    let rss_o = Summary::of(&c.rss_ours);
    let rss_p = Summary::of(&c.rss_peer);
    let t = &a.throughput;
    let rep: Vec<Summary> = t.replay.iter().map(|r| Summary::of(r)).collect();
    let l = &a.latency;
    let p6o = Summary::of_durations_ms(&l.ours);
    let p6b = Summary::of_durations_ms(&l.bare);
    let g = &a.gets;
    let p7o = Summary::of_durations_ms(&g.ours);
    let p7e = Summary::of_durations_ms(&g.etcdctl);
    let m = &a.many;
    let many_pct = m.cpu.as_secs_f64() / m.window.as_secs_f64() * 100.0;
    let ratio = |peer: f64, ours: f64| {
        if ours > 0.0 {
            peer / ours
        } else {
            f64::INFINITY
        }
    };

    o.push_str("# Benchmarks\n\n");
    o.push_str(
        "Written by `make bench`; never by hand. Every figure is measured side by side with its peer in the same run, on the same \
         machine, against the same etcd and Docker engine: the chapter's bash sidekick (listing 6.4, `sleep 5; docker inspect | jq; \
         etcdctl update --ttl 8 || etcdctl set --ttl 8` against etcd's v2 API), `etcdctl`, or a bare etcd-client watch \
         (`tests/src/bin/bare-watch.rs`, no snapshot, no classification, no JSON: the physical limit of the stack). This machine is \
         noisy, so compare medians and ratios, not lone absolute times. Release builds.\n\n",
    );
    let _ = writeln!(o, "- Command: `{}`", a.command);
    for (k, v) in &a.machine {
        let _ = writeln!(o, "- {k}: {v}");
    }
    let _ = writeln!(o, "- The whole run took {:.0} s.\n", a.took.as_secs_f64());

    o.push_str("## Summary\n\n| id | measure | ours (median) | peer (median) | ratio | goal | met |\n|---|---|---|---|---|---|---|\n");
    let _ = writeln!(
        o,
        "| P1 | `docker stop` → key gone (raw etcd watch), p99 | {} ms (p99 {} ms) | {} ms (p99 {} ms) | {}× | ≤ 100 ms p99; ≥ 80× | {} |",
        num(p1o.p50),
        num(p1o.p99),
        num(p1p.p50),
        num(p1p.p99),
        num(ratio(p1p.p50, p1o.p50)),
        met(p1o.p99 <= 100.0 && ratio(p1p.p50, p1o.p50) >= 80.0)
    );
    let _ = writeln!(
        o,
        "| P2 | container start → key visible | {} ms (p99 {} ms) | {} ms (p99 {} ms) | {}× | ≤ 250 ms p99; ≥ 20× | {} |",
        num(p2o.p50),
        num(p2o.p99),
        num(p2p.p50),
        num(p2p.p99),
        num(ratio(p2p.p50, p2o.p50)),
        met(p2o.p99 <= 250.0 && ratio(p2p.p50, p2o.p50) >= 20.0)
    );
    let _ = writeln!(
        o,
        "| P3 | move to a new IP → consumer sees `set` | {} ms (p99 {} ms) | new value after {} ms, as `update` in {}/{} moves | — | ≤ 250 ms | {} |",
        num(p3o.p50),
        num(p3o.p99),
        num(p3p.p50),
        updates,
        ag.move_peer_actions.len(),
        met(p3o.p99 <= 250.0)
    );
    let _ = writeln!(
        o,
        "| P4 | CPU to keep one registration | {} CPU s/h, RSS {} MiB | {} CPU s/h, RSS {} MiB | {}× less CPU at defaults; {}× the keep-alive-only floor; {}× less at the loop's cadence | ≥ 100×; ≤ 1.3× the keep-alive floor; RSS ≤ 10 MiB | {} |",
        num(cpu_o),
        num(rss_o.p50),
        num(cpu_p),
        num(rss_p.p50),
        num(ratio(cpu_p, cpu_o)),
        num(cpu_o / cpu[4].p50.max(f64::MIN_POSITIVE)),
        num(ratio(cpu_p, cpu_o5)),
        match (
            ratio(cpu_p, cpu_o) >= 100.0,
            cpu_o <= 1.3 * cpu[4].p50,
            rss_o.max <= 10.0
        ) {
            (true, true, true) => "yes",
            (true, false, true) => "100× yes; **no** against the floor (see P4)",
            (false, _, true) => "**no** (RSS yes; CPU: see P4)",
            _ => "**no**",
        }
    );
    let _ = writeln!(
        o,
        "| P5 | events/s: live during a {}-put storm; then {} replayed (median) | live {}; replay {} | etcdctl {} and {}; bare {} and {} | replay {}× etcdctl; {}× bare | ≥ 1.0× etcdctl; ≥ 0.7× bare | {} |",
        t.puts,
        t.replay_puts,
        num(t.live[0]),
        num(rep[0].p50),
        num(t.live[1]),
        num(rep[1].p50),
        num(t.live[2]),
        num(rep[2].p50),
        num(rep[0].p50 / rep[1].p50),
        num(rep[0].p50 / rep[2].p50),
        met(rep[0].p50 >= rep[1].p50 && rep[0].p50 >= 0.7 * rep[2].p50)
    );
    let _ = writeln!(
        o,
        "| P6 | put → line on stdout | {} ms (p99 {} ms) | bare {} ms (p99 {} ms) | +{} ms median | within 2 ms of bare | {} |",
        num(p6o.p50),
        num(p6o.p99),
        num(p6b.p50),
        num(p6b.p99),
        num(p6o.p50 - p6b.p50),
        met(p6o.p50 - p6b.p50 <= 2.0)
    );
    let _ = writeln!(
        o,
        "| P7 | `get` of {} keys | {} ms | etcdctl {} ms | {}× etcdctl's time | ≤ 1.5× | {} |",
        g.keys,
        num(p7o.p50),
        num(p7e.p50),
        num(p7o.p50 / p7e.p50),
        met(p7o.p50 <= 1.5 * p7e.p50)
    );
    let _ = writeln!(
        o,
        "| P7 | {} registrations kept alive by one process | {} % of one core, RSS {} MiB | — | — | < 5 % | {} |",
        m.count,
        num(many_pct),
        num(m.rss_mib),
        met(many_pct < 5.0)
    );
    o.push_str(&p8_rows(&a.p8));
    o.push_str(&render_row(&a.render));
    o.push('\n');

    o.push_str("## P1: `docker stop` → key gone\n\nFrom the `docker stop` call to the delete (sidekick) or expiry (bash loop) seen by a raw watch; 20 containers per side, stopped one after the other.\n\n");
    table(&mut o, &[("sidekick", &p1o), ("bash loop", &p1p)], "ms");
    o.push_str("The sidekick deletes the key on Docker's `kill` event, before the container has even exited. The loop cannot delete: `docker inspect` of a stopped container gives an empty address, both `etcdctl update` and `etcdctl set` then fail (\"value required\"), and the key lingers until its 8 s TTL runs out.\n\n");
    o.push_str("## P2: container start → key visible\n\nFrom Docker's answer to `docker start` (the container runs) to the key in etcd (a new key after P1). The sidekick usually has it registered before Docker has even answered (0 ms here); Docker's own start time, the same for both, is shown apart.\n\n");
    let dstart = Summary::of_durations_ms(&ag.docker_start);
    table(
        &mut o,
        &[
            ("sidekick", &p2o),
            ("bash loop", &p2p),
            ("(docker start itself)", &dstart),
        ],
        "ms",
    );
    o.push_str("The loop notices a started container at its next `sleep 5` wake-up: 0 to 5 s, plus docker, jq and etcdctl.\n\n");
    o.push_str("## P3: the container moves to a new address\n\nThe container is stopped, reconnected to its network with a new address (from a part of the user-defined network that Docker never allocates from), and started again. Ours: from Docker's answer to `docker start` to the `set` line of a `discover watch` consumer. Loop: from the same moment to the v2 event carrying the new address.\n\n");
    table(
        &mut o,
        &[("sidekick → set", &p3o), ("bash loop → new value", &p3p)],
        "ms",
    );
    let _ = writeln!(
        o,
        "The loop announced the new address as `update` in {updates} of {} moves: the key still existed, so `etcdctl update` succeeded. The chapter's apps restart on `set` only, so they missed every one of those moves. On a user-defined network the loop's jq path had to be adapted from `.[].NetworkSettings.IPAddress` (empty there) to `.[].NetworkSettings.Networks[\"discovery-test-flannel\"].IPAddress`; nothing else changed. (On this engine the top-level address is still filled for the default bridge, so P1, P2 and P4 run the listing's jq path unchanged.)\n",
        ag.move_peer_actions.len()
    );
    o.push_str(&render_p4(&a.cost));
    o.push_str("## P5: throughput\n\n");
    let _ = writeln!(
        o,
        "A storm of {} puts, in transactions of {} from 8 concurrent writers, ran at {} puts/s. Live, during the storm, each consumer kept up with it: discover {} events/s, etcdctl {} events/s, bare {} events/s (etcd's write rate is the limit there). Then {} more puts were written, and each consumer replayed all {} events from the storm's first revision, as fast as it could, {} times, interleaved, timed from its start to its last event (a replay this long makes start-up weigh little). Each consumer's output is counted by this program with memchr, at memory speed:\n",
        t.puts,
        t.batch,
        num(t.storm_rate),
        num(t.live[0]),
        num(t.live[1]),
        num(t.live[2]),
        t.replay_puts - t.puts,
        t.replay_puts,
        t.replay[0].len()
    );
    table(
        &mut o,
        &[
            (CONSUMERS[0], &rep[0]),
            (CONSUMERS[1], &rep[1]),
            (CONSUMERS[2], &rep[2]),
        ],
        "events/s",
    );
    let _ = writeln!(
        o,
        "discover prints one JSON line per event (classified, with prevNode, so about 1.7× etcdctl's bytes); etcdctl prints one line per watch response; the bare watch prints nothing. Even the bare watch, which does nothing with an event, replays at only {}× etcdctl's pace: on this 2-core machine etcd reading its history back is the limit for all three, and the consumers differ only by how much CPU they take from it. discover's median is {}× etcdctl's, its runs spanning {}–{} events/s against etcdctl's {}–{}. Before this run, a profile of discover's replay (callgrind, 100,000 events) led to a hand-written line encoder and shared key and value buffers: 9,900 → 7,300 instructions per event.\n",
        num(rep[2].p50 / rep[1].p50),
        num(rep[0].p50 / rep[1].p50),
        num(rep[0].min),
        num(rep[0].max),
        num(rep[1].min),
        num(rep[1].max)
    );
    o.push_str("## P6: put → line on stdout\n\nOne put every 20 ms; both consumers print each event on stdout as it arrives; latency from before the put to the line read by this program.\n\n");
    table(
        &mut o,
        &[("discover watch", &p6o), ("bare watch (--print)", &p6b)],
        "ms",
    );
    o.push_str("## P7: listing a large prefix, and many registrations\n\n");
    let _ = writeln!(
        o,
        "`discover get /bench/get` against `etcdctl get --prefix /bench/get -w json`, {} keys, wall time of the whole command, interleaved:\n",
        g.keys
    );
    table(
        &mut o,
        &[("discover get", &p7o), ("etcdctl get -w json", &p7e)],
        "ms",
    );
    let _ = writeln!(
        o,
        "Output size: discover {} bytes, etcdctl {} bytes (base64 keys and values).\n\n{} registrations kept alive by one process through the library (`tests/src/bin/registrations.rs`, TTL 8 s, a keep-alive every 2.7 s each) used {:.1} CPU s over {:.0} s: {} % of one core, RSS {} MiB.\n",
        g.bytes_ours,
        g.bytes_etcdctl,
        m.count,
        m.cpu.as_secs_f64(),
        m.window.as_secs_f64(),
        num(many_pct),
        num(m.rss_mib)
    );
    o.push_str(&render_p8(&a.p8));
    o.push_str(&render_nginx(&a.render));
    o
}

/// The summary row of `discover render`.
fn render_row(r: &Render) -> String {
    format!(
        "| R | put in etcd → nginx serves the new upstream (`discover render --wait 0`) | {} ms (p99 {} ms) | floor: config written by hand + `nginx -s reload`: {} ms (p99 {} ms) | {}{} ms median | — (recorded) | — |\n",
        num(r.ours.p50),
        num(r.ours.p99),
        num(r.floor.p50),
        num(r.floor.p99),
        if r.ours.p50 >= r.floor.p50 {
            "+"
        } else {
            "−"
        },
        num((r.ours.p50 - r.floor.p50).abs())
    )
}

/// The `discover render` section (also printed alone by `bench --only render`).
pub fn render_nginx(r: &Render) -> String {
    let mut o = String::from(
        "## R: discover render, a change in etcd → nginx serving the new upstream\n\n\
         `discover render --wait 0` with `examples/nginx-upstream/upstream.conf.j2`, `--check-cmd \"nginx -t -q … -c {{src}}\"` and \
         `--reload-cmd \"nginx -s reload …\"` moves `web/1`, each round, to a real HTTP backend on a port no earlier round used (each \
         answers with its own port; a stale nginx worker can then never pass for the new config), and the bench polls Debian's nginx \
         on fresh connections to its unix socket until it answers from the new one. The floor, in the same run against the same \
         nginx: the bench writes the next config itself (renamed into place) and runs `nginx -s reload`, with no etcd, no template \
         and no check.\n\n",
    );
    o.push_str(SECTION_HEAD);
    o.push_str(&render_row(r).replace("| R |", "|"));
    o.push('\n');
    table(
        &mut o,
        &[
            ("put in etcd → nginx serves it", &r.ours),
            ("floor: write + nginx -s reload → served", &r.floor),
        ],
        "ms",
    );
    o
}

/// The P4 section (also printed alone by `bench --only P4`).
pub fn render_p4(c: &Cost) -> String {
    let mut o = String::new();
    let cpu: Vec<Summary> = c.per_hour.iter().map(|v| Summary::of(v)).collect();
    let (cpu_o, cpu_o5, cpu_p, cpu_f) = (cpu[0].p50, cpu[1].p50, cpu[2].p50, cpu[3].p50);
    let rss_o = Summary::of(&c.rss_ours);
    let rss_p = Summary::of(&c.rss_peer);
    let writes = |n: usize| n as f64 * 3600.0 / c.window.as_secs_f64();
    let ratio = |peer: f64, ours: f64| {
        if ours > 0.0 {
            peer / ours
        } else {
            f64::INFINITY
        }
    };
    o.push_str("## P4: keeping one registration alive\n\n");
    let _ = writeln!(
        o,
        "Over {:.0} s of steady state, all side by side: the sidekick at its defaults (TTL 8 s, so a lease keep-alive every 2.67 s; \
         Docker is inspected only when an event names the container and at the 60 s safety resync) and at the loop's own cadence (`--interval 5s`); the bash loop, counting every docker, jq and etcdctl it forked (bash's \
         own time and its reaped children's); and the floor, `bare-sidekick`, which does the same two operations every 2.67 s with the same \
         crates (etcd-client, bollard) on the same single-threaded runtime and nothing else, also with each operation alone, and \
         a process that only wakes up every 2.67 s. The floors sleep with tokio's timer; the sidekick times its keep-alives with a \
         timerfd (`discovery-lib/src/alarm.rs`), which wakes it once per keep-alive where tokio's timer wakes it two or three \
         times, so it can wake less often than the floor. CPU of our \
         processes from schedstat (nanoseconds), of the loop from clock ticks. The window is cut into {} slices; each slice is one \
         measurement, extrapolated to CPU seconds per hour. Each of our processes runs in {} copies side by side (on this VM the same \
         process measures several times cheaper or dearer depending on its core and neighbours), so n counts slices × copies.\n",
        c.window.as_secs_f64(),
        c.per_hour[0].len() / COPIES,
        COPIES
    );
    table(
        &mut o,
        &WHO.iter()
            .zip(cpu.iter())
            .map(|(w, s)| (*w, s))
            .collect::<Vec<_>>(),
        "CPU s/h",
    );
    o.push_str(
        "Wake-ups per cycle (voluntary context switches per keep-alive interval, all threads; unlike CPU time, nearly the same on any \
         machine):\n\n| | median | min | max |\n|---|---|---|---|\n",
    );
    for (i, w) in WHO.iter().enumerate() {
        if i == LOOP {
            continue;
        }
        let s = Summary::of(&c.wakes[i]);
        let _ = writeln!(
            o,
            "| {w} | {} | {} | {} |",
            num(s.p50),
            num(s.min),
            num(s.max)
        );
    }
    o.push_str(
        "\nA keep-alive cannot cost fewer than two wake-ups: one to send it, one for etcd's answer (etcd's flow-control ping \
         mostly arrives with it). Docker's resync adds a few a minute.\n",
    );
    o.push('\n');
    o.push_str("| | RSS median | RSS max | etcd writes/hour |\n|---|---|---|---|\n");
    let _ = writeln!(
        o,
        "| sidekick (defaults) | {} MiB | {} MiB | {} |",
        num(rss_o.p50),
        num(rss_o.max),
        num(writes(c.writes_ours))
    );
    let _ = writeln!(
        o,
        "| bash loop (and children) | {} MiB | {} MiB | {} |\n",
        num(rss_p.p50),
        num(rss_p.max),
        num(writes(c.writes_peer))
    );
    let (ka, fl5) = (cpu[4].p50, cpu[6].p50);
    let _ = write!(
        o,
        "At its defaults the sidekick uses {}× less CPU than the loop; 100× would be {} CPU s/hour. On this machine a lease \
         keep-alive alone every 2.67 s, with no Docker call and no logic, costs {} ({}× less than the loop), and the floor doing \
         both operations {} ({}×); the sidekick costs {}× the floor. ",
        num(ratio(cpu_p, cpu_o)),
        num(cpu_p / 100.0),
        num(ka),
        num(ratio(cpu_p, ka)),
        num(cpu_f),
        num(ratio(cpu_p, cpu_f)),
        num(cpu_o / cpu_f)
    );
    let _ = write!(
        o,
        "Against the keep-alive-only floor, the sidekick at its defaults costs {}× (goal ≤ 1.3×): event-driven, it does no \
         Docker work in steady state besides one inspect a minute. ",
        num(cpu_o / ka.max(f64::MIN_POSITIVE))
    );
    let _ = write!(
        o,
        "At the loop's own cadence (every 5 s) the sidekick uses {}× less CPU than the loop, and the floor {}× less",
        num(ratio(cpu_p, cpu_o5)),
        num(ratio(cpu_p, fl5))
    );
    o.push_str(
        match (ratio(cpu_p, cpu_o5) >= 100.0, ratio(cpu_p, fl5) >= 100.0) {
            (true, _) => ": the goal is met at the same cadence.",
            (false, true) => {
                ": there the sidekick's own cost above the floor's keeps it under 100×."
            }
            (false, false) => ": on this machine not even the floor reaches 100× at that cadence.",
        },
    );
    let idle = cpu[7].p50;
    let _ = write!(
        o,
        " A process that only wakes up every 2.67 s, with tokio's timer, and does nothing else costs {} here ({}× less than the \
         loop){}",
        num(idle),
        num(ratio(cpu_p, idle)),
        if ratio(cpu_p, idle) < 100.0 {
            ": on this machine, waking up at the keep-alive's cadence alone already costs more than a hundredth of the loop."
        } else {
            "."
        }
    );
    o.push_str(
        " Not counted here: each of the loop's iterations also makes dockerd inspect and etcd commit a raft write (the `etcd \
         writes/hour` column); the sidekick's keep-alives are not writes, and its inspects reuse one connection.\n\n",
    );
    o.push_str("The loop's RSS counts the shell and whatever it is running at the sampling instant (the docker CLI alone is tens of MiB).\n\n");
    o
}

/// P8's rows of the summary table.
fn p8_rows(p: &P8) -> String {
    let agent = Summary::of(&p.cpu_agent);
    let singles = Summary::of(&p.cpu_singles);
    let one_single = singles.p50 / p.n as f64;
    let rss = Summary::of(&p.rss_agent);
    let writes_h = p.writes_agent as f64 * 3600.0 / p.window.as_secs_f64();
    let stop = Summary::of_durations_ms(&p.churn_stop);
    let ev = Summary::of_durations_ms(&p.churn_event);
    let rate = p.churn_ops as f64 / p.churn_secs;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "| P8 | `--all` with {} containers, steady | {} CPU s/h, RSS {} MiB, {} writes/h | {} single sidekicks: {} CPU s/h (one: {}); loops ×{}: {} CPU s/h | {}× one single sidekick | ≤ 2× one single; RSS ≤ 16 MiB; 0 writes/h | {} |",
        p.n,
        num(agent.p50),
        num(rss.max),
        num(writes_h),
        p.n,
        num(singles.p50),
        num(one_single),
        p.n,
        num(Summary::of(&p.cpu_loop).p50 * p.n as f64),
        num(agent.p50 / one_single.max(f64::MIN_POSITIVE)),
        met(agent.p50 <= 2.0 * one_single && rss.max <= 16.0 && p.writes_agent == 0)
    );
    let _ = writeln!(
        o,
        "| P8 | start-up: all {} registered | {} ms | — | — | ≤ 2 s | {} |",
        p.n,
        num(p.startup.as_secs_f64() * 1000.0),
        met(p.startup <= std::time::Duration::from_secs(2))
    );
    let _ = writeln!(
        o,
        "| P8 | churn {:.0} s at {} ops/s: stop → key gone (Docker's kill event → key gone); then etcd vs docker ps | p99 {} ms ({} ms); {} stale, {} missing | — | — | p99 ≤ 100 ms; ≥ 5 ops/s; 0 and 0 | {} |",
        p.churn_secs,
        num(rate),
        num(stop.p99),
        num(ev.p99),
        p.stale,
        p.missing,
        met(stop.p99 <= 100.0 && rate >= 5.0 && p.stale == 0 && p.missing == 0)
    );
    o
}

/// The P8 section (also printed alone by `bench --only P8`).
pub fn render_p8(p: &P8) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "## P8: one agent per host\n\n{} containers from the test image, each labelled `discovery.key=/bench/p8/%n` and \
         `discovery.port=11211`, started before the agent; one `sidekick --all` registers them. Side by side over {:.0} s of steady \
         state, on the same containers: {} single-container sidekicks (`--container`, one per container, their CPU and RSS summed), \
         and one chapter loop, extrapolated ×{}. CPU from schedstat (the loop from clock ticks), per slice, in CPU seconds per hour.\n",
        p.n,
        p.window.as_secs_f64(),
        p.n,
        p.n
    );
    o.push_str(SECTION_HEAD);
    o.push_str(&p8_rows(p).replace("| P8 |", "|"));
    o.push('\n');
    table(
        &mut o,
        &[
            ("`sidekick --all`", &Summary::of(&p.cpu_agent)),
            ("all single sidekicks", &Summary::of(&p.cpu_singles)),
            ("one chapter loop", &Summary::of(&p.cpu_loop)),
            (
                "probe: N keys under one lease",
                &Summary::of(&p.probe_group),
            ),
            (
                "probe: N leases, one per key",
                &Summary::of(&p.probe_leases),
            ),
        ],
        "CPU s/h",
    );
    let _ = writeln!(
        o,
        "RSS: the agent {} MiB (max); the single sidekicks {} MiB together (median). Start-up: every key in etcd {} ms after the agent \
         was spawned. Churn: {} stop/start commands over {:.1} s from 8 concurrent workers through the Docker API; {} stops timed from the \
         `docker stop` call to the delete seen by a raw watch.\n",
        num(Summary::of(&p.rss_agent).max),
        num(Summary::of(&p.rss_singles).p50),
        num(p.startup.as_secs_f64() * 1000.0),
        p.churn_ops,
        p.churn_secs,
        p.churn_stop.len()
    );
    table(
        &mut o,
        &[("stop → key gone", &Summary::of_durations_ms(&p.churn_stop))],
        "ms",
    );
    let _ = writeln!(
        o,
        "**Lease choice.** Two probe processes (`bench --lease-probe`, the same binary and runtime) each hold {} keys with TTL 8 s: one \
         under one lease (`discovery::LeaseGroup`, what `--all` uses), one with a lease per key (`discovery::Registration` each). The \
         first sends one keep-alive every 2.67 s, the second {}; both withdraw a key with one request (a delete, or a revoke). So the \
         agent holds every key under one lease and deletes explicitly.\n",
        p.n, p.n
    );
    o
}
