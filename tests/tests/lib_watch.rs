//! discovery::Client::watch_prefix and members against a real etcd.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use discovery::{Action, Event, WatchMessage, WatchOptions, WatchStream};
use harness::audit::{expected_actions, gaps_and_duplicates, history};
use harness::{Etcd, EtcdCluster, unique_prefix};
use tokio::sync::mpsc;
use tokio::time::timeout;

async fn next_msg(s: &mut WatchStream) -> WatchMessage {
    timeout(Duration::from_secs(10), s.recv())
        .await
        .expect("a watch message within 10s")
        .expect("stream open")
        .expect("no watch error")
}

async fn next_event(s: &mut WatchStream) -> Event {
    loop {
        if let WatchMessage::Event(e) = next_msg(s).await {
            return e;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_then_set_update_delete_and_directory_semantics() {
    let etcd = Etcd::single().await;
    let client = etcd.client().await;
    let p = unique_prefix("classes");
    let mut raw = etcd.raw_client().await;
    raw.put(format!("{p}/svc/b"), "10.1.0.2", None)
        .await
        .unwrap();
    raw.put(format!("{p}/svc/a"), "10.1.0.1", None)
        .await
        .unwrap();
    // Not under the directory: a sibling with the same leading bytes, and the key itself.
    raw.put(format!("{p}/svc-old/x"), "old", None)
        .await
        .unwrap();
    raw.put(format!("{p}/svc"), "self", None).await.unwrap();

    let (_h, mut s) = client
        .watch_prefix(&format!("{p}/svc/"), WatchOptions::new())
        .unwrap();
    let WatchMessage::Snapshot(snap) = next_msg(&mut s).await else {
        panic!("snapshot first")
    };
    let keys: Vec<_> = snap
        .nodes()
        .iter()
        .map(|n| n.key_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        keys,
        vec![format!("{p}/svc/a"), format!("{p}/svc/b")],
        "sorted, directory only"
    );
    assert_eq!(snap.values_lossy(), vec!["10.1.0.1", "10.1.0.2"]);
    let r0 = snap.revision();
    assert_eq!(r0, etcd.revision().await);

    let put = raw
        .put(format!("{p}/svc/c"), "10.1.0.3", None)
        .await
        .unwrap();
    raw.put(format!("{p}/svc-old/y"), "noise", None)
        .await
        .unwrap();
    raw.put(format!("{p}/svc/a"), "10.1.0.1", None)
        .await
        .unwrap(); // same bytes
    raw.put(format!("{p}/svc/a"), "10.1.0.9", None)
        .await
        .unwrap(); // new value
    raw.delete(format!("{p}/svc/b"), None).await.unwrap();

    let e = next_event(&mut s).await;
    assert_eq!(
        (e.action(), e.key(), e.value()),
        (
            Action::Set,
            format!("{p}/svc/c").as_bytes(),
            &b"10.1.0.3"[..]
        )
    );
    assert!(e.prev().is_none(), "new key has no previous node");
    assert_eq!(e.revision(), put.header().unwrap().revision());
    assert_eq!(e.node().create_revision(), e.revision());
    assert_eq!(
        e.revision(),
        r0 + 1,
        "events start right after the snapshot"
    );

    let e = next_event(&mut s).await;
    assert_eq!(
        e.action(),
        Action::Update,
        "a byte-identical put is an update"
    );
    assert_eq!(e.prev_value(), Some(&b"10.1.0.1"[..]));
    assert_eq!(e.node().version(), 2);

    let e = next_event(&mut s).await;
    assert_eq!(e.action(), Action::Set, "a changed value is a set");
    assert_eq!(
        (e.value(), e.prev_value()),
        (&b"10.1.0.9"[..], Some(&b"10.1.0.1"[..]))
    );
    assert!(e.prev().unwrap().mod_revision() < e.revision());

    let e = next_event(&mut s).await;
    assert_eq!(e.action(), Action::Delete);
    assert_eq!(e.key(), format!("{p}/svc/b").as_bytes());
    assert_eq!(e.prev_value(), Some(&b"10.1.0.2"[..]));
    assert_eq!(e.node().mod_revision(), e.revision());
    assert!(e.value().is_empty());
    assert!(!e.is_resync());

    // Lease expiry is a delete too, and carries the lease id on the set.
    let lease = raw.lease_grant(2, None).await.unwrap().id();
    raw.put(
        format!("{p}/svc/leased"),
        "10.1.0.5",
        Some(etcd_client::PutOptions::new().with_lease(lease)),
    )
    .await
    .unwrap();
    let e = next_event(&mut s).await;
    assert_eq!(
        (e.action(), e.lease().map(|l| l.0)),
        (Action::Set, Some(lease))
    );
    let e = timeout(Duration::from_secs(8), next_event(&mut s))
        .await
        .expect("expiry within the TTL");
    assert_eq!(
        (e.action(), e.key()),
        (Action::Delete, format!("{p}/svc/leased").as_bytes())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn non_utf8_values_pass_through_intact() {
    let etcd = Etcd::single().await;
    let client = etcd.client().await;
    let p = unique_prefix("bytes");
    let mut raw = etcd.raw_client().await;
    let bin: Vec<u8> = vec![0xff, 0xfe, 0x00, 0x80, b'a'];
    raw.put(format!("{p}/k1"), bin.clone(), None).await.unwrap();
    let (_h, mut s) = client.watch_prefix(&p, WatchOptions::new()).unwrap();
    let WatchMessage::Snapshot(snap) = next_msg(&mut s).await else {
        panic!()
    };
    assert_eq!(snap.nodes()[0].value(), &bin[..]);
    assert_eq!(snap.nodes()[0].value_str(), None);
    let bin2: Vec<u8> = vec![0xc3, 0x28];
    raw.put(format!("{p}/k1"), bin2.clone(), None)
        .await
        .unwrap();
    let e = next_event(&mut s).await;
    assert_eq!((e.value(), e.prev_value()), (&bin2[..], Some(&bin[..])));

    // Through the library's own writes and reads too.
    client.put(&format!("{p}/k2"), bin.clone()).await.unwrap();
    assert_eq!(
        client
            .get(&format!("{p}/k2"))
            .await
            .unwrap()
            .unwrap()
            .value(),
        &bin[..]
    );
    let members = client.members(&p).await.unwrap();
    assert_eq!(
        members.borrow().get(format!("{p}/k2").as_bytes()),
        Some(&bin[..])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn members_change_only_on_set_and_delete() {
    let etcd = Etcd::single().await;
    let client = etcd.client().await;
    let p = unique_prefix("members");
    client.put(&format!("{p}/1"), "10.1.0.1").await.unwrap();
    let mut m = client.members(&p).await.unwrap();
    assert_eq!(m.borrow_and_update().values_lossy(), vec!["10.1.0.1"]);

    client.put(&format!("{p}/1"), "10.1.0.1").await.unwrap(); // update
    client.put(&format!("{p}/2"), "10.1.0.2").await.unwrap(); // set
    timeout(Duration::from_secs(5), m.changed())
        .await
        .unwrap()
        .unwrap();
    let now = m.borrow_and_update().clone();
    assert_eq!(now.values_lossy(), vec!["10.1.0.1", "10.1.0.2"]);
    // The update before the set did not produce a change of its own.
    assert!(!m.has_changed().unwrap());

    client.put(&format!("{p}/2"), "10.1.0.2").await.unwrap(); // update only
    assert!(
        timeout(Duration::from_millis(500), m.changed())
            .await
            .is_err(),
        "an update must not change the membership"
    );
    client.delete(&format!("{p}/1")).await.unwrap();
    timeout(Duration::from_secs(5), m.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.borrow().values_lossy(), vec!["10.1.0.2"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn historical_start_and_compacted_start() {
    let etcd = Etcd::single().await;
    let client = etcd.client().await;
    let p = unique_prefix("since");
    let r1 = client.put(&format!("{p}/a"), "1").await.unwrap();
    let r2 = client.put(&format!("{p}/a"), "2").await.unwrap();
    client.put(&format!("{p}/b"), "3").await.unwrap();

    // From r1: the snapshot is the state at r1, events follow from r1+1.
    let (_h, mut s) = client
        .watch_prefix(&p, WatchOptions::new().with_start_revision(r1))
        .unwrap();
    let WatchMessage::Snapshot(snap) = next_msg(&mut s).await else {
        panic!()
    };
    assert_eq!(
        (snap.revision(), snap.values_lossy(), snap.is_resync()),
        (r1, vec!["1".to_owned()], false)
    );
    let e = next_event(&mut s).await;
    assert_eq!(
        (e.revision(), e.action(), e.prev_value()),
        (r2, Action::Set, Some(&b"1"[..]))
    );

    // From a compacted revision: the current state, marked resync.
    etcd.compact(r2).await;
    let (_h, mut s) = client
        .watch_prefix(&p, WatchOptions::new().with_start_revision(r1))
        .unwrap();
    let WatchMessage::Snapshot(snap) = next_msg(&mut s).await else {
        panic!()
    };
    assert!(
        snap.is_resync(),
        "compacted start revision gives a resync snapshot"
    );
    assert_eq!(snap.values_lossy(), vec!["2", "3"]);

    // A future revision is refused permanently.
    let (_h, mut s) = client
        .watch_prefix(&p, WatchOptions::new().with_start_revision(r2 + 1000))
        .unwrap();
    let err = timeout(Duration::from_secs(5), s.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("future"), "{err}");
}

/// Start 4 concurrent writers doing `total` successful puts in all (some
/// repeating a value, so updates are audited too). They retry through
/// outages. Returns the highest revision they saw acknowledged.
fn write_storm(
    eps: Vec<String>,
    p: String,
    total: usize,
    progress: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<i64> {
    tokio::spawn(async move {
        let writers = 4;
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for w in 0..writers {
            let (eps, p, progress, stop) = (eps.clone(), p.clone(), progress.clone(), stop.clone());
            handles.push(tokio::spawn(async move {
                let opts = etcd_client::ConnectOptions::new()
                    .with_timeout(Duration::from_secs(1))
                    .with_connect_timeout(Duration::from_millis(300));
                let mut c = etcd_client::Client::connect(eps, Some(opts)).await.unwrap();
                let mut last = 0;
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let key = format!("{p}/k{}", (i as usize * writers + w) % 20);
                    let value = format!("v{}", i / 10);
                    match c.put(key, value, None).await {
                        Ok(r) => {
                            last = r.header().unwrap().revision();
                            i += 1;
                            if progress.fetch_add(1, Ordering::SeqCst) + 1 >= total {
                                stop.store(true, Ordering::SeqCst);
                            }
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
                last
            }));
        }
        let mut last = 0;
        for h in handles {
            last = last.max(h.await.unwrap());
        }
        last
    })
}

async fn reached(progress: &AtomicUsize, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while progress.load(Ordering::SeqCst) < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the writers stalled at {} of {n} puts",
            progress.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Wait until the watch streams again (it resumed after a cut).
async fn wait_live(h: &discovery::WatchHandle) {
    let mut rx = h.status();
    timeout(
        Duration::from_secs(20),
        rx.wait_for(|s| matches!(s, discovery::WatchStatus::Live { .. })),
    )
    .await
    .expect("the watch went live again within 20 s")
    .expect("the watch engine is running");
}

/// Count the times a watch goes from live to reconnecting.
fn count_disconnects(h: &discovery::WatchHandle) -> Arc<AtomicUsize> {
    let n = Arc::new(AtomicUsize::new(0));
    let mut rx = h.status();
    let n2 = n.clone();
    tokio::spawn(async move {
        let mut was_live = false;
        while rx.changed().await.is_ok() {
            let st = rx.borrow_and_update().clone();
            match st {
                discovery::WatchStatus::Live { .. } => was_live = true,
                discovery::WatchStatus::Reconnecting { .. } if was_live => {
                    was_live = false;
                    n2.fetch_add(1, Ordering::SeqCst);
                }
                _ => {}
            }
        }
    });
    n
}

/// Read `s` in the background, as a live consumer does. A test that reads
/// only after a storm would hold the engine in backpressure (its buffer
/// full), and a held engine does not see its stream cut.
fn drain(mut s: WatchStream) -> mpsc::UnboundedReceiver<discovery::Result<WatchMessage>> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(m) = s.recv().await {
            if tx.send(m).is_err() {
                return;
            }
        }
    });
    rx
}

/// Collect every event from `rx` until one at `until` or later arrives.
async fn collect_until(
    rx: &mut mpsc::UnboundedReceiver<discovery::Result<WatchMessage>>,
    until: i64,
    within: Duration,
) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let msg = timeout(left, rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "watcher did not reach revision {until}; got {} events, last {:?}",
                    out.len(),
                    out.last().map(|e| e.revision())
                )
            })
            .expect("stream open")
            .expect("no watch error");
        if let WatchMessage::Event(e) = msg {
            let r = e.revision();
            out.push(e);
            if r >= until {
                return out;
            }
        }
    }
}

fn audit(
    events: &[Event],
    hist: &[harness::audit::HistEvent],
    initial: &HashMap<String, Vec<u8>>,
    label: &str,
) {
    let delivered: Vec<i64> = events.iter().map(|e| e.revision()).collect();
    let (missing, dups) = gaps_and_duplicates(&delivered, hist);
    assert!(
        missing.is_empty() && dups.is_empty(),
        "{label}: missing {missing:?}, duplicated {dups:?}"
    );
    let hist_revs: Vec<i64> = hist.iter().map(|e| e.0).collect();
    assert_eq!(
        delivered, hist_revs,
        "{label}: same revisions in the same order"
    );
    let want = expected_actions(initial, hist);
    let got: Vec<&str> = events.iter().map(|e| e.action().as_str()).collect();
    assert_eq!(got, want, "{label}: classification matches history");
    let updates = got.iter().filter(|a| **a == "update").count();
    println!(
        "AUDIT {label}: {} events delivered == {} in etcd history (revisions {}..={}), 0 missing, 0 duplicated, {updates} updates",
        events.len(),
        hist.len(),
        hist_revs.first().unwrap(),
        hist_revs.last().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn zero_loss_across_etcd_restarts() {
    let mut etcd = Etcd::single().await;
    let client = etcd.client().await;
    let p = unique_prefix("restart");
    let (h, mut s) = client.watch_prefix(&p, WatchOptions::new()).unwrap();
    let WatchMessage::Snapshot(snap) = next_msg(&mut s).await else {
        panic!()
    };
    let start = snap.revision();
    let mut rx = drain(s);

    let total = 2400;
    let progress = Arc::new(AtomicUsize::new(0));
    let storm = write_storm(etcd.endpoints(), p.clone(), total, progress.clone());
    let mut status = h.status();
    for k in 1..=2 {
        reached(&progress, total * k / 3).await;
        // Each kill must cut a live stream: after the first restart the
        // writers can reach the next mark while the watcher is still in
        // backoff, and a kill then would cut nothing.
        wait_live(&h).await;
        etcd.kill(0);
        timeout(
            Duration::from_secs(10),
            status.wait_for(|s| !matches!(s, discovery::WatchStatus::Live { .. })),
        )
        .await
        .unwrap_or_else(|_| panic!("kill {k} did not cut the live watch within 10 s"))
        .expect("the watch engine is running");
        // Pacing, not synchronisation: etcd stays down a while, so the
        // watch backs off at least once.
        tokio::time::sleep(Duration::from_millis(700)).await;
        etcd.restart(0).await;
    }
    let last = storm.await.unwrap();
    let events = collect_until(&mut rx, last, Duration::from_secs(30)).await;
    let hist = history(&etcd, &p, start + 1, last).await;
    assert!(hist.len() >= total, "{} puts in history", hist.len());
    audit(&events, &hist, &HashMap::new(), "2 etcd kill+restarts");
    println!("AUDIT restarts: the live watcher was cut and resumed 2 times");
}

#[tokio::test(flavor = "multi_thread")]
async fn zero_loss_when_the_leader_is_killed() {
    let mut cluster = EtcdCluster::new(3).await;
    let leader = cluster.leader().await;
    let p = unique_prefix("leader");
    // A: balanced over every member, as deployed. B: on the leader only,
    // so the leader kill certainly cuts it.
    let all = cluster.client().await;
    let on_leader = cluster
        .connect_options()
        .with_endpoints([cluster.endpoint(leader)])
        .connect()
        .await
        .unwrap();
    let (ha, mut a) = all.watch_prefix(&p, WatchOptions::new()).unwrap();
    let (hb, mut b) = on_leader.watch_prefix(&p, WatchOptions::new()).unwrap();
    let (da, db) = (count_disconnects(&ha), count_disconnects(&hb));
    let WatchMessage::Snapshot(sa) = next_msg(&mut a).await else {
        panic!()
    };
    let WatchMessage::Snapshot(sb) = next_msg(&mut b).await else {
        panic!()
    };
    let start = sa.revision().min(sb.revision());
    assert_eq!(sa.revision(), sb.revision());
    let (mut a, mut b) = (drain(a), drain(b));

    let total = 2400;
    let progress = Arc::new(AtomicUsize::new(0));
    let storm = write_storm(cluster.endpoints(), p.clone(), total, progress.clone());
    reached(&progress, total / 4).await;
    cluster.kill(leader);
    reached(&progress, total / 2).await;
    cluster.restart(leader).await;
    // Now cut A wherever it is: it must move to another member.
    reached(&progress, total * 5 / 8).await;
    let member = match &*ha.status().borrow() {
        discovery::WatchStatus::Live { member, .. } => *member,
        other => panic!("watcher A not live: {other:?}"),
    };
    let serving = cluster
        .member_index(member)
        .await
        .expect("member serving A");
    cluster.kill(serving);
    let last = storm.await.unwrap();
    let ea = collect_until(&mut a, last, Duration::from_secs(30)).await;
    let eb = if serving == leader {
        // B's only member is down again; it resumes once it is back.
        cluster.restart(serving).await;
        collect_until(&mut b, last, Duration::from_secs(30)).await
    } else {
        let eb = collect_until(&mut b, last, Duration::from_secs(30)).await;
        cluster.restart(serving).await;
        eb
    };
    let hist = history(&cluster, &p, start + 1, last).await;
    audit(
        &ea,
        &hist,
        &HashMap::new(),
        "3 members, balanced watcher (its member killed)",
    );
    audit(
        &eb,
        &hist,
        &HashMap::new(),
        "3 members, watcher on the leader (leader killed)",
    );
    let (na, nb) = (da.load(Ordering::SeqCst), db.load(Ordering::SeqCst));
    assert!(na >= 1 && nb >= 1, "both watchers were cut: A {na}, B {nb}");
    println!(
        "AUDIT leader kill: balanced watcher resumed {na} times, leader-bound watcher {nb} times"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn compaction_while_disconnected_resyncs_with_the_exact_difference() {
    let etcd = Etcd::single().await;
    let p = unique_prefix("compact");
    let all = etcd.client().await;
    for (k, v) in [("a", "1"), ("b", "1"), ("c", "1")] {
        all.put(&format!("{p}/{k}"), v).await.unwrap();
    }
    // The watcher reaches etcd through a proxy we cut; etcd stays up and
    // applies the writes and the compaction meanwhile.
    let proxy = harness::tcp_proxy::TcpProxy::start(etcd.endpoint(0).trim_start_matches("http://"));
    let through = etcd
        .connect_options()
        .with_endpoints([proxy.endpoint()])
        .with_request_timeout(Duration::from_secs(1))
        .connect()
        .await
        .unwrap();
    let (handle, mut s) = through.watch_prefix(&p, WatchOptions::new()).unwrap();
    let WatchMessage::Snapshot(snap) = next_msg(&mut s).await else {
        panic!()
    };
    assert_eq!(snap.values_lossy(), vec!["1", "1", "1"]);

    proxy.cut();
    let mut status = handle.status();
    timeout(
        Duration::from_secs(10),
        status.wait_for(|st| matches!(st, discovery::WatchStatus::Reconnecting { .. })),
    )
    .await
    .expect("reconnecting while cut off")
    .unwrap();
    let mut w = etcd.raw_client().await;
    w.put(format!("{p}/a"), "2", None).await.unwrap(); // changed
    w.put(format!("{p}/b"), "1", None).await.unwrap(); // same value again
    w.delete(format!("{p}/c"), None).await.unwrap(); // gone
    w.put(format!("{p}/d"), "1", None).await.unwrap(); // new
    w.put(format!("{p}/e"), "1", None).await.unwrap(); // new, then gone again
    let r = w
        .delete(format!("{p}/e"), None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    etcd.compact(r).await;
    proxy.restore();

    let mut diff = Vec::new();
    while diff.len() < 3 {
        let e = timeout(Duration::from_secs(20), next_event(&mut s))
            .await
            .expect("resync after reconnecting");
        diff.push(e);
    }
    let got: Vec<(String, Action, Option<String>, bool)> = diff
        .iter()
        .map(|e| {
            (
                String::from_utf8_lossy(e.key()).into_owned(),
                e.action(),
                e.prev_value()
                    .map(|v| String::from_utf8_lossy(v).into_owned()),
                e.is_resync(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (format!("{p}/a"), Action::Set, Some("1".into()), true),
            (format!("{p}/c"), Action::Delete, Some("1".into()), true),
            (format!("{p}/d"), Action::Set, None, true),
        ],
        "exactly the difference, in key order"
    );
    assert!(diff.iter().all(|e| e.revision() >= r));
    // And the watch carries on live.
    w.put(format!("{p}/f"), "1", None).await.unwrap();
    let e = next_event(&mut s).await;
    assert_eq!(
        (e.key(), e.action(), e.is_resync()),
        (format!("{p}/f").as_bytes(), Action::Set, false)
    );
}

/// An operator restores etcd from a backup: its history, and its revision,
/// go back to the snapshot's. A watch that resumed from the revision it had
/// reached would wait, silent, for revisions etcd reissues to other writes,
/// and miss those. The engine sees etcd answer below what it applied and
/// re-lists: the difference comes as resync events, and the watch carries
/// on with the writes made after the restore.
#[tokio::test(flavor = "multi_thread")]
async fn a_restore_from_a_backup_is_resynced_not_waited_for() {
    let mut etcd = Etcd::single().await;
    let p = unique_prefix("restore");
    let c = etcd.client().await;
    for k in ["a", "b"] {
        c.put(&format!("{p}/{k}"), "1").await.unwrap();
    }
    let backup = tempfile::NamedTempFile::new().unwrap();
    etcd.snapshot_save(backup.path());
    let (_h, mut s) = c
        .watch_prefix(
            &p,
            WatchOptions::new().with_liveness(Duration::from_secs(1), Duration::from_secs(2)),
        )
        .unwrap();
    let WatchMessage::Snapshot(snap) = next_msg(&mut s).await else {
        panic!("a snapshot first")
    };
    assert_eq!(snap.values_lossy(), vec!["1", "1"]);
    // After the backup: enough writes that the restored etcd's next ones
    // reuse revisions the watch has already seen.
    c.delete(&format!("{p}/a")).await.unwrap();
    for n in 0..5 {
        c.put(&format!("{p}/c"), n.to_string()).await.unwrap();
    }
    let mut seen = 0;
    while seen < 6 {
        let e = next_event(&mut s).await;
        assert!(!e.is_resync());
        seen += 1;
    }

    etcd.restore(backup.path()).await;
    let mut diff = Vec::new();
    while diff.len() < 2 {
        let e = timeout(Duration::from_secs(20), next_event(&mut s))
            .await
            .expect("the watch re-lists after the restore instead of waiting");
        diff.push((
            String::from_utf8_lossy(e.key()).into_owned(),
            e.action(),
            e.is_resync(),
        ));
    }
    assert_eq!(
        diff,
        vec![
            (format!("{p}/a"), Action::Set, true),
            (format!("{p}/c"), Action::Delete, true),
        ],
        "exactly the difference to the restored state, in key order"
    );
    // A write after the restore takes a revision the watch saw before the
    // restore; it still arrives, once.
    c.put(&format!("{p}/d"), "1").await.unwrap();
    let e = timeout(Duration::from_secs(10), next_event(&mut s))
        .await
        .expect("a write after the restore is delivered");
    assert_eq!(
        (e.key(), e.action(), e.is_resync()),
        (format!("{p}/d").as_bytes(), Action::Set, false)
    );
}

/// The next message of a merged watch, within 10 s.
async fn next_merged(m: &mut discovery::MergedWatchStream) -> (usize, WatchMessage) {
    let (i, msg) = timeout(Duration::from_secs(10), m.recv())
        .await
        .expect("a merged watch message within 10s")
        .expect("merged stream open");
    (i, msg.expect("no watch error"))
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_prefixes_tags_each_message_and_keeps_each_prefix_in_revision_order() {
    let etcd = Etcd::single().await;
    let client = etcd.client().await;
    let p = unique_prefix("merged");
    let prefixes = [format!("{p}/a"), format!("{p}/b"), format!("{p}/c")];
    let mut raw = etcd.raw_client().await;
    raw.put(format!("{p}/b/0"), "b0", None).await.unwrap();
    raw.put(format!("{p}/c/x"), "cx", None).await.unwrap();

    let e = client
        .watch_prefixes([prefixes[0].as_str(), "no-slash"], WatchOptions::new())
        .expect_err("a prefix without a leading / is refused");
    assert!(matches!(e, discovery::Error::InvalidPrefix { .. }), "{e:?}");

    let (handles, mut m) = client
        .watch_prefixes(&prefixes, WatchOptions::new())
        .unwrap();
    let shown: Vec<String> = handles.iter().map(|h| h.prefix().to_string()).collect();
    assert_eq!(shown, prefixes, "one handle per prefix, in the order given");
    let snaps = timeout(Duration::from_secs(10), m.snapshots())
        .await
        .expect("the snapshots within 10s")
        .unwrap_or_else(|(i, e)| panic!("the watch of {} failed: {e}", prefixes[i]));
    let listed: Vec<(String, Vec<String>)> = snaps
        .iter()
        .map(|s| (s.prefix().to_string(), s.values_lossy()))
        .collect();
    assert_eq!(
        listed,
        vec![
            (prefixes[0].clone(), vec![]),
            (prefixes[1].clone(), vec!["b0".to_owned()]),
            (prefixes[2].clone(), vec!["cx".to_owned()]),
        ],
        "the snapshots, in the order given"
    );

    // Interleaved writes to a and b (c stays quiet), and one beside a.
    let mut written: Vec<(usize, String, i64)> = Vec::new();
    for n in 0..40 {
        let which = if n % 3 == 0 { 1 } else { 0 };
        let key = format!("{}/{n}", prefixes[which]);
        let r = raw.put(key.as_str(), format!("v{n}"), None).await.unwrap();
        written.push((which, key, r.header().unwrap().revision()));
        if n == 20 {
            raw.put(format!("{p}/a-old/x"), "beside a", None)
                .await
                .unwrap();
        }
    }
    let mut got: Vec<(usize, String, i64)> = Vec::new();
    while got.len() < written.len() {
        match next_merged(&mut m).await {
            (i, WatchMessage::Event(e)) => got.push((
                i,
                String::from_utf8_lossy(e.key()).into_owned(),
                e.revision(),
            )),
            (i, other) => panic!("prefix {i}: unexpected {other:?}"),
        }
    }
    for (i, key, _) in &got {
        assert!(
            key.starts_with(&format!("{}/", prefixes[*i])),
            "{key} tagged with prefix {i} ({})",
            prefixes[*i]
        );
    }
    for i in 0..3 {
        let of = |v: &[(usize, String, i64)]| -> Vec<(String, i64)> {
            v.iter()
                .filter(|(j, _, _)| *j == i)
                .map(|(_, k, r)| (k.clone(), *r))
                .collect()
        };
        assert_eq!(
            of(&got),
            of(&written),
            "prefix {i}: every write once, in revision order"
        );
    }
    assert!(
        timeout(Duration::from_millis(300), m.recv()).await.is_err(),
        "nothing beyond the writes (the key beside a is not under it)"
    );

    // Cancelling one watch ends the merged stream and stops the others.
    handles[2].cancel();
    let end = timeout(Duration::from_secs(10), m.recv())
        .await
        .expect("the merged stream ends within 10s");
    assert!(end.is_none(), "ended without an error: {end:?}");
    for h in &handles[..2] {
        let mut status = h.status();
        timeout(
            Duration::from_secs(10),
            status.wait_for(|s| *s == discovery::WatchStatus::Stopped),
        )
        .await
        .unwrap_or_else(|_| panic!("the watch of {} stopped within 10s", h.prefix()))
        .expect("status sender alive until stopped");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_prefixes_with_a_prefix_the_user_may_not_read_fails_naming_it() {
    use harness::etcd::{SIDEKICK_PASSWORD, enable_auth};
    let etcd = Etcd::single().await;
    enable_auth(&etcd);
    let client = etcd
        .connect_options()
        .with_user_name("sidekick")
        .with_password(discovery::Password::new(SIDEKICK_PASSWORD))
        .connect()
        .await
        .expect("connect as the restricted user");
    let u = fastrand::u32(..);
    // The role may read /services/ only.
    let prefixes = [format!("/services/m-{u:08x}"), format!("/config/m-{u:08x}")];
    let (handles, mut m) = client
        .watch_prefixes(&prefixes, WatchOptions::new())
        .unwrap();
    let (i, e) = timeout(Duration::from_secs(10), m.snapshots())
        .await
        .expect("an answer within 10s")
        .expect_err("the /config watch is refused");
    assert_eq!(i, 1, "the refused prefix is named: {e}");
    assert!(
        matches!(e, discovery::Error::PermissionDenied { .. }),
        "{e:?}"
    );
    let mut status = handles[0].status();
    timeout(
        Duration::from_secs(10),
        status.wait_for(|s| *s == discovery::WatchStatus::Stopped),
    )
    .await
    .expect("the allowed watch stopped too within 10s")
    .expect("status sender alive until stopped");
    assert!(m.recv().await.is_none(), "the merged stream has ended");
}
