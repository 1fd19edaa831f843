//! P1-P3: the sidekick against the chapter's loop, per container.

use std::fmt::Write;

use super::{Section, met, ratio};
use crate::agents::Agents;
use crate::stats::{Summary, ms, num};

pub fn section(ag: &Agents) -> Section {
    let mut s = Section::default();
    let (p1o, p1p) = (ms(&ag.stop_ours), ms(&ag.stop_peer));
    let (p2o, p2p) = (ms(&ag.start_ours), ms(&ag.start_peer));
    let (p3o, p3p) = (ms(&ag.move_ours), ms(&ag.move_peer));
    let dstart = ms(&ag.docker_start);
    let [s1o, s1p, s2o, s2p, s3o, s3p] =
        [&p1o, &p1p, &p2o, &p2p, &p3o, &p3p].map(|v| Summary::of(v));
    let updates = ag
        .move_peer_actions
        .iter()
        .filter(|x| *x == "update")
        .count();
    let r1 = ratio(s1p.p50, s1o.p50);
    let r2 = ratio(s2p.p50, s2o.p50);
    s.row([
        "P1",
        "`docker stop` → key gone (raw etcd watch), p99",
        &format!("{} ms (p99 {} ms)", num(s1o.p50), num(s1o.p99)),
        &format!("{} ms (p99 {} ms)", num(s1p.p50), num(s1p.p99)),
        &format!("{}×", num(r1)),
        "≤ 100 ms p99; ≥ 80×",
        met(s1o.p99 <= 100.0 && r1 >= 80.0),
    ]);
    s.row([
        "P2",
        "container start → key visible",
        &format!("{} ms (p99 {} ms)", num(s2o.p50), num(s2o.p99)),
        &format!("{} ms (p99 {} ms)", num(s2p.p50), num(s2p.p99)),
        &format!("{}×", num(r2)),
        "≤ 250 ms p99; ≥ 20×",
        met(s2o.p99 <= 250.0 && r2 >= 20.0),
    ]);
    s.row([
        "P3",
        "move to a new IP → consumer sees `set`",
        &format!("{} ms (p99 {} ms)", num(s3o.p50), num(s3o.p99)),
        &format!(
            "new value after {} ms, as `update` in {updates}/{} moves",
            num(s3p.p50),
            ag.move_peer_actions.len()
        ),
        "—",
        "≤ 250 ms",
        met(s3o.p99 <= 250.0),
    ]);

    let _ = write!(
        s.body_mut(),
        "## P1: `docker stop` → key gone\n\nFrom the `docker stop` call to the delete (sidekick) or expiry (bash loop) seen by a raw \
         watch; {} containers per side, stopped one after the other.\n\n",
        p1o.len()
    );
    s.latencies(
        "p1.svg",
        "P1: docker stop → key gone (CDF)",
        true,
        &[("sidekick", &p1o), ("bash loop", &p1p)],
    );
    let _ = write!(
        s.body_mut(),
        "The sidekick deletes the key on Docker's `kill` event, before the container has even exited. The loop cannot delete: \
         `docker inspect` of a stopped container gives an empty address, both `etcdctl update` and `etcdctl set` then fail \
         (\"value required\"), and the key lingers until its 8 s TTL runs out. On the chart the medians lie {}× apart{}.\n\n",
        num(r1),
        if s1o.max < s1p.min {
            format!(
                ", and the sidekick's slowest stop ({} ms) comes before the loop's fastest ({} ms)",
                num(s1o.max),
                num(s1p.min)
            )
        } else {
            String::new()
        }
    );
    s.text(
        "## P2: container start → key visible\n\nFrom Docker's answer to `docker start` (the container runs) to the key in etcd (a \
         new key after P1). The sidekick usually has it registered before Docker has even answered (0 ms here, drawn at the left \
         edge of the chart's log axis); Docker's own start time, the same for both, is shown apart.\n\n",
    );
    s.latencies(
        "p2.svg",
        "P2: container start → key visible (CDF)",
        true,
        &[
            ("sidekick", &p2o),
            ("bash loop", &p2p),
            ("(docker start itself)", &dstart),
        ],
    );
    s.text(
        "The loop notices a started container at its next `sleep 5` wake-up: 0 to 5 s, plus docker, jq and etcdctl.\n\n",
    );
    s.text(
        "## P3: the container moves to a new address\n\nThe container is stopped, reconnected to its network with a new address \
         (from a part of the user-defined network that Docker never allocates from), and started again. Ours: from Docker's \
         answer to `docker start` to the `set` line of a `discover watch` consumer. Loop: from the same moment to the v2 event \
         carrying the new address.\n\n",
    );
    s.latencies(
        "p3.svg",
        "P3: move to a new address → consumer sees it (CDF)",
        true,
        &[("sidekick → set", &p3o), ("bash loop → new value", &p3p)],
    );
    let _ = writeln!(
        s.body_mut(),
        "The loop announced the new address as `update` in {updates} of {} moves: the key still existed, so `etcdctl update` \
         succeeded. The chapter's apps restart on `set` only, so they missed every one of those moves. On a user-defined network \
         the loop's jq path had to be adapted from `.[].NetworkSettings.IPAddress` (empty there) to \
         `.[].NetworkSettings.Networks[\"discovery-test-flannel\"].IPAddress`; nothing else changed. (On this engine the top-level \
         address is still filled for the default bridge, so P1, P2 and P4 run the listing's jq path unchanged.)\n",
        ag.move_peer_actions.len()
    );
    s
}
