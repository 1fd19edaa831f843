//! discovery::Client::register against a real etcd, checked with an
//! independent raw watch.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use discovery::{
    Action, RegisterOptions, Registration, RegistrationState, WatchMessage, WatchOptions,
};
use harness::tcp_proxy::TcpProxy;
use harness::{Etcd, RawWatch, eventually_async, unique_prefix};
use tokio::time::{Instant, timeout};

const TTL: Duration = Duration::from_secs(2);

/// The longest a registration waits for its next try once etcd answers
/// again: its longest retry delay (500 ms, up to 1 s with jitter:
/// `Backoff::for_registration`) plus one request's limit (1 s).
const NEXT_TRY: Duration = Duration::from_secs(2);

/// Slack for a loaded machine on top of a delay the library chose: it
/// bounds scheduling and etcd's own answer, never the feature's timing.
/// (How fast it really is: the REREG lines this file prints.)
const SLACK: Duration = Duration::from_secs(3);

fn opts() -> RegisterOptions {
    RegisterOptions::new(TTL)
}

async fn registered(reg: &Registration) -> (i64, i64) {
    match timeout(Duration::from_secs(10), reg.wait_registered())
        .await
        .expect("registered within 10s")
        .unwrap()
    {
        RegistrationState::Registered {
            lease, revision, ..
        } => (lease.0, revision),
        other => panic!("{other:?}"),
    }
}

/// Register in a runtime of its own and then kill that runtime: the
/// process "crashes" with its lease still alive and nobody revoking it.
fn register_and_crash(
    etcd_opts: discovery::ConnectOptions,
    key: String,
    value: &'static str,
) -> (i64, i64) {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (reg, got) = rt.block_on(async {
            let c = etcd_opts.connect().await.unwrap();
            let reg = c.register(&key, value, opts()).unwrap();
            let got = registered(&reg).await;
            (reg, got)
        });
        rt.shutdown_background();
        // The actor is gone with its runtime; dropping the handle now cannot revoke.
        std::mem::forget(reg);
        got
    })
    .join()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_put_then_silent_heartbeats_for_three_ttls() {
    let etcd = Etcd::single().await;
    let client = etcd.client().await;
    let key = format!("{}/1", unique_prefix("hb"));
    let raw = RawWatch::start(&etcd, &key).await;
    let reg = client.register(&key, "10.1.0.7", opts()).unwrap();
    let (lease, _) = registered(&reg).await;
    // A deliberate quiet period: "then nothing" is an absence.
    tokio::time::sleep(TTL * 3 + Duration::from_secs(1)).await;
    let events = raw.events();
    assert_eq!(
        events.len(),
        1,
        "exactly one PUT, then nothing: {events:#?}"
    );
    assert!(events[0].put && events[0].lease == lease && events[0].value_str() == "10.1.0.7");
    // The lease really is being kept alive.
    let left = client
        .lease_time_left(discovery::LeaseId(lease))
        .await
        .unwrap();
    assert!(
        left.is_some_and(|l| l > Duration::ZERO),
        "lease alive: {left:?}"
    );
    assert_eq!(
        client.get(&key).await.unwrap().unwrap().value(),
        b"10.1.0.7"
    );
    reg.deregister().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_at_the_same_value_is_silent_and_a_new_value_is_one_set() {
    let etcd = Etcd::single().await;
    let client = etcd.client().await;
    let key = format!("{}/1", unique_prefix("restart"));
    let (old_lease, old_rev) = register_and_crash(etcd.connect_options(), key.clone(), "10.1.0.7");

    let raw = RawWatch::start(&etcd, &key).await;
    let reg = client.register(&key, "10.1.0.7", opts()).unwrap();
    let (lease, rev) = registered(&reg).await;
    assert_eq!(
        (lease, rev),
        (old_lease, old_rev),
        "adopted the crashed process's lease"
    );
    // A deliberate quiet period of two TTLs: "no event" is an absence.
    tokio::time::sleep(TTL * 2).await;
    assert!(
        raw.events().is_empty(),
        "no event at all: {:#?}",
        raw.events()
    );
    assert!(
        client.get(&key).await.unwrap().is_some(),
        "still registered after 2 TTLs"
    );
    drop(reg); // revokes
    eventually_async(TTL, "the key gone after drop", || async {
        client.get(&key).await.unwrap().is_none().then_some(())
    })
    .await;

    // Crash again, come back with a different value: exactly one set.
    let key2 = format!("{key}-b");
    register_and_crash(etcd.connect_options(), key2.clone(), "10.1.0.7");
    let raw = RawWatch::start(&etcd, &key2).await;
    let (_wh, mut watch) = client
        .watch_prefix(key2.rsplit_once('/').unwrap().0, WatchOptions::new())
        .unwrap();
    let WatchMessage::Snapshot(_) = timeout(Duration::from_secs(5), watch.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    else {
        panic!()
    };
    let reg = client.register(&key2, "10.1.0.8", opts()).unwrap();
    registered(&reg).await;
    // A deliberate quiet period: "exactly one set" asserts no second write.
    tokio::time::sleep(TTL * 2).await;
    let events = raw.events();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0].value_str(), "10.1.0.8");
    let seen = loop {
        match timeout(Duration::from_secs(5), watch.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchMessage::Event(e) if e.key() == key2.as_bytes() => break e,
            _ => {}
        }
    };
    assert_eq!(
        (seen.action(), seen.prev_value()),
        (Action::Set, Some(&b"10.1.0.7"[..]))
    );
    reg.deregister().await.unwrap();

    // Without adoption, the same value is written again: an update, never a set.
    let key3 = format!("{key}-c");
    register_and_crash(etcd.connect_options(), key3.clone(), "10.1.0.7");
    let (_wh, mut watch) = client
        .watch_prefix(key3.rsplit_once('/').unwrap().0, WatchOptions::new())
        .unwrap();
    let WatchMessage::Snapshot(_) = timeout(Duration::from_secs(5), watch.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    else {
        panic!()
    };
    let reg = client
        .register(&key3, "10.1.0.7", opts().with_adopt(false))
        .unwrap();
    registered(&reg).await;
    let seen = loop {
        match timeout(Duration::from_secs(5), watch.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchMessage::Event(e) if e.key() == key3.as_bytes() => break e,
            _ => {}
        }
    };
    assert_eq!(seen.action(), Action::Update);
    reg.deregister().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn set_value_writes_only_changes_under_the_same_lease() {
    let etcd = Etcd::single().await;
    let client = etcd.client().await;
    let key = format!("{}/1", unique_prefix("setval"));
    let raw = RawWatch::start(&etcd, &key).await;
    let reg = client.register(&key, "a", opts()).unwrap();
    let (lease, _) = registered(&reg).await;
    reg.set_value("a");
    reg.set_value("b");
    let (lease2, _) = registered(&reg).await;
    assert_eq!(lease, lease2, "same lease");
    reg.set_value("b");
    // A deliberate quiet period: the repeated "b" must write nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let values: Vec<String> = raw.events().iter().map(|e| e.value_str()).collect();
    assert_eq!(values, vec!["a", "b"]);

    // Withdraw removes the key at once (before the lease could have run
    // out); set_value brings it back.
    let t = Instant::now();
    reg.withdraw();
    raw.wait_for(TTL, "delete on withdraw", |e| !e.put).await;
    println!("withdraw -> delete seen in {:?}", t.elapsed());
    reg.set_value("c");
    registered(&reg).await;
    assert_eq!(client.get(&key).await.unwrap().unwrap().value(), b"c");
    let t = Instant::now();
    reg.deregister().await.unwrap();
    raw.wait_for(TTL, "delete on deregister", |e| {
        !e.put && e.revision > 0 && e.at >= t
    })
    .await;
    assert!(client.get(&key).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_lease_is_replaced_at_the_next_try() {
    let mut etcd = Etcd::single().await;
    let client = etcd.client().await;
    let key = format!("{}/1", unique_prefix("lost"));
    let reg = client.register(&key, "10.1.0.7", opts()).unwrap();
    let (lease, _) = registered(&reg).await;

    // The lease revoked behind our back (as if it had expired): the key is
    // deleted, the keep-alive says TTL 0, a new lease and a new put follow.
    let mut raw = etcd.raw_client().await;
    raw.lease_revoke(lease).await.unwrap();
    let t = Instant::now();
    // The next keep-alive (due within the TTL) says TTL 0.
    let node = eventually_async(
        TTL + NEXT_TRY + SLACK,
        "re-registered after lease loss",
        || async { client.get(&key).await.unwrap() },
    )
    .await;
    println!(
        "REREG lease revoked -> key back under a new lease in {:?}",
        t.elapsed()
    );
    assert_ne!(node.lease().unwrap().0, lease);

    // etcd down for longer than the TTL, then back. etcd keeps its leases
    // across a restart and renews them all when it elects a leader, so the
    // lease survives here: what this checks is that the registration is
    // confirmed again at once. The lease that really expires is the next test.
    etcd.kill(0);
    // Pacing, not synchronisation: the scenario is etcd down for longer
    // than the TTL.
    tokio::time::sleep(TTL * 2).await;
    let mut state = reg.state();
    timeout(
        Duration::from_secs(5),
        state.wait_for(|s| matches!(s, RegistrationState::Retrying { .. })),
    )
    .await
    .expect("retrying while etcd is down")
    .unwrap();
    etcd.restart(0).await;
    let t = Instant::now();
    eventually_async(
        NEXT_TRY + SLACK,
        "registered at the next try after etcd answered",
        || async {
            let got = client.get(&key).await.ok()??;
            let live = client.lease_time_left(got.lease()?).await.ok()??;
            (live > Duration::ZERO).then_some(())
        },
    )
    .await;
    let key_back = t.elapsed();
    registered(&reg).await;
    let confirmed = t.elapsed();
    assert!(
        confirmed < NEXT_TRY + SLACK,
        "registration confirmed {confirmed:?} after etcd answered"
    );
    println!(
        "REREG etcd down {:?} (> TTL) -> key present {key_back:?}, registration confirmed {confirmed:?} after etcd answered",
        TTL * 2
    );
    reg.deregister().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lease_that_expired_while_cut_off_is_replaced_at_the_next_try() {
    // Only the registrant is cut off (a proxy in front of etcd); etcd stays
    // up, sees no keep-alive, and lets the lease run out.
    let etcd = Etcd::single().await;
    let proxy = TcpProxy::start(etcd.endpoint(0).trim_start_matches("http://"));
    let client = etcd
        .connect_options()
        .with_endpoints([proxy.endpoint()])
        .connect()
        .await
        .unwrap();
    let p = unique_prefix("expired");
    let key = format!("{p}/1");
    let raw = RawWatch::start(&etcd, &format!("{p}/")).await;
    let reg = client.register(&key, "10.1.0.7", opts()).unwrap();
    let (lease, _) = registered(&reg).await;

    proxy.cut();
    let cut = Instant::now();
    let gone = raw
        .wait_for(TTL + Duration::from_secs(4), "the lease expired", |e| {
            !e.put && e.key == key
        })
        .await;
    println!(
        "REREG cut off: etcd expired the lease {:?} after the cut",
        gone.at - cut
    );
    let mut state = reg.state();
    timeout(
        Duration::from_secs(5),
        state.wait_for(|s| {
            matches!(
                s,
                RegistrationState::Retrying {
                    lease_lost: true,
                    ..
                }
            )
        }),
    )
    .await
    .expect("the registration knows its lease is lost")
    .unwrap();

    proxy.restore();
    let back = Instant::now();
    let put = raw
        .wait_for(NEXT_TRY + SLACK, "re-registered at the next try", |e| {
            e.put && e.key == key && e.revision > gone.revision
        })
        .await;
    let delay = put.at - back;
    assert_ne!(put.lease, lease, "a new lease replaces the expired one");
    assert_eq!(put.value_str(), "10.1.0.7");
    registered(&reg).await;
    println!(
        "REREG lease expired while cut off -> key back under a new lease {delay:?} after etcd was reachable again"
    );
    // Exactly one put after the expiry: a set, and nothing else. A
    // deliberate quiet period: "nothing else" is an absence.
    tokio::time::sleep(TTL).await;
    let after: Vec<_> = raw
        .events()
        .into_iter()
        .filter(|e| e.revision > gone.revision)
        .collect();
    assert_eq!(after.len(), 1, "one put after the expiry: {after:#?}");
    reg.deregister().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_deleted_behind_our_back_is_written_again() {
    let etcd = Etcd::single().await;
    let client = etcd.client().await;
    let key = format!("{}/1", unique_prefix("healdel"));
    let reg = client.register(&key, "10.1.0.7", opts()).unwrap();
    registered(&reg).await;
    client.delete(&key).await.unwrap();
    eventually_async(NEXT_TRY + SLACK, "the key restored", || async {
        client.get(&key).await.unwrap()
    })
    .await;
    reg.deregister().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn starts_before_etcd_and_registers_once_it_answers() {
    let mut etcd = Etcd::single().await;
    let client = etcd.client().await;
    etcd.kill(0);
    let key = format!("{}/1", unique_prefix("early"));
    let reg = client.register(&key, "10.1.0.7", opts()).unwrap();
    let mut state = reg.state();
    timeout(
        Duration::from_secs(5),
        state.wait_for(|s| matches!(s, RegistrationState::Retrying { .. })),
    )
    .await
    .unwrap()
    .unwrap();
    etcd.restart(0).await;
    registered(&reg).await;
    reg.deregister().await.unwrap();
}

/// Write `key` with a raw client and wait until `raw` has seen it: every
/// event `raw` recorded before it happened before that write.
async fn fence(etcd: &Etcd, raw: &RawWatch, key: &str) -> i64 {
    let mut c = etcd.raw_client().await;
    let r = c.put(key, "fence", None).await.unwrap();
    let at = r.header().unwrap().revision();
    raw.wait_for(Duration::from_secs(10), "the fence", |e| e.revision == at)
        .await;
    at
}

#[tokio::test(flavor = "multi_thread")]
async fn lease_group_replace_writes_only_the_difference() {
    use std::collections::BTreeMap;
    let etcd = Etcd::single().await;
    let client = etcd.client().await;
    let p = unique_prefix("group-replace");
    let map = |kv: &[(&str, &str)]| -> BTreeMap<String, Vec<u8>> {
        kv.iter()
            .map(|(k, v)| (format!("{p}/svc/{k}"), v.as_bytes().to_vec()))
            .collect()
    };
    let raw = RawWatch::start(&etcd, &format!("{p}/")).await;
    let group = client
        .lease_group(
            RegisterOptions::new(Duration::from_secs(8)),
            map(&[("a", "1"), ("b", "2"), ("c", "3")]),
        )
        .unwrap();
    let mut state = group.state();
    let lease = timeout(
        Duration::from_secs(10),
        state.wait_for(|s| s.synced && s.held == 3),
    )
    .await
    .expect("the group holds its three keys within 10s")
    .unwrap()
    .lease
    .expect("a lease");
    let start = fence(&etcd, &raw, &format!("{p}/fence/1")).await;

    // a unchanged, b changed, c gone, d new.
    let want = map(&[("a", "1"), ("b", "20"), ("d", "4")]);
    group.replace(want.clone()).unwrap();
    let held = eventually_async(
        Duration::from_secs(10),
        "etcd holding the new map",
        || async {
            let snap = client.get_prefix(&format!("{p}/svc")).await.unwrap();
            let held: BTreeMap<String, Vec<u8>> = snap
                .nodes()
                .iter()
                .map(|n| (n.key_str().unwrap().to_owned(), n.value().to_vec()))
                .collect();
            (held == want).then_some(snap)
        },
    )
    .await;
    for n in held.nodes() {
        assert_eq!(n.lease(), Some(lease), "{n:?} under the group's lease");
    }
    let end = fence(&etcd, &raw, &format!("{p}/fence/2")).await;
    let between = |from: i64, to: i64| -> Vec<(bool, String, String)> {
        let mut v: Vec<_> = raw
            .events()
            .into_iter()
            .filter(|e| e.revision > from && e.revision < to)
            .map(|e| (e.put, e.key.clone(), e.value_str()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        between(start, end),
        vec![
            (false, format!("{p}/svc/c"), String::new()),
            (true, format!("{p}/svc/b"), "20".to_owned()),
            (true, format!("{p}/svc/d"), "4".to_owned()),
        ],
        "only the difference is written: a is not touched"
    );
    assert_eq!(
        group.keys(),
        want.keys().cloned().collect::<Vec<_>>(),
        "the keys asked for"
    );

    // The same map again writes nothing, and a bad key changes nothing:
    // after both, one real change is all that is written.
    group.replace(want.clone()).unwrap();
    let mut bad = want.clone();
    bad.insert("no-slash".to_owned(), b"x".to_vec());
    let e = group
        .replace(bad)
        .expect_err("a key without a leading / is refused");
    assert!(matches!(e, discovery::Error::InvalidKey { .. }), "{e:?}");
    assert_eq!(group.keys(), want.keys().cloned().collect::<Vec<_>>());
    let mut more = want.clone();
    more.insert(format!("{p}/svc/e"), b"5".to_vec());
    group.replace(more).unwrap();
    raw.wait_for(Duration::from_secs(10), "the put of e", |e| {
        e.put && e.key.ends_with("/svc/e")
    })
    .await;
    let last = fence(&etcd, &raw, &format!("{p}/fence/3")).await;
    assert_eq!(
        between(end, last),
        vec![(true, format!("{p}/svc/e"), "5".to_owned())],
        "the equal map and the refused one wrote nothing"
    );

    group.shutdown().await.unwrap();
    assert!(
        client
            .get_prefix(&format!("{p}/svc"))
            .await
            .unwrap()
            .nodes()
            .is_empty(),
        "the lease revoked, every key gone"
    );
}

/// `kv` under `p`, as a group's desired map.
fn group_map(p: &str, kv: &[(&str, &str)]) -> std::collections::BTreeMap<String, Vec<u8>> {
    kv.iter()
        .map(|(k, v)| (format!("{p}/svc/{k}"), v.as_bytes().to_vec()))
        .collect()
}

/// Wait until `group` holds its `n` keys in sync and is not retrying;
/// its lease then.
async fn group_synced(group: &discovery::LeaseGroup, n: usize, what: &str) -> discovery::LeaseId {
    let mut state = group.state();
    let synced = timeout(
        Duration::from_secs(10),
        state.wait_for(|s| s.synced && s.held == n && s.retrying.is_none()),
    )
    .await
    .map(|r| r.unwrap().clone());
    let s = synced.unwrap_or_else(|_| {
        panic!(
            "{what}: the group in sync within 10s: {:?}",
            *group.state().borrow()
        )
    });
    s.lease.expect("a lease")
}

/// The nodes under `p/svc` in etcd now: key to (value, lease, mod revision).
async fn group_keys(
    client: &discovery::Client,
    p: &str,
) -> std::collections::BTreeMap<String, (String, i64, i64)> {
    let snap = client.get_prefix(&format!("{p}/svc")).await.unwrap();
    snap.nodes()
        .iter()
        .map(|n| {
            let lease = n.lease().map(|l| l.0).unwrap_or_default();
            let value = String::from_utf8_lossy(n.value()).into_owned();
            (
                n.key_str().unwrap().to_owned(),
                (value, lease, n.mod_revision()),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn lease_group_a_lost_lease_is_replaced_and_every_key_written_again() {
    let etcd = Etcd::single().await;
    let client = etcd.client().await;
    let p = unique_prefix("group-lost");
    let want = group_map(&p, &[("a", "1"), ("b", "2"), ("c", "3")]);
    let group = client.lease_group(opts(), want.clone()).unwrap();
    let lease = group_synced(&group, 3, "at start").await;
    let raw = RawWatch::start(&etcd, &format!("{p}/")).await;

    // The lease revoked behind the group's back (as if it had expired):
    // etcd deletes the keys, the next keep-alive (within an interval) says
    // TTL 0, and the group puts every key again under a new lease.
    let mut rc = etcd.raw_client().await;
    rc.lease_revoke(lease.0).await.unwrap();
    let t = Instant::now();
    let back = eventually_async(
        TTL + NEXT_TRY + SLACK,
        "every key back under a new lease",
        || async {
            let held = group_keys(&client, &p).await;
            let all_new = held.len() == 3 && held.values().all(|(_, l, _)| *l != lease.0);
            all_new.then_some(held)
        },
    )
    .await;
    println!(
        "GROUP lease revoked -> every key back under a new lease in {:?}",
        t.elapsed()
    );
    let new = group_synced(&group, 3, "after the lost lease").await;
    assert_ne!(new, lease, "a new lease");
    for (k, (v, l, _)) in &back {
        assert_eq!((v.as_bytes(), *l), (want[k].as_slice(), new.0), "{k}");
    }
    // Each key deleted once (the revoke) and put once: nothing twice.
    let end = fence(&etcd, &raw, &format!("{p}/fence")).await;
    let mut seen: Vec<(bool, String)> = raw
        .events()
        .into_iter()
        .filter(|e| e.revision < end)
        .map(|e| (e.put, e.key.rsplit('/').next().unwrap().to_owned()))
        .collect();
    seen.sort();
    let each = |put: bool| ["a", "b", "c"].map(|k| (put, k.to_owned()));
    assert_eq!(
        seen,
        [each(false), each(true)].concat(),
        "{:#?}",
        raw.events()
    );
    group.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn lease_group_adopts_a_crashed_owners_lease_and_writes_only_what_differs() {
    let etcd = Etcd::single().await;
    let client = etcd.client().await;
    let p = unique_prefix("group-adopt");
    let before = group_map(&p, &[("a", "1"), ("b", "2"), ("gone", "9")]);
    // A group in a runtime of its own, which then dies: its lease stays
    // alive for a TTL with nobody to revoke it.
    let old = {
        let (connect, before) = (etcd.connect_options(), before.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let (group, lease) = rt.block_on(async {
                let c = connect.connect().await.unwrap();
                let group = c.lease_group(opts(), before).unwrap();
                let lease = group_synced(&group, 3, "the first owner").await;
                (group, lease)
            });
            rt.shutdown_background();
            // Its actor is gone with the runtime: dropping it cannot revoke.
            std::mem::forget(group);
            lease
        })
        .join()
        .unwrap()
    };
    let kept = group_keys(&client, &p).await;
    let raw = RawWatch::start(&etcd, &format!("{p}/")).await;

    // The new owner wants a unchanged, b changed, c new, and not "gone".
    let want = group_map(&p, &[("a", "1"), ("b", "20"), ("c", "3")]);
    let group = client.lease_group(opts(), want.clone()).unwrap();
    let lease = group_synced(&group, 3, "the new owner").await;
    assert_eq!(lease, old, "the crashed owner's live lease is adopted");
    let end = fence(&etcd, &raw, &format!("{p}/fence")).await;
    let mut seen: Vec<(bool, String, String)> = raw
        .events()
        .into_iter()
        .filter(|e| e.revision < end)
        .map(|e| {
            (
                e.put,
                e.key.rsplit('/').next().unwrap().to_owned(),
                e.value_str(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            (false, "gone".to_owned(), String::new()),
            (true, "b".to_owned(), "20".to_owned()),
            (true, "c".to_owned(), "3".to_owned()),
        ],
        "only the difference is written: a is not touched"
    );
    let a = format!("{p}/svc/a");
    assert_eq!(group_keys(&client, &p).await[&a], kept[&a], "a as it was");
    group.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn lease_group_keeps_its_lease_and_keys_when_etcd_is_down_longer_than_the_ttl() {
    let mut etcd = Etcd::single().await;
    let client = etcd.client().await;
    let p = unique_prefix("group-down");
    let want = group_map(&p, &[("a", "1"), ("b", "2")]);
    let group = client.lease_group(opts(), want).unwrap();
    let lease = group_synced(&group, 2, "at start").await;
    let before = group_keys(&client, &p).await;

    // etcd down for longer than the TTL, then back. etcd keeps its leases
    // across a restart and renews them all when it elects a leader: the
    // group keeps its lease (unconfirmed for a whole TTL, but not lost:
    // etcd did not say so), and its keys are never deleted nor rewritten.
    etcd.kill(0);
    let mut state = group.state();
    timeout(
        Duration::from_secs(5),
        state.wait_for(|s| s.retrying.is_some()),
    )
    .await
    .expect("retrying while etcd is down")
    .unwrap();
    // Pacing, not synchronisation: the scenario is etcd down for longer
    // than the TTL.
    tokio::time::sleep(TTL * 2).await;
    etcd.restart(0).await;
    let t = Instant::now();
    assert_eq!(
        group_synced(&group, 2, "after etcd answered").await,
        lease,
        "the same lease"
    );
    println!(
        "GROUP etcd down {:?} (> TTL) -> in sync again {:?} after etcd answered",
        TTL * 2,
        t.elapsed()
    );
    assert_eq!(
        group_keys(&client, &p).await,
        before,
        "the same keys, values, lease and revisions: nothing deleted or rewritten"
    );
    group.shutdown().await.unwrap();
}
