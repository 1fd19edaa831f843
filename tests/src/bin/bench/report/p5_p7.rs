//! P5-P7: the consumers' throughput and latency, and large listings.

use std::fmt::Write;

use super::{All, Section, met, signed_ms};
use crate::chart::Chart;
use crate::stats::{Summary, ms, num};
use crate::stream::CONSUMERS;

/// P5, P6 and P7 together (each only if it ran).
pub fn section(a: &All) -> Option<Section> {
    if a.throughput.is_none() && a.latency.is_none() && a.gets.is_none() && a.many.is_none() {
        return None;
    }
    let mut s = Section::default();
    if let Some(t) = &a.throughput {
        let rep: Vec<Summary> = t.replay.iter().map(|r| Summary::of(r)).collect();
        s.row([
            "P5",
            &format!(
                "events/s: live during a {}-put storm; then {} replayed (median)",
                t.puts, t.replay_puts
            ),
            &format!("live {}; replay {}", num(t.live[0]), num(rep[0].p50)),
            &format!(
                "etcdctl {} and {}; bare {} and {}",
                num(t.live[1]),
                num(rep[1].p50),
                num(t.live[2]),
                num(rep[2].p50)
            ),
            &format!(
                "replay {}× etcdctl; {}× bare",
                num(rep[0].p50 / rep[1].p50),
                num(rep[0].p50 / rep[2].p50)
            ),
            "≥ 1.0× etcdctl; ≥ 0.7× bare",
            met(rep[0].p50 >= rep[1].p50 && rep[0].p50 >= 0.7 * rep[2].p50),
        ]);
        s.text("## P5: throughput\n\n");
        let _ = writeln!(
            s.body_mut(),
            "A storm of {} puts, in transactions of {} from 8 concurrent writers, ran at {} puts/s. Live, during the storm, each \
             consumer kept up with it: discover {} events/s, etcdctl {} events/s, bare {} events/s (etcd's write rate is the limit \
             there). Then {} more puts were written, and each consumer replayed all {} events from the storm's first revision, as \
             fast as it could, {} times, interleaved, timed from its start to its last event (a replay this long makes start-up \
             weigh little). Each consumer's output is counted by this program with memchr, at memory speed:\n",
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
        let rows: Vec<(&str, &[f64])> = CONSUMERS
            .iter()
            .zip(&t.replay)
            .map(|(c, r)| (*c, r.as_slice()))
            .collect();
        s.stats(&rows, "events/s");
        s.chart(Chart::bars(
            "p5.svg",
            "P5: replay throughput of the three consumers (median; whisker: slowest to fastest run)",
            "events per second",
            "",
            false,
            &rep.iter()
                .zip(CONSUMERS)
                .map(|(r, c)| (c, r.p50, Some((r.min, r.max))))
                .collect::<Vec<_>>(),
        ));
        let _ = writeln!(
            s.body_mut(),
            "discover prints one JSON line per event (classified, with prevNode, so about 1.7× etcdctl's bytes); etcdctl prints one \
             line per watch response; the bare watch prints nothing. Even the bare watch, which does nothing with an event, replays \
             at only {}× etcdctl's pace: on this 2-core machine etcd reading its history back is the limit for all three, and the \
             consumers differ only by how much CPU they take from it. discover's median is {}× etcdctl's, its runs spanning {}–{} \
             events/s against etcdctl's {}–{}. Before this run, a profile of discover's replay (callgrind, 100,000 events) led to a \
             hand-written line encoder and shared key and value buffers: 9,900 → 7,300 instructions per event.\n",
            num(rep[2].p50 / rep[1].p50),
            num(rep[0].p50 / rep[1].p50),
            num(rep[0].min),
            num(rep[0].max),
            num(rep[1].min),
            num(rep[1].max)
        );
    }
    if let Some(l) = &a.latency {
        let (o, b) = (ms(&l.ours), ms(&l.bare));
        let (so, sb) = (Summary::of(&o), Summary::of(&b));
        s.row([
            "P6",
            "put → line on stdout",
            &format!("{} ms (p99 {} ms)", num(so.p50), num(so.p99)),
            &format!("bare {} ms (p99 {} ms)", num(sb.p50), num(sb.p99)),
            &signed_ms(so.p50 - sb.p50),
            "within 2 ms of bare",
            met(so.p50 - sb.p50 <= 2.0),
        ]);
        s.text(
            "## P6: put → line on stdout\n\nOne put every 20 ms; both consumers print each event on stdout as it arrives; latency \
             from before the put to the line read by this program.\n\n",
        );
        s.stats(
            &[("discover watch", &o), ("bare watch (--print)", &b)],
            "ms",
        );
    }
    if a.gets.is_some() || a.many.is_some() {
        s.text("## P7: listing a large prefix, and many registrations\n\n");
    }
    if let Some(g) = &a.gets {
        let (o, e) = (ms(&g.ours), ms(&g.etcdctl));
        let (so, se) = (Summary::of(&o), Summary::of(&e));
        s.row([
            "P7",
            &format!("`get` of {} keys", g.keys),
            &format!("{} ms", num(so.p50)),
            &format!("etcdctl {} ms", num(se.p50)),
            &format!("{}× etcdctl's time", num(so.p50 / se.p50)),
            "≤ 1.5×",
            met(so.p50 <= 1.5 * se.p50),
        ]);
        let _ = writeln!(
            s.body_mut(),
            "`discover get /bench/get` against `etcdctl get --prefix /bench/get -w json`, {} keys, wall time of the whole command, \
             interleaved:\n",
            g.keys
        );
        s.stats(&[("discover get", &o), ("etcdctl get -w json", &e)], "ms");
        let _ = writeln!(
            s.body_mut(),
            "Output size: discover {} bytes, etcdctl {} bytes (base64 keys and values).\n",
            g.bytes_ours,
            g.bytes_etcdctl
        );
    }
    if let Some(m) = &a.many {
        let pct = m.cpu.as_secs_f64() / m.window.as_secs_f64() * 100.0;
        s.row([
            "P7",
            &format!("{} registrations kept alive by one process", m.count),
            &format!("{} % of one core, RSS {} MiB", num(pct), num(m.rss_mib)),
            "—",
            "—",
            "< 5 %",
            met(pct < 5.0),
        ]);
        let _ = writeln!(
            s.body_mut(),
            "{} registrations kept alive by one process through the library (`tests/src/bin/registrations.rs`, TTL 8 s, a \
             keep-alive every 2.7 s each) used {:.1} CPU s over {:.0} s: {} % of one core, RSS {} MiB.\n",
            m.count,
            m.cpu.as_secs_f64(),
            m.window.as_secs_f64(),
            num(pct),
            num(m.rss_mib)
        );
    }
    Some(s)
}
