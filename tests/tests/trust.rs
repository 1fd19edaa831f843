//! The trust boundary between containers' labels and etcd (`sidekick
//! --all`), against real containers and a real etcd: a label key outside
//! the allowed prefixes, one that climbs out after `%`-expansion, one with
//! a `..` or empty segment or a control character, a registrator
//! `SERVICE_NAME` of `..` and an oversized label are each a problem for
//! that container, reported and never written, while the others register;
//! and an agent whose etcd user may write only `/services/` reports etcd's
//! refusal for one container and keeps registering the others.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use harness::etcd::{ROOT_PASSWORD, SIDEKICK_PASSWORD, enable_auth};
use harness::host_agent::{Fleet, Spec, converges, etcd_map, host_agent};
use harness::notify::NotifySocket;
use harness::proc::Proc;
use harness::{Etcd, unique_prefix};
use tokio::time::Instant;

/// Room for a busy 2-core machine.
const SETTLE: Duration = Duration::from_secs(30);

/// The last STATUS= the agent sent.
fn status(notify: &NotifySocket) -> String {
    notify
        .lines()
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("STATUS=").map(str::to_owned))
        .unwrap_or_default()
}

/// Wait until STATUS= satisfies `pred`; panic with the last one and `p`'s
/// log if it does not within [`SETTLE`].
async fn wait_status(notify: &NotifySocket, p: &Proc, what: &str, pred: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let s = status(notify);
        if pred(&s) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no STATUS= {what} within {SETTLE:?}; the last: {s}\n{}",
            p.dump()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until a line of `p`'s log matches; panic with the log if none does.
async fn in_log(p: &Proc, what: &str, pred: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + SETTLE;
    while !p.stderr().lines().any(&pred) {
        assert!(
            Instant::now() < deadline,
            "no log line for {what} within {SETTLE:?}\n{}",
            p.dump()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn labels_write_only_normalised_keys_under_the_allowed_prefixes() {
    let etcd = Etcd::single().await;
    let prefix = unique_prefix("trust");
    let services = format!("{prefix}/services");
    let fleet = Fleet::new("trust");
    let long = format!("http:/{}", "x".repeat(5000));
    let specs = vec![
        Spec::new("good").label("discovery.key", &format!("{services}/web/%n")),
        // The nginx example's configuration, as in the issue.
        Spec::new("config").label("discovery.key", &format!("{prefix}/config/web-lb/listen")),
        // %n expands to a sibling of the prefix: /…/services<name>.
        Spec::new("climb").label("discovery.key", &format!("{services}%n")),
        Spec::new("dots").label("discovery.key", &format!("{services}/web/../../config/%n")),
        Spec::new("empty").label("discovery.key", &format!("{services}//%n")),
        Spec::new("ctrl").label("discovery.key", &format!("{services}/web/a\u{1}%n")),
        Spec::new("big")
            .label("discovery.key", &format!("{services}/web/%n"))
            .label("discovery.port", "80")
            .label("discovery.check", &long),
        // registrator's SERVICE_NAME names a path segment too.
        Spec::new("reg").label("SERVICE_NAME", "..").tcp(80),
    ];
    fleet.start(specs).await;
    let notify = NotifySocket::new();
    // No --allow-prefix: the default is --prefix.
    let mut cmd = host_agent(&etcd, &fleet, &["--prefix", &services]);
    cmd.env("NOTIFY_SOCKET", notify.path());
    let mut p = Proc::spawn(cmd);

    let running = fleet.running();
    let good = fleet.name("good");
    let want = || BTreeMap::from([(format!("{services}/web/{good}"), running[&good].clone())]);
    converges(&etcd, &prefix, SETTLE, want, || p.dump()).await;

    for (suffix, why) in [
        ("config", "is outside the prefixes this agent may write"),
        ("climb", "is outside the prefixes this agent may write"),
        ("dots", "'..' segment"),
        ("empty", "empty segment"),
        ("ctrl", "control character"),
        ("big", "5006 bytes long"),
        (
            "reg",
            r#"service name ".." for port 80 is not a single key segment"#,
        ),
    ] {
        let name = fleet.name(suffix);
        in_log(&p, &format!("{suffix}: {why}"), |l| {
            l.contains(&format!("container={name}")) && l.contains(why)
        })
        .await;
    }
    // STATUS= is cut to a modest length, so it need not name all seven.
    wait_status(&notify, &p, "counting the 7 refused containers", |s| {
        s.contains("7 with problems")
    })
    .await;
    // Nothing else was written anywhere the test's prefix covers, and the
    // agent is still running.
    assert_eq!(etcd_map(&etcd, &prefix).await, want(), "{}", p.dump());
    assert!(p.try_exit().is_none(), "{}", p.dump());
}

// etcd 3.4.23 and 3.5.1 check the permission of a txn's top-level
// operations only, so this holds because the lease group writes each key
// in a top-level txn of its own (lease_group/actor.rs, `write`).
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_whose_etcd_role_is_limited_reports_the_refusal_and_registers_the_rest() {
    let mut etcd = Etcd::single().await;
    // User `sidekick` may read and write `/services/` only.
    enable_auth(&etcd);
    etcd.set_raw_user("root", ROOT_PASSWORD);
    let prefix = unique_prefix("rbac");
    let services = format!("/services{prefix}");
    let outside = format!("{prefix}/config");
    let fleet = Fleet::new("rbac");
    fleet
        .start(vec![
            Spec::new("a").label("discovery.key", &format!("{services}/%n")),
            Spec::new("denied").label("discovery.key", &format!("{outside}/%n")),
        ])
        .await;
    let notify = NotifySocket::new();
    // The agent itself allows both; etcd's role does not.
    let mut cmd = host_agent(
        &etcd,
        &fleet,
        &["--allow-prefix", &services, "--allow-prefix", &outside],
    );
    cmd.env("NOTIFY_SOCKET", notify.path())
        .env("ETCDCTL_USER", "sidekick")
        .env("ETCDCTL_PASSWORD", SIDEKICK_PASSWORD);
    let mut p = Proc::spawn(cmd);

    let want = || {
        let running = fleet.running();
        running
            .iter()
            .filter(|(n, _)| !n.ends_with("-denied"))
            .map(|(n, ip)| (format!("{services}/{n}"), ip.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    converges(&etcd, &services, SETTLE, want, || p.dump()).await;
    let denied = format!("{outside}/{}", fleet.name("denied"));
    let written = etcd_map(&etcd, &outside).await;
    assert!(
        written.is_empty(),
        "etcd let the agent write {written:?}\n{}",
        p.dump()
    );
    wait_status(&notify, &p, "with etcd's refusal", |s| {
        s.contains(&format!("etcd refuses {denied}")) && s.contains("permission denied")
    })
    .await;

    // It keeps registering: a container started now is registered.
    fleet
        .start(vec![
            Spec::new("b").label("discovery.key", &format!("{services}/%n")),
        ])
        .await;
    converges(&etcd, &services, SETTLE, want, || p.dump()).await;
    assert_eq!(want().len(), 2);
    assert!(etcd_map(&etcd, &outside).await.is_empty());
    assert!(p.try_exit().is_none(), "{}", p.dump());
}
