//! Fault injection against real etcd clusters and the real binaries, each
//! fault with a measured figure (printed as FAULT lines).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use harness::audit::{gaps_and_duplicates, history};
use harness::docker::{ContainerSpec, FLANNEL_NETWORK, unique_name};
use harness::proc::{Proc, discover, sidekick};
use harness::{Docker, Etcd, EtcdCluster, RawWatch};
use tokio::time::Instant;

/// Puts to `prefix/k{i%10}` every `every` until stopped, through our
/// library (which moves past dead members), retrying failures. Returns the
/// ("key=value", acknowledged at) pairs.
fn writer(
    client: discovery::Client,
    prefix: &str,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(String, Instant)>> {
    let prefix = prefix.to_owned();
    tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut i = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let value = format!("w{i}");
            let key = format!("{prefix}/k{}", i % 10);
            if client.put(&key, value.clone()).await.is_ok() {
                acked.push((format!("{key}={value}"), Instant::now()));
            }
            i += 1;
            tokio::time::sleep(every).await;
        }
        acked
    })
}

/// The revisions of discover's event lines (after its get lines).
fn event_revisions(p: &Proc) -> Vec<i64> {
    p.stdout_json()
        .iter()
        .filter(|v| v["action"] != "get")
        .map(|v| v["revision"].as_i64().unwrap())
        .collect()
}

fn absences(raw: &RawWatch, key: &str) -> (usize, Duration) {
    let mut deleted_at: Option<Instant> = None;
    let mut count = 0;
    let mut longest = Duration::ZERO;
    for e in raw.events().iter().filter(|e| e.key == key) {
        match (e.put, deleted_at) {
            (false, None) => {
                deleted_at = Some(e.at);
                count += 1;
            }
            (true, Some(t)) => {
                longest = longest.max(e.at - t);
                deleted_at = None;
            }
            _ => {}
        }
    }
    if let Some(t) = deleted_at {
        longest = longest.max(t.elapsed());
    }
    (count, longest)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn leader_killed_ten_times() {
    let mut cluster = EtcdCluster::new(3).await;
    let key = "/services/api/1";
    let raw = RawWatch::start(&cluster, key).await;
    let mut sk = sidekick(&cluster, &["--key", key, "--ip", "10.9.0.1", "--ttl", "4"]);
    sk.env("RUST_LOG", "info");
    let sk = Proc::spawn(sk);
    raw.wait_for(Duration::from_secs(10), "registered", |e| e.put)
        .await;
    let w = Proc::spawn(discover(&cluster, &["watch", "/services"]));
    let get = w
        .wait_stdout(Duration::from_secs(10), "get line", |l| {
            l.contains("\"get\"")
        })
        .await;
    let start: i64 = serde_json::from_str::<serde_json::Value>(&get).unwrap()["revision"]
        .as_i64()
        .unwrap();

    // Eight writers: a put in flight when the leader dies is a proposal
    // etcd drops, and it waits out its request timeout.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for n in 0..8 {
        let c = cluster
            .connect_options()
            .with_request_timeout(Duration::from_secs(1))
            .connect()
            .await
            .unwrap();
        writers.push(writer(
            c,
            &format!("/services/audit/w{n}"),
            Duration::from_millis(20),
            stop.clone(),
        ));
    }
    let mut elections = Vec::new();
    for _ in 0..10 {
        let leader = cluster.leader().await;
        let t = Instant::now();
        cluster.kill(leader);
        cluster.leader().await;
        elections.push(t.elapsed());
        cluster.restart(leader).await;
        // Pacing, not synchronisation: the writers and the watch run
        // between two elections.
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    let last = cluster.revision().await;
    let want = format!("\"revision\":{last},");
    w.wait_stdout(Duration::from_secs(20), "discover caught up", |l| {
        l.contains(&want)
    })
    .await;
    let hist = history(&cluster, "/services/", start + 1, last).await;
    let got = event_revisions(&w);
    let (missing, dups) = gaps_and_duplicates(&got, &hist);
    assert!(
        missing.is_empty() && dups.is_empty(),
        "missing {missing:?} duplicated {dups:?}"
    );
    assert_eq!(got, hist.iter().map(|e| e.0).collect::<Vec<_>>());
    // etcd's own history, not a watcher's arrival times (a watcher that
    // reconnects bunches them): the key was never deleted, so never absent.
    let key_history: Vec<_> = history(&cluster, "/services/", start + 1, last)
        .await
        .into_iter()
        .filter(|e| e.1 == key)
        .collect();
    let deletes = key_history.iter().filter(|e| !e.2).count();
    let (_, longest) = absences(&raw, key);
    assert_eq!(
        deletes,
        0,
        "the registration lapsed ({key_history:?}, raw watch: longest absence {longest:?}, TTL 4s)\n{}",
        sk.dump()
    );
    println!(
        "FAULT 1 leader killed 10x (new leader after median {:?}, max {:?}): registration absent {deletes} times per etcd's history (TTL 4s); \
         discover audit {} events == etcd history {}..={}, 0 missing, 0 duplicated; {} writes acknowledged",
        median(elections.clone()),
        elections.iter().max().unwrap(),
        got.len(),
        start + 1,
        last,
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_down_for_thirty_seconds() {
    let mut etcd = Etcd::single().await;
    let docker = Docker::connect().await;
    let a = docker
        .run(ContainerSpec::new(unique_name("down-a")).tcp(1))
        .await;
    let b = docker
        .run(
            ContainerSpec::new(unique_name("down-b"))
                .tcp(1)
                .network(FLANNEL_NETWORK),
        )
        .await;
    let old_b = b.ip(FLANNEL_NETWORK).await.unwrap();
    // discover lists first, so that both registrations come as set lines
    // (one made before its listing would be in the get line instead).
    let w = Proc::spawn(discover(&etcd, &["watch", "/services"]));
    w.wait_stdout(Duration::from_secs(10), "get line", |l| {
        l.contains("\"get\"")
    })
    .await;
    let ska = Proc::spawn(sidekick(
        &etcd,
        &[
            "--key",
            "/services/a/1",
            "--container",
            a.name(),
            "--ttl",
            "4",
        ],
    ));
    let skb = Proc::spawn(sidekick(
        &etcd,
        &[
            "--key",
            "/services/b/1",
            "--container",
            b.name(),
            "--ttl",
            "4",
        ],
    ));
    w.wait_stdout(Duration::from_secs(10), "b registered", |l| {
        l.contains("/services/b/1") && l.contains("\"set\"")
    })
    .await;
    w.wait_stdout(Duration::from_secs(10), "a registered", |l| {
        l.contains("/services/a/1") && l.contains("\"set\"")
    })
    .await;

    // etcd goes away for 30 s; meanwhile a stops and b moves.
    etcd.kill(0);
    let down = Instant::now();
    a.stop().await;
    b.stop().await;
    let moved_to = harness::docker::move_stopped_container(b.name(), FLANNEL_NETWORK, &old_b);
    b.start().await;
    let new_b = b.ip(FLANNEL_NETWORK).await.unwrap();
    assert_eq!(new_b, moved_to);
    assert_ne!(new_b, old_b);
    // Pacing, not synchronisation: the scenario is etcd down for 30 s.
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(down.elapsed())).await;
    etcd.restart(0).await;
    let up = Instant::now();
    let client = etcd.client().await;
    let (mut a_gone, mut b_moved) = (None, None);
    // Each sidekick's next try comes at most its registration's longest
    // retry delay (1 s with jitter) plus one request's limit (1 s) after
    // etcd answers; the rest is slack for a loaded machine.
    let within = Duration::from_secs(2) + Duration::from_secs(3);
    let deadline = up + within + Duration::from_secs(10);
    while (a_gone.is_none() || b_moved.is_none()) && Instant::now() < deadline {
        if a_gone.is_none() && client.get("/services/a/1").await.ok().flatten().is_none() {
            a_gone = Some(up.elapsed());
        }
        if b_moved.is_none()
            && client
                .get("/services/b/1")
                .await
                .ok()
                .flatten()
                .is_some_and(|n| n.value_str() == Some(&new_b))
        {
            b_moved = Some(up.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (a_gone, b_moved) = (
        a_gone.expect("a deregistered"),
        b_moved.expect("b at its new address"),
    );
    assert!(
        a_gone < within && b_moved < within,
        "a gone {a_gone:?}, b moved {b_moved:?}\n{}\n{}",
        ska.dump(),
        skb.dump()
    );
    // discover resumed and printed the right lines.
    let is_del = |l: &str| l.contains("\"delete\"") && l.contains("/services/a/1");
    let Some(del) = w.stdout_within(Duration::from_secs(10), is_del).await else {
        // Say what etcd holds: its history, not only discover's lines.
        let last = etcd.revision().await;
        let hist = history(&etcd, "/services/", 1, last).await;
        panic!(
            "discover printed no delete of a; etcd at revision {last}, its history of /services/: {hist:?}\n{}\n{}\n{}\n{}",
            w.dump(),
            ska.dump(),
            skb.dump(),
            etcd.logs()
        );
    };
    let set = w
        .wait_stdout(Duration::from_secs(10), "the set of b", |l| {
            l.contains("\"set\"") && l.contains(&new_b)
        })
        .await;
    let set: serde_json::Value = serde_json::from_str(&set).unwrap();
    assert!(del.contains("prevNode"));
    assert_eq!(
        set["prevNode"]["value"],
        serde_json::json!(old_b),
        "a set with prevNode"
    );
    println!(
        "FAULT 2 etcd down 30s (TTL 4s): after etcd answered, the stopped container's key was gone in {a_gone:?} and the moved one re-registered at its new address in {b_moved:?}; discover printed the delete and the set (prevNode {old_b})"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_member_is_left_behind() {
    let mut cluster = EtcdCluster::new(3).await;
    let key = "/services/api/1";
    let raw = RawWatch::start(&cluster, key).await;
    let sk = Proc::spawn(sidekick(&cluster, &["--key", key, "--ip", "10.9.0.1"]));
    raw.wait_for(Duration::from_secs(10), "registered", |e| e.put)
        .await;
    sk.wait_stderr(Duration::from_secs(10), "the keep-alive's member", |l| {
        l.contains("keep-alive stream live")
    })
    .await;
    let w = Proc::spawn(discover(&cluster, &["watch", "/services"]));
    w.wait_stderr(Duration::from_secs(10), "the watch's member", |l| {
        l.contains("watch live")
    })
    .await;
    // The member a tool uses now: the last one it logged.
    let serving = |p: &Proc, what: &str| -> u64 {
        let err = p.stderr();
        let line = err.lines().rev().find(|l| l.contains(what)).unwrap();
        let hex = line
            .split("member=")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        u64::from_str_radix(hex, 16).unwrap()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for n in 0..4 {
        let c = cluster
            .connect_options()
            .with_request_timeout(Duration::from_secs(1))
            .connect()
            .await
            .unwrap();
        writers.push(writer(
            c,
            &format!("/services/stall/w{n}"),
            Duration::from_millis(100),
            stop.clone(),
        ));
    }
    // Pacing, not synchronisation: the writers run a while before the freeze.
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Freeze the member serving discover's watch, then, if the sidekick's
    // keep-alives go to another one, that one: each tool must leave its own
    // frozen member for another.
    let mut frozen_for = Vec::new();
    for (tool, p, what) in [
        ("discover", &w, "watch live"),
        ("sidekick", &sk, "keep-alive stream live"),
    ] {
        let id = serving(p, what);
        let m = cluster.member_index(id).await.unwrap();
        if let Some((_, done)) = frozen_for.iter().find(|(n, _)| *n == m) {
            println!("FAULT 3 {tool} uses m{m} too, frozen for {done}");
            continue;
        }
        // A frozen leader that thaws may still revoke, as the primary lessor
        // it believes it is, the leases it saw no keep-alive for: etcd bug
        // etcd-io/etcd#15247 (fixed by etcd-io/etcd#16822, backported to
        // later 3.4 and 3.5 releases; this machine has 3.4.23). Seen here once in 5 loaded runs as a lapsed registration
        // that no client could have prevented. So leadership moves away
        // first: the tool's member is still frozen, and that is the fault
        // under test.
        if cluster.leader().await == m {
            let others: Vec<u64> = cluster
                .raw_client_live()
                .await
                .member_list()
                .await
                .unwrap()
                .members()
                .iter()
                .map(|mm| mm.id())
                .filter(|other| *other != id)
                .collect();
            cluster
                .raw_member_client(m)
                .await
                .move_leader(others[0])
                .await
                .unwrap();
            harness::eventually_async(Duration::from_secs(20), "leadership moved away", || async {
                (cluster.leader().await != m).then_some(())
            })
            .await;
        }
        cluster.freeze(m);
        // Pacing: the scenario is a member frozen for 20 s.
        tokio::time::sleep(Duration::from_secs(20)).await;
        cluster.thaw(m);
        let moved = serving(p, what);
        assert_ne!(
            moved,
            id,
            "{tool} stayed on the frozen member m{m}\n{}",
            p.dump()
        );
        frozen_for.push((m, tool));
        // Pacing: the thawed member rejoins before the next freeze.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    let last = cluster.revision().await;
    w.wait_stdout(Duration::from_secs(20), "discover caught up", |l| {
        l.contains(&format!("\"revision\":{last},"))
    })
    .await;
    // The first line for each value: a put that timed out on the frozen
    // member and was retried elsewhere can be applied a second time when
    // that member thaws (an `update`, 20 s later), which is not a stall.
    let mut seen: HashMap<String, Instant> = HashMap::new();
    for (t, l) in w.stdout_timed() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&l) else {
            continue;
        };
        if let (Some(k), Some(val)) = (v["node"]["key"].as_str(), v["node"]["value"].as_str()) {
            seen.entry(format!("{k}={val}")).or_insert(t);
        }
    }
    let delays: Vec<Duration> = acked
        .iter()
        .map(|(kv, t)| {
            seen.get(kv)
                .map(|s| s.saturating_duration_since(*t))
                .unwrap_or_else(|| panic!("{kv} never printed"))
        })
        .collect();
    let worst = *delays.iter().max().unwrap();
    let deletes = history(&cluster, "/services/", 1, last)
        .await
        .into_iter()
        .filter(|e| e.1 == key && !e.2)
        .count();
    let (_, longest) = absences(&raw, key);
    assert!(
        worst < Duration::from_secs(16),
        "discover stalled {worst:?} (2 x TTL = 16s); frozen: {frozen_for:?}\n{}",
        w.dump()
    );
    assert_eq!(
        deletes,
        0,
        "the registration never lapsed (absent {longest:?})\n{}",
        sk.dump()
    );
    let rounds: Vec<String> = frozen_for
        .iter()
        .map(|(m, tool)| format!("m{m} (serving {tool})"))
        .collect();
    println!(
        "FAULT 3 frozen 20 s each: {}; each tool moved to another member; longest put-to-line stall {worst:?} (limit 2 x TTL = 16s), median {:?}; registration never absent ({deletes} deletes, {longest:?}); {} writes",
        rounds.join(", then "),
        median(delays.clone()),
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn discover_resyncs_after_compaction_past_it() {
    let etcd = Etcd::single().await;
    let all = etcd.client().await;
    let mut created = HashMap::new();
    for k in ["a", "b", "c"] {
        let rev = all.put(&format!("/services/r/{k}"), "1").await.unwrap();
        created.insert(k, rev);
    }
    // discover reaches etcd only through a proxy that we cut: etcd itself
    // stays up, applies the writes and the compaction.
    let proxy = harness::tcp_proxy::TcpProxy::start(etcd.endpoint(0).trim_start_matches("http://"));
    let w = Proc::spawn(discover(
        &etcd,
        &["watch", "/services/r", "--endpoints", &proxy.endpoint()],
    ));
    w.wait_stdout(Duration::from_secs(10), "get line", |l| {
        l.contains("\"get\"")
    })
    .await;
    proxy.cut();
    w.wait_stderr(Duration::from_secs(10), "the disconnect", |l| {
        l.contains("watch disconnected")
    })
    .await;
    let mut c = etcd.raw_client().await;
    let rev = |r: &etcd_client::ResponseHeader| r.revision();
    let a2 = rev(c
        .put("/services/r/a", "2", None)
        .await
        .unwrap()
        .header()
        .unwrap());
    c.put("/services/r/b", "1", None).await.unwrap();
    c.delete("/services/r/c", None).await.unwrap();
    let d1 = rev(c
        .put("/services/r/d", "1", None)
        .await
        .unwrap()
        .header()
        .unwrap());
    c.put("/services/r/e", "1", None).await.unwrap();
    let r = c
        .delete("/services/r/e", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    etcd.compact(r).await;
    proxy.restore();
    let back = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(20);
    let lines = loop {
        let lines: Vec<serde_json::Value> = w
            .stdout_json()
            .into_iter()
            .filter(|v| v["resync"] == true)
            .collect();
        if lines.len() >= 3 {
            break lines;
        }
        assert!(
            Instant::now() < deadline,
            "no resync within 20s of reconnecting\n{}",
            w.dump()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let got: Vec<(String, String, Option<String>)> = lines
        .iter()
        .map(|v| {
            (
                v["action"].as_str().unwrap().to_owned(),
                v["node"]["key"].as_str().unwrap().to_owned(),
                v["prevNode"]["value"].as_str().map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("set".into(), "/services/r/a".into(), Some("1".into())),
            ("delete".into(), "/services/r/c".into(), Some("1".into())),
            ("set".into(), "/services/r/d".into(), None),
        ],
        "{}",
        w.dump()
    );
    // Byte for byte: the listing's revision, the fresh nodes, the last
    // state known before the cut as prevNode.
    let (ca, cc) = (created["a"], created["c"]);
    let want = [
        format!(
            r#"{{"action":"set","revision":{r},"node":{{"key":"/services/r/a","value":"2","createdIndex":{ca},"modifiedIndex":{a2}}},"prevNode":{{"key":"/services/r/a","value":"1","createdIndex":{ca},"modifiedIndex":{ca}}},"resync":true}}"#
        ),
        format!(
            r#"{{"action":"delete","revision":{r},"node":{{"key":"/services/r/c","createdIndex":{cc},"modifiedIndex":{r}}},"prevNode":{{"key":"/services/r/c","value":"1","createdIndex":{cc},"modifiedIndex":{cc}}},"resync":true}}"#
        ),
        format!(
            r#"{{"action":"set","revision":{r},"node":{{"key":"/services/r/d","value":"1","createdIndex":{d1},"modifiedIndex":{d1}}},"resync":true}}"#
        ),
    ];
    // Nothing else arrived as if it were live (b's same-value write, e's put and delete).
    let timed = w.stdout_timed();
    let events: Vec<&(Instant, String)> = timed.iter().skip(1).collect();
    let lines: Vec<&str> = events.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(lines, want, "{}", w.dump());
    let took = events[2].0.saturating_duration_since(back);
    println!(
        "FAULT 4 compaction past a disconnected discover: exactly the 3 resync lines (set a, delete c, set d), byte for byte, {took:?} after it could reach etcd again"
    );
}
