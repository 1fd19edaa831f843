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
