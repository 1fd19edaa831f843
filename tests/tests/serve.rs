//! `discover serve` against a real etcd, asked by Debian's `dig`: the
//! names and records, every protocol behaviour resolvers rely on, the name
//! mapping, the SkyDNS layout (CoreDNS's README examples), changes, and
//! what happens while etcd is away.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod serve_support;

use std::time::Duration;

use harness::proc::discover;
use harness::tcp_proxy::TcpProxy;
use harness::{Etcd, Proc, unique_prefix};
use serve_support::{Dig, Serve, put};

const D: &str = "discovery.internal.";
const WAIT: Duration = Duration::from_secs(20);

fn name(rel: &str) -> String {
    format!("{rel}.{D}")
}

/// The answer's records of `t` as `name data`, sorted.
fn records(d: &Dig, t: &str) -> Vec<String> {
    let mut v: Vec<String> = d
        .answer
        .iter()
        .filter(|r| r.rtype == t)
        .map(|r| format!("{} {}", r.name, r.data))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn names_answer_a_aaaa_and_srv_with_targets() {
    let etcd = Etcd::single().await;
    let p = unique_prefix("serve-names");
    put(&etcd, &format!("{p}/web/1"), "10.0.0.1:80").await;
    put(&etcd, &format!("{p}/web/2"), "[fd00::2]:8080").await;
    put(&etcd, &format!("{p}/web/3"), "10.0.0.3").await;
    put(
        &etcd,
        &format!("{p}/cache/c1"),
        r#"{"ip":"10.0.1.1","port":11211,"container":"c1","host":"h"}"#,
    )
    .await;
    let s = Serve::start(&etcd, &[&p], false).await;

    let a = s.dig(&[&name("web"), "A"]).await;
    assert_eq!(a.status, "NOERROR", "{}", a.raw);
    assert!(a.has("aa") && !a.has("ra"), "{}", a.raw);
    assert_eq!(a.data("A"), ["10.0.0.1", "10.0.0.3"], "{}", a.raw);
    assert!(
        a.answer.iter().all(|r| r.ttl <= 5),
        "default TTL at most 5 s: {}",
        a.raw
    );
    let aaaa = s.dig(&[&name("web"), "AAAA"]).await;
    assert_eq!(aaaa.data("AAAA"), ["fd00::2"], "{}", aaaa.raw);

    // SRV at SERVICE.D and _SERVICE._tcp.D: one per instance with a port,
    // targets resolved in the additional section.
    for qname in [name("web"), name("_web._tcp")] {
        let srv = s.dig(&[&qname, "SRV"]).await;
        assert_eq!(
            srv.data("SRV"),
            [
                format!("0 1 80 {}", name("1.web")),
                format!("0 1 8080 {}", name("2.web"))
            ],
            "{}",
            srv.raw
        );
        let mut extra: Vec<String> = srv
            .additional
            .iter()
            .map(|r| format!("{} {} {}", r.name, r.rtype, r.data))
            .collect();
        extra.sort();
        assert_eq!(
            extra,
            [
                format!("{} A 10.0.0.1", name("1.web")),
                format!("{} AAAA fd00::2", name("2.web"))
            ],
            "{}",
            srv.raw
        );
    }
    // One instance; sidekick's JSON value; names are case-insensitive.
    let one = s.dig(&[&name("3.web"), "A"]).await;
    assert_eq!(records(&one, "A"), [format!("{} 10.0.0.3", name("3.web"))]);
    let c = s.dig(&["C1.Cache.Discovery.Internal.", "A"]).await;
    assert_eq!(c.data("A"), ["10.0.1.1"], "{}", c.raw);
    let csrv = s.dig(&[&name("_cache._tcp"), "SRV"]).await;
    assert_eq!(
        csrv.data("SRV"),
        [format!("0 1 11211 {}", name("c1.cache"))]
    );

    // --dns-ttl sets the TTL of every answer, the SOA included.
    let s2 = Serve::start(&etcd, &[&p, "--dns-ttl", "2"], false).await;
    let a = s2.dig(&[&name("web"), "A"]).await;
    assert!(a.answer.iter().all(|r| r.ttl == 2), "{}", a.raw);
    let nx = s2.dig(&[&name("nope"), "A"]).await;
    assert_eq!(nx.authority[0].ttl, 2, "{}", nx.raw);
    assert!(
        nx.authority[0].data.ends_with(" 2"),
        "negative TTL (SOA minimum) is --dns-ttl: {}",
        nx.raw
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn protocol_behaviour_resolvers_rely_on() {
    let etcd = Etcd::single().await;
    let p = unique_prefix("serve-proto");
    put(&etcd, &format!("{p}/web/1"), "10.0.0.1:80").await;
    let s = Serve::start(&etcd, &[&p], false).await;

    // NXDOMAIN, authoritative, with the zone's SOA.
    let nx = s.dig(&[&name("nope"), "A"]).await;
    assert_eq!(nx.status, "NXDOMAIN", "{}", nx.raw);
    assert!(nx.has("aa"), "{}", nx.raw);
    assert!(nx.answer.is_empty());
    assert_eq!(nx.authority.len(), 1, "{}", nx.raw);
    assert_eq!(nx.authority[0].rtype, "SOA");
    assert_eq!(nx.authority[0].name, D);
    let deeper = s.dig(&[&name("x.1.web"), "A"]).await;
    assert_eq!(deeper.status, "NXDOMAIN", "{}", deeper.raw);

    // NODATA: the name exists, not with this type.
    for (q, t) in [
        (name("web"), "TXT"),
        (name("1.web"), "SRV"),
        (name("1.web"), "AAAA"),
        (D.to_owned(), "A"),
        (name("_tcp"), "SRV"),
    ] {
        let nd = s.dig(&[&q, t]).await;
        assert_eq!(nd.status, "NOERROR", "{q} {t}: {}", nd.raw);
        assert!(nd.has("aa"), "{}", nd.raw);
        assert!(nd.answer.is_empty(), "{q} {t}: {}", nd.raw);
        assert_eq!(nd.authority.len(), 1, "{q} {t}: {}", nd.raw);
        assert_eq!(nd.authority[0].rtype, "SOA", "{}", nd.raw);
    }
    // The apex's SOA.
    let soa = s.dig(&[D, "SOA"]).await;
    assert_eq!(soa.answer.len(), 1, "{}", soa.raw);
    assert!(
        soa.answer[0]
            .data
            .starts_with(&format!("ns.dns.{D} hostmaster.{D} ")),
        "{}",
        soa.raw
    );

    // REFUSED outside the zone: not a recursor; nor for class CH.
    for q in ["example.com.", "internal.", "."] {
        let r = s.dig(&[q, "A"]).await;
        assert_eq!(r.status, "REFUSED", "{q}: {}", r.raw);
        assert!(!r.has("aa"), "{}", r.raw);
    }
    let ch = s.dig(&["-c", "CH", &name("web"), "TXT"]).await;
    assert_eq!(ch.status, "REFUSED", "{}", ch.raw);

    // EDNS0: answered with EDNS when asked (payload at most 1232), without
    // when not; an unknown version gets BADVERS.
    let e = s
        .dig(&[&name("web"), "A", "+edns=0", "+bufsize=4096"])
        .await;
    assert_eq!(e.udp, Some(1232), "{}", e.raw);
    let small = s.dig(&[&name("web"), "A", "+edns=0", "+bufsize=600"]).await;
    assert_eq!(small.udp, Some(600), "{}", small.raw);
    let none = s.dig(&[&name("web"), "A", "+noedns"]).await;
    assert_eq!(none.udp, None, "{}", none.raw);
    assert_eq!(none.data("A"), ["10.0.0.1"]);
    let v1 = s.dig(&[&name("web"), "A", "+edns=1", "+noednsneg"]).await;
    assert_eq!(v1.status, "BADVERS", "{}", v1.raw);

    // Not a query: NOTIMP (dig sends an UPDATE-less opcode with +opcode).
    let notify = s.dig(&[&name("web"), "SOA", "+opcode=notify"]).await;
    assert_eq!(notify.status, "NOTIMP", "{}", notify.raw);

    // Over TCP, the same answers.
    let t = s.dig(&[&name("web"), "A", "+tcp"]).await;
    assert_eq!(t.data("A"), ["10.0.0.1"], "{}", t.raw);
    let t = s.dig(&[&name("nope"), "A", "+tcp"]).await;
    assert_eq!(t.status, "NXDOMAIN", "{}", t.raw);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_instances_truncate_over_udp_and_come_whole_over_tcp() {
    let etcd = Etcd::single().await;
    let p = unique_prefix("serve-tc");
    let c = etcd.client().await;
    for i in 0..200 {
        c.put(
            &format!("{p}/big/i{i:03}"),
            format!("10.1.{}.{}:8080", i / 100, i % 100 + 1),
        )
        .await
        .unwrap();
    }
    let s = Serve::start(&etcd, &[&p], false).await;
    for (edns, what) in [("+noedns", "512 bytes"), ("+bufsize=1232", "1232 bytes")] {
        for t in ["A", "SRV"] {
            let u = s.dig(&[&name("big"), t, edns, "+ignore"]).await;
            assert_eq!(u.status, "NOERROR", "{}", u.raw);
            assert!(
                u.has("tc"),
                "{t} over UDP in {what}: TC expected\n{}",
                u.raw
            );
            assert!(u.answer.len() < 200, "{}", u.raw);
        }
    }
    let a = s.dig(&[&name("big"), "A", "+tcp"]).await;
    assert!(!a.has("tc"), "{}", a.raw);
    assert_eq!(a.data("A").len(), 200, "{}", a.raw);
    let srv = s.dig(&[&name("_big._tcp"), "SRV", "+tcp"]).await;
    assert_eq!(srv.data("SRV").len(), 200, "{}", srv.raw);
    assert_eq!(srv.additional.len(), 200, "{}", srv.raw);
    // dig itself retries over TCP on TC, as resolvers do.
    let auto = s.dig(&[&name("big"), "A"]).await;
    assert_eq!(auto.data("A").len(), 200, "{}", auto.raw);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_in_etcd_changes_the_answer_at_once() {
    let etcd = Etcd::single().await;
    let p = unique_prefix("serve-change");
    let s = Serve::start(&etcd, &[&p], false).await;
    let api = name("api");
    let q = [api.as_str(), "A"];
    assert_eq!(s.dig(&q).await.status, "NXDOMAIN");
    let t = tokio::time::Instant::now();
    put(&etcd, &format!("{p}/api/a"), "10.2.0.1:80").await;
    s.dig_until(WAIT, "the new instance", &q, |d| {
        d.data("A") == ["10.2.0.1"]
    })
    .await;
    put(&etcd, &format!("{p}/api/a"), "10.2.0.9:80").await;
    s.dig_until(WAIT, "the moved instance", &q, |d| {
        d.data("A") == ["10.2.0.9"]
    })
    .await;
    etcd.client()
        .await
        .delete(&format!("{p}/api/a"))
        .await
        .unwrap();
    s.dig_until(WAIT, "the deleted instance gone", &q, |d| {
        d.status == "NXDOMAIN"
    })
    .await;
    println!(
        "serve: put, move and delete each answered; all three in {:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn names_map_by_one_rule_and_collisions_are_reported_not_merged() {
    let etcd = Etcd::single().await;
    let p = unique_prefix("serve-map");
    // registrator's host:container:port, upper case, dots.
    put(
        &etcd,
        &format!("{p}/Web.Blue/node1:web-1:8080"),
        "10.3.0.1:8080",
    )
    .await;
    put(&etcd, &format!("{p}/db/Primary"), "10.3.0.2:5432").await;
    // Two names on one label.
    put(&etcd, &format!("{p}/db/r.1"), "10.3.0.3:5432").await;
    put(&etcd, &format!("{p}/db/r-1"), "10.3.0.4:5432").await;
    // Directly under the prefix: no service.
    put(&etcd, &format!("{p}/stray"), "10.3.0.5").await;
    // Not an address.
    put(&etcd, &format!("{p}/db/bad"), "db.example:5432").await;
    let s = Serve::start(&etcd, &[&p], true).await;

    let a = s.dig(&[&name("node1-web-1-8080.web-blue"), "A"]).await;
    assert_eq!(a.data("A"), ["10.3.0.1"], "{}", a.raw);
    let a = s.dig(&[&name("primary.db"), "A"]).await;
    assert_eq!(a.data("A"), ["10.3.0.2"], "{}", a.raw);
    // Neither collider gets the plain label...
    let plain = s.dig(&[&name("r-1.db"), "A"]).await;
    assert_eq!(plain.status, "NXDOMAIN", "{}", plain.raw);
    // ...each is served under its own hashed label, listed by SRV...
    let srv = s.dig(&[&name("_db._tcp"), "SRV"]).await;
    let targets: Vec<String> = srv
        .data("SRV")
        .iter()
        .map(|d| d.rsplit(' ').next().unwrap().to_owned())
        .filter(|t| t.starts_with("r-1-"))
        .collect();
    assert_eq!(targets.len(), 2, "{}", srv.raw);
    let mut got = Vec::new();
    for t in &targets {
        got.extend(s.dig(&[t, "A"]).await.data("A"));
    }
    got.sort();
    assert_eq!(
        got,
        ["10.3.0.3", "10.3.0.4"],
        "one address each, not merged"
    );
    // ...and both are at the service's name.
    assert_eq!(
        s.dig(&[&name("db"), "A"]).await.data("A"),
        ["10.3.0.2", "10.3.0.3", "10.3.0.4"]
    );
    // Reported: a log line per problem, and the gauge.
    for (what, why) in [
        (format!("{p}/db/r.1"), "also claimed by"),
        (format!("{p}/db/r-1"), "also claimed by"),
        (format!("{p}/stray"), "not a PREFIX/SERVICE/INSTANCE key"),
        (format!("{p}/db/bad"), "is not an address"),
    ] {
        s.proc
            .wait_stderr(WAIT, &format!("the report of {what}"), |l| {
                l.contains("not served as registered") && l.contains(&what) && l.contains(why)
            })
            .await;
    }
    assert_eq!(
        s.metric("discover_serve_problems{kind=\"collision\"}")
            .await,
        Some(2.0)
    );
    assert_eq!(
        s.metric("discover_serve_problems{kind=\"key\"}").await,
        Some(2.0)
    );
    // Renaming one ends the collision: the other gets the plain label.
    etcd.client()
        .await
        .delete(&format!("{p}/db/r.1"))
        .await
        .unwrap();
    s.dig_until(WAIT, "the plain label back", &[&name("r-1.db"), "A"], |d| {
        d.data("A") == ["10.3.0.4"]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn skydns_layout_answers_the_coredns_readme_examples() {
    let etcd = Etcd::single().await;
    let p = unique_prefix("serve-sky");
    let path = format!("{p}/skydns");
    // Its own services prefix too, empty: both layouts in one zone.
    let s = Serve::start(
        &etcd,
        &[
            &format!("{p}/services"),
            "--domain",
            "skydns.local",
            &format!("--skydns={path}"),
        ],
        false,
    )
    .await;
    let z = "skydns.local.";
    // As etcdctl writes them (the library refuses a key ending in '/').
    let mut c = etcd.raw_client().await;
    // "Zone name as A record", then round robin over x1, x2.
    c.put(
        format!("{path}/local/skydns/"),
        r#"{"host":"1.1.1.1","ttl":60}"#,
        None,
    )
    .await
    .unwrap();
    s.dig_until(WAIT, "the apex A", &[z, "A", "+short"], |d| {
        d.raw.trim() == "1.1.1.1"
    })
    .await;
    c.put(
        format!("{path}/local/skydns/x1"),
        r#"{"host":"1.1.1.1","ttl":"60"}"#,
        None,
    )
    .await
    .unwrap();
    c.put(
        format!("{path}/local/skydns/x2"),
        r#"{"host":"1.1.1.2","ttl":"60"}"#,
        None,
    )
    .await
    .unwrap();
    s.dig_until(WAIT, "1.1.1.1 and 1.1.1.2", &[z, "A"], |d| {
        d.data("A") == ["1.1.1.1", "1.1.1.2"]
    })
    .await;
    // "Zone name as AAAA record".
    c.put(
        format!("{path}/local/skydns/x3"),
        r#"{"host":"2003::8:1","ttl":"60"}"#,
        None,
    )
    .await
    .unwrap();
    c.put(
        format!("{path}/local/skydns/x4"),
        r#"{"host":"2003::8:2","ttl":"60"}"#,
        None,
    )
    .await
    .unwrap();
    s.dig_until(WAIT, "the two AAAA", &[z, "AAAA"], |d| {
        d.data("AAAA") == ["2003::8:1", "2003::8:2"]
    })
    .await;
    // "SRV record".
    c.put(
        format!("{path}/local/skydns/x5"),
        r#"{"host":"skydns-local.server","ttl":60,"priority":10,"port":8080}"#,
        None,
    )
    .await
    .unwrap();
    s.dig_until(WAIT, "the SRV", &[z, "SRV", "+short"], |d| {
        d.raw.trim() == "10 100 8080 skydns-local.server."
    })
    .await;
    // "TXT record".
    c.put(
        format!("{path}/local/skydns/x6"),
        r#"{"ttl":60,"text":"this is a random text message."}"#,
        None,
    )
    .await
    .unwrap();
    s.dig_until(WAIT, "the TXT", &[z, "TXT", "+short"], |d| {
        d.raw.trim() == "\"this is a random text message.\""
    })
    .await;
    // Each entry is its own name too; TTLs are at most --dns-ttl.
    let x2 = s.dig(&["x2.skydns.local.", "A"]).await;
    assert_eq!(x2.data("A"), ["1.1.1.2"], "{}", x2.raw);
    assert!(x2.answer.iter().all(|r| r.ttl <= 5), "{}", x2.raw);
    // Everything the README shows, still true at the end.
    assert_eq!(s.dig(&[z, "A"]).await.data("A"), ["1.1.1.1", "1.1.1.2"]);
    assert_eq!(
        s.dig(&[z, "AAAA"]).await.data("AAAA"),
        ["2003::8:1", "2003::8:2"]
    );
    // An IP host's SRV target is the entry's own name, resolved alongside.
    c.put(
        format!("{path}/local/skydns/api/a"),
        r#"{"host":"10.9.0.1","port":443}"#,
        None,
    )
    .await
    .unwrap();
    let srv = s
        .dig_until(WAIT, "the api SRV", &["api.skydns.local.", "SRV"], |d| {
            !d.answer.is_empty()
        })
        .await;
    assert_eq!(
        srv.data("SRV"),
        ["10 100 443 a.api.skydns.local."],
        "{}",
        srv.raw
    );
    assert_eq!(srv.additional[0].data, "10.9.0.1", "{}", srv.raw);
}

/// etcd killed while serving: the last known answers go on, the staleness
/// gauge grows, and once etcd is back the state catches up.
#[tokio::test(flavor = "multi_thread")]
async fn etcd_killed_while_serving_answers_go_on_and_catch_up() {
    let mut etcd = Etcd::single().await;
    let p = unique_prefix("serve-kill");
    put(&etcd, &format!("{p}/web/1"), "10.4.0.1:80").await;
    let s = Serve::start(&etcd, &[&p], true).await;
    let web = name("web");
    let q = [web.as_str(), "A"];
    assert_eq!(s.dig(&q).await.data("A"), ["10.4.0.1"]);
    assert_eq!(s.metric("discover_serve_stale_seconds").await, Some(0.0));
    etcd.kill(0);
    s.proc
        .wait_stderr(WAIT, "the watch to notice", |l| {
            l.contains("watch disconnected")
        })
        .await;
    // Stale, and growing, while the answers go on.
    let mut last = 0.0;
    for _ in 0..3 {
        let d = s.dig(&q).await;
        assert_eq!(d.data("A"), ["10.4.0.1"], "{}", d.raw);
        last = harness::eventually_async(WAIT, "the staleness gauge to grow", || async {
            s.metric("discover_serve_stale_seconds")
                .await
                .filter(|v| *v > last)
        })
        .await;
    }
    etcd.restart(0).await;
    put(&etcd, &format!("{p}/web/2"), "10.4.0.2:80").await;
    s.dig_until(WAIT, "the write made after etcd returned", &q, |d| {
        d.data("A") == ["10.4.0.1", "10.4.0.2"]
    })
    .await;
    harness::eventually_async(WAIT, "staleness back to 0", || async {
        (s.metric("discover_serve_stale_seconds").await == Some(0.0)).then_some(())
    })
    .await;
}

/// `--max-stale`: past it, SERVFAIL; back to answers once etcd is reachable.
#[tokio::test(flavor = "multi_thread")]
async fn past_max_stale_answers_are_servfail() {
    let etcd = Etcd::single().await;
    let p = unique_prefix("serve-maxstale");
    put(&etcd, &format!("{p}/web/1"), "10.5.0.1:80").await;
    let proxy = TcpProxy::start(etcd.endpoint(0).trim_start_matches("http://"));
    let s = Serve::spawn_cmd(
        discover(
            &etcd,
            &[
                "serve",
                &p,
                "--dns",
                "127.0.0.1:0",
                "--max-stale",
                "2s",
                "--endpoints",
                &proxy.endpoint(),
            ],
        ),
        false,
    )
    .await;
    s.proc
        .wait_stderr(WAIT, "the first snapshot", |l| {
            l.contains("first snapshot in")
        })
        .await;
    let web = name("web");
    let q = [web.as_str(), "A"];
    assert_eq!(s.dig(&q).await.data("A"), ["10.5.0.1"]);
    proxy.cut();
    let cut = tokio::time::Instant::now();
    let d = s
        .dig_until(
            Duration::from_secs(30),
            "SERVFAIL past --max-stale",
            &q,
            |d| d.status == "SERVFAIL",
        )
        .await;
    assert!(
        cut.elapsed() >= Duration::from_secs(2),
        "SERVFAIL only after 2 s: {:?}\n{}",
        cut.elapsed(),
        d.raw
    );
    proxy.restore();
    s.dig_until(Duration::from_secs(30), "answers again", &q, |d| {
        d.data("A") == ["10.5.0.1"]
    })
    .await;
}

/// Cut off from etcd while its history is compacted past the watch: on
/// return the library re-lists, and the zone is exactly etcd's state.
#[tokio::test(flavor = "multi_thread")]
async fn a_compaction_while_cut_off_resyncs_the_zone() {
    let etcd = Etcd::single().await;
    let p = unique_prefix("serve-compact");
    put(&etcd, &format!("{p}/web/a"), "10.6.0.1:80").await;
    put(&etcd, &format!("{p}/web/b"), "10.6.0.2:80").await;
    let proxy = TcpProxy::start(etcd.endpoint(0).trim_start_matches("http://"));
    let s = Serve::spawn_cmd(
        discover(
            &etcd,
            &[
                "serve",
                &p,
                "--dns",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
                "--endpoints",
                &proxy.endpoint(),
            ],
        ),
        true,
    )
    .await;
    s.proc
        .wait_stderr(WAIT, "the first snapshot", |l| {
            l.contains("first snapshot in")
        })
        .await;
    let web = name("web");
    let q = [web.as_str(), "A"];
    assert_eq!(s.dig(&q).await.data("A"), ["10.6.0.1", "10.6.0.2"]);
    proxy.cut();
    s.proc
        .wait_stderr(WAIT, "the disconnect", |l| l.contains("watch disconnected"))
        .await;
    let c = etcd.client().await;
    c.put(&format!("{p}/web/a"), "10.6.0.9:80").await.unwrap();
    c.delete(&format!("{p}/web/b")).await.unwrap();
    let r = c.put(&format!("{p}/web/c"), "10.6.0.3:80").await.unwrap();
    etcd.compact(r).await;
    // Meanwhile: the last known state.
    assert_eq!(s.dig(&q).await.data("A"), ["10.6.0.1", "10.6.0.2"]);
    proxy.restore();
    s.dig_until(WAIT, "the state after the compaction", &q, |d| {
        d.data("A") == ["10.6.0.3", "10.6.0.9"]
    })
    .await;
    assert!(
        s.metric("discover_watch_resyncs_total")
            .await
            .unwrap_or(0.0)
            >= 1.0,
        "a resync was counted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_command_lines_exit_2_and_say_what_to_do() {
    let etcd = Etcd::single().await;
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    for (args, says) in [
        (vec!["serve"], "nothing to serve"),
        (
            vec!["serve", "--dns", "127.0.0.1:0", "--domain", "."],
            "root",
        ),
        (vec!["serve", "--dns", &taken], "cannot bind"),
        (
            vec!["serve", "--dns", "127.0.0.1:0", "/s", "/s/web"],
            "overlap",
        ),
        (
            vec!["serve", "--dns", "127.0.0.1:0", "--dns-ttl", "x"],
            "--dns-ttl",
        ),
        (
            vec!["serve", "--dns", "192.0.2.1:5353"],
            "no interface has this address",
        ),
    ] {
        let mut p = Proc::spawn(discover(&etcd, &args));
        let status = p.wait_exit(WAIT).await;
        assert_eq!(status.code(), Some(2), "{args:?}\n{}", p.dump());
        assert!(p.stderr().contains(says), "{args:?}: {says}\n{}", p.dump());
        assert!(!p.stderr().contains("panicked"), "{}", p.dump());
    }
}

#[test]
fn dig_output_parses() {
    let raw = "; <<>> DiG 9.18.49 <<>> x\n;; Got answer:\n;; ->>HEADER<<- opcode: QUERY, status: NXDOMAIN, id: 51386\n;; flags: qr aa tc; QUERY: 1, ANSWER: 1, AUTHORITY: 1, ADDITIONAL: 1\n\n;; OPT PSEUDOSECTION:\n; EDNS: version: 0, flags:; udp: 1232\n;; QUESTION SECTION:\n;nope.d.\t\tIN\tA\n\n;; ANSWER SECTION:\nweb.d.\t5\tIN\tSRV\t0 1 80 1.web.d.\n\n;; AUTHORITY SECTION:\nd.\t5\tIN\tSOA\tns.dns.d. hostmaster.d. 4 7200 1800 86400 5\n\n";
    let d = serve_support::parse_dig(raw);
    assert_eq!(d.status, "NXDOMAIN");
    assert_eq!(d.flags, ["qr", "aa", "tc"]);
    assert_eq!(d.udp, Some(1232));
    assert_eq!(d.data("SRV"), ["0 1 80 1.web.d."]);
    assert_eq!(d.authority[0].rtype, "SOA");
    assert_eq!(d.authority[0].ttl, 5);
}
