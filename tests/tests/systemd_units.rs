//! The units under a real systemd (252, PID 1 in a container: see
//! `harness::systemd`), as `make install` installs them, driven with
//! `systemctl` and read with `journalctl`.
//!
//! Each test has its own etcd and its own systemd host, and instance
//! numbers drawn at random, so the fixed names of the chapter's stack
//! (`memcached-%i`, `couchbase-%i`) never collide between tests. Only the
//! stack test publishes a host port (couchbase@'s `-p 8091:8091`) and runs
//! web@1 (port 3001), and no other test uses those ports on the host.
//!
//! Each test prints what it measured (`measured: …`); run with
//! `--no-capture` to see the figures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use harness::etcd::{ROOT_PASSWORD, SIDEKICK_PASSWORD, enable_auth};
use harness::systemd::{HostConfig, SystemdHost};
use harness::{Etcd, RawWatch};
use tokio::time::Instant;

/// A random instance number, so no two tests (or runs) share a container name.
fn instance() -> u32 {
    fastrand::u32(100_000..999_999)
}

/// The IP of an `IP:PORT` value.
fn ip(value: &str) -> &str {
    value.rsplit_once(':').map(|(ip, _)| ip).unwrap_or(value)
}

fn count(journal: &str, needle: &str) -> usize {
    journal.lines().filter(|l| l.contains(needle)).count()
}

/// Start memcached@i (and with it its sidekick); return the registered value.
async fn start_memcached(etcd: &Etcd, host: &SystemdHost, i: u32) -> (String, Duration) {
    host.sibling(format!("memcached-{i}"));
    let t = Instant::now();
    host.systemctl(&["start", &format!("memcached@{i}.service")]);
    let v = host
        .wait_key(
            etcd,
            &format!("/services/memcached/{i}"),
            Duration::from_secs(30),
            |v| v.ends_with(":11211"),
        )
        .await;
    (v, t.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
async fn systemd_the_chapters_stack_and_its_failover() {
    let etcd = Etcd::single().await;
    let host = SystemdHost::start(HostConfig::new(&etcd.endpoints_arg())).await;
    let base = instance();
    let mc: Vec<String> = (1..=3).map(|k| (base + k).to_string()).collect();
    let cb = (base + 4).to_string();
    for i in &mc {
        host.sibling(format!("memcached-{i}"));
    }
    host.sibling(format!("couchbase-{cb}"));
    // The test image is no Couchbase: nothing to initialise.
    host.systemctl(&["mask", &format!("couchbase-init@{cb}.service")]);
    // The chapter's 20 s hold-off, shortened for the failover below.
    host.drop_in(
        "couchbase@.service",
        "test-holdoff",
        "[Service]\nRestartSec=2s\n",
    );
    let raw = RawWatch::start(&etcd, "/services/").await;

    // 1. Start the stack.
    let t0 = Instant::now();
    let mut units: Vec<String> = mc
        .iter()
        .map(|i| format!("memcached@{i}.service"))
        .collect();
    units.push(format!("couchbase@{cb}.service"));
    units.push("web@1.service".into());
    units.push("worker.service".into());
    let mut args = vec!["start"];
    args.extend(units.iter().map(String::as_str));
    host.systemctl(&args);
    let mut values = Vec::new();
    for i in &mc {
        let key = format!("/services/memcached/{i}");
        let e = raw
            .wait_for(Duration::from_secs(30), &key, |e| e.put && e.key == key)
            .await;
        values.push(e.value_str());
    }
    let cb_key = format!("/services/couchbase/{cb}");
    let cb_put = raw
        .wait_for(Duration::from_secs(30), &cb_key, |e| {
            e.put && e.key == cb_key
        })
        .await;
    let cb_value = cb_put.value_str();
    assert!(cb_value.ends_with(":8091"), "{cb_value}");
    let start_to_registered = t0.elapsed();

    // The apps log their backends.
    let all = host
        .wait_journal(
            "web@1.service",
            Duration::from_secs(30),
            "web's config with every backend",
            0,
            |l| {
                l.starts_with("current config:")
                    && values.iter().all(|v| l.contains(v.as_str()))
                    && l.contains(&format!("couchbase://{cb_value}"))
            },
        )
        .await;
    host.wait_journal(
        "worker.service",
        Duration::from_secs(30),
        "worker's connection",
        0,
        |l| l == format!("current connection: couchbase://{cb_value}"),
    )
    .await;
    host.wait_journal(
        "web@1.service",
        Duration::from_secs(30),
        "web answered by a memcached",
        0,
        |l| l.starts_with("memcached ") && l.contains("answered: VERSION"),
    )
    .await;
    println!("measured: stack start-to-registered (4 keys) {start_to_registered:?}; web: {all}");

    // 2. Stop memcached@2: its key goes at once, its sidekick stops with it
    //    (BindsTo=), and the web app restarts once with the other two.
    let web = host.journal("web@1.service");
    let starts_before = count(&web, "child started");
    let skip = web.lines().count();
    let gone_key = format!("/services/memcached/{}", mc[1]);
    let t = Instant::now();
    host.systemctl(&["stop", &format!("memcached@{}.service", mc[1])]);
    let stop_returned = t.elapsed();
    let gone = raw
        .wait_for(Duration::from_secs(10), "memcached@2's key gone", |e| {
            !e.put && e.key == gone_key
        })
        .await;
    let stop_to_gone = gone.at.saturating_duration_since(t);
    assert!(
        stop_to_gone < Duration::from_secs(5),
        "the key went {stop_to_gone:?} after the stop"
    );
    host.wait_property(
        &format!("memcached-sidekick@{}.service", mc[1]),
        "ActiveState",
        Duration::from_secs(10),
        |s| s == "inactive",
    )
    .await;
    let restarted = host
        .wait_journal(
            "web@1.service",
            Duration::from_secs(30),
            "web's config without memcached@2",
            skip,
            |l| {
                l.starts_with("current config:")
                    && l.contains(&values[0])
                    && l.contains(&values[2])
                    && !l.contains(&values[1])
            },
        )
        .await;
    let web_restart = t.elapsed();
    // discover acts at most 5 s (--wait 1s:5s) after the first change: past
    // that, one restart means one.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let starts_after = count(&host.journal("web@1.service"), "child started");
    assert_eq!(
        starts_after,
        starts_before + 1,
        "the web app restarted {} times after the stop\n{}",
        starts_after - starts_before,
        host.journal("web@1.service")
    );
    println!(
        "measured: stop memcached@2: systemctl stop returned in {stop_returned:?}, key gone {stop_to_gone:?} after the stop, web restarted after {web_restart:?}: {restarted}"
    );

    // 3. The chapter's failover (6.4.1): Couchbase's container dies; its key
    //    goes at once, systemd restarts couchbase@ (and with it the
    //    sidekick), and the worker and web app follow the new registration.
    let worker_skip = host.journal("worker.service").lines().count();
    let web_skip = host.journal("web@1.service").lines().count();
    let puts_before = raw
        .events()
        .iter()
        .filter(|e| e.put && e.key == cb_key)
        .count();
    let t = Instant::now();
    harness::docker::docker_cli(&["kill", &format!("couchbase-{cb}")]);
    let lost = raw
        .wait_for(Duration::from_secs(10), "couchbase key gone", |e| {
            !e.put && e.key == cb_key
        })
        .await;
    let kill_to_gone = lost.at.saturating_duration_since(t);
    let back = raw
        .wait_for(Duration::from_secs(60), "couchbase registered again", |e| {
            e.put && e.key == cb_key && e.revision > lost.revision
        })
        .await;
    assert!(
        raw.events()
            .iter()
            .filter(|e| e.put && e.key == cb_key)
            .count()
            > puts_before
    );
    let new_value = back.value_str();
    let conn = format!("current connection: couchbase://{new_value}");
    host.wait_journal(
        "worker.service",
        Duration::from_secs(30),
        "worker's new connection",
        worker_skip,
        |l| l == conn,
    )
    .await;
    let worker_delay = Instant::now().saturating_duration_since(back.at);
    host.wait_journal(
        "web@1.service",
        Duration::from_secs(30),
        "web's new couchbase",
        web_skip,
        |l| l.starts_with("current config:") && l.contains(&format!("couchbase://{new_value}")),
    )
    .await;
    assert_eq!(
        host.show(&format!("couchbase-sidekick@{cb}.service"), "ActiveState"),
        "active"
    );
    println!(
        "measured: failover: kill-to-gone {kill_to_gone:?}; re-registered {:?} after the kill (couchbase@ RestartSec=2s); worker running with the new backend {worker_delay:?} after the registration (upper bound: journal polled every ~0.1 s); old {cb_value} new {new_value}; ip {}",
        back.at.saturating_duration_since(t),
        ip(&new_value)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn systemd_a_crashed_sidekick_restarts_silently() {
    let etcd = Etcd::single().await;
    let host = SystemdHost::start(HostConfig::new(&etcd.endpoints_arg())).await;
    let i = instance();
    let (value, start_to_registered) = start_memcached(&etcd, &host, i).await;
    let unit = format!("memcached-sidekick@{i}.service");
    host.wait_property(&unit, "ActiveState", Duration::from_secs(20), |s| {
        s == "active"
    })
    .await;
    let raw = RawWatch::start(&etcd, &format!("/services/memcached/{i}")).await;
    let pid = host.main_pid(&unit);
    let t = Instant::now();
    host.systemctl(&["kill", "-s", "KILL", &unit]);
    host.wait_property(&unit, "NRestarts", Duration::from_secs(20), |n| n == "1")
        .await;
    host.wait_property(&unit, "ActiveState", Duration::from_secs(20), |s| {
        s == "active"
    })
    .await;
    let active_again = t.elapsed();
    assert_ne!(host.main_pid(&unit), pid, "a new process");
    host.wait_property(&unit, "StatusText", Duration::from_secs(20), |s| {
        s.starts_with("registered ") && s.contains(&value)
    })
    .await;
    // Past the lease's TTL (8 s): had the old lease been left to expire,
    // the delete would have shown by now.
    let settle = Duration::from_secs(10).saturating_sub(t.elapsed());
    tokio::time::sleep(settle).await;
    assert!(
        raw.events().is_empty(),
        "a crash restart must wake no watcher: {:#?}",
        raw.events()
    );
    assert_eq!(
        etcd.get_value(&format!("/services/memcached/{i}")).await,
        Some(value)
    );
    println!(
        "measured: crash: start-to-registered {start_to_registered:?}; SIGKILL to active again {active_again:?} (RestartSec=1); watch events: 0"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn systemd_the_watchdog_restarts_a_frozen_sidekick() {
    let etcd = Etcd::single().await;
    let host = SystemdHost::start(HostConfig::new(&etcd.endpoints_arg())).await;
    let i = instance();
    let unit = format!("memcached-sidekick@{i}.service");
    host.drop_in(&unit, "test-watchdog", "[Service]\nWatchdogSec=3s\n");
    let (value, _) = start_memcached(&etcd, &host, i).await;
    host.wait_property(&unit, "ActiveState", Duration::from_secs(20), |s| {
        s == "active"
    })
    .await;
    let pid = host.main_pid(&unit);
    let t = Instant::now();
    host.systemctl(&["kill", "-s", "STOP", &unit]);
    host.wait_property(&unit, "NRestarts", Duration::from_secs(60), |n| n == "1")
        .await;
    let restarted = t.elapsed();
    assert!(
        host.journal(&unit).contains("Watchdog timeout"),
        "{}",
        host.journal(&unit)
    );
    host.wait_property(&unit, "ActiveState", Duration::from_secs(30), |s| {
        s == "active"
    })
    .await;
    assert_ne!(host.main_pid(&unit), pid);
    let key = format!("/services/memcached/{i}");
    host.wait_key(&etcd, &key, Duration::from_secs(30), |v| v == value)
        .await;
    host.wait_property(&unit, "StatusText", Duration::from_secs(20), |s| {
        s.starts_with("registered ")
    })
    .await;
    println!(
        "measured: watchdog (WatchdogSec=3s): SIGSTOP to restarted {restarted:?}; registered again {:?} after the SIGSTOP",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn systemd_a_bad_configuration_does_not_loop() {
    let etcd = Etcd::single().await;
    let host = SystemdHost::start(HostConfig::new(&etcd.endpoints_arg())).await;
    let i = instance();
    host.sibling(format!("memcached-{i}"));
    let unit = format!("memcached-sidekick@{i}.service");
    host.drop_in(
        &unit,
        "test-bad-flag",
        "[Service]\nExecStart=\nExecStart=/usr/local/bin/sidekick --key /services/memcached/%i --container memcached-%i --port 11211 --no-such-flag\n",
    );
    let o = host.exec(&["systemctl", "start", &unit]);
    assert!(!o.status.success(), "the start must fail");
    host.wait_property(&unit, "ActiveState", Duration::from_secs(20), |s| {
        s == "failed"
    })
    .await;
    assert_eq!(host.show(&unit, "ExecMainStatus"), "2");
    // Five restart delays (RestartSec=1) later, still not restarted.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        host.show(&unit, "NRestarts"),
        "0",
        "{}",
        host.journal(&unit)
    );
    assert_eq!(host.show(&unit, "ActiveState"), "failed");
    assert_eq!(
        count(&host.journal(&unit), "unexpected argument '--no-such-flag'"),
        1,
        "{}",
        host.journal(&unit)
    );
    // Every unit that runs our tools refuses to restart on exit 2.
    for u in [
        "memcached-sidekick@1.service",
        "couchbase-sidekick@1.service",
        "sidekick@x.service",
        "sidekick-host.service",
        "web@1.service",
        "worker.service",
        "web-lb.service",
        "web-lb-nginx.service",
    ] {
        let v = host.show(u, "RestartPreventExitStatus");
        assert!(v.split_whitespace().any(|s| s == "2"), "{u}: {v:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn systemd_start_returns_while_etcd_is_down_and_registers_later() {
    let mut etcd = Etcd::single().await;
    let host = SystemdHost::start(HostConfig::new(&etcd.endpoints_arg())).await;
    let i = instance();
    host.sibling(format!("memcached-{i}"));
    let unit = format!("memcached-sidekick@{i}.service");
    etcd.kill(0);
    let t = Instant::now();
    // Pulls in memcached@i (BindsTo=) and returns once the sidekick is ready.
    host.systemctl(&["start", &unit]);
    let start_took = t.elapsed();
    assert!(
        start_took < Duration::from_secs(25),
        "systemctl start took {start_took:?}"
    );
    assert_eq!(host.show(&unit, "ActiveState"), "active");
    let status = host.show(&unit, "StatusText");
    // Before the first connection: which etcd, and why not yet; after it
    // (the registration retrying): how long etcd has been unreachable.
    assert!(
        status.starts_with(&format!("waiting for etcd at {}: ", etcd.endpoint(0)))
            || status.starts_with("etcd unreachable for "),
        "STATUS= must say what it waits for: {status:?}"
    );
    let t = Instant::now();
    etcd.restart(0).await;
    let key = format!("/services/memcached/{i}");
    host.wait_key(&etcd, &key, Duration::from_secs(60), |v| {
        v.ends_with(":11211")
    })
    .await;
    let registered = t.elapsed();
    host.wait_property(&unit, "StatusText", Duration::from_secs(20), |s| {
        s.starts_with("registered ")
    })
    .await;
    println!(
        "measured: etcd down: systemctl start returned in {start_took:?} with STATUS={status:?}; registered {registered:?} after etcd was restarted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn systemd_credentials_register_under_a_dynamic_user_and_stay_secret() {
    let mut etcd = Etcd::single().await;
    enable_auth(&etcd);
    etcd.set_raw_user("root", ROOT_PASSWORD);
    let host = SystemdHost::start(
        HostConfig::new(&etcd.endpoints_arg()).sidekick_env("ETCDCTL_USER=sidekick"),
    )
    .await;
    host.write_file(
        "/etc/sidekick/etcd-password",
        &format!("{SIDEKICK_PASSWORD}\n"),
    );
    // a: as the README says, the credential named by DISCOVERY_PASSWORD_FILE.
    // b: only the credential: read from $CREDENTIALS_DIRECTORY/etcd-password.
    // c: the old name, which still works, with a warning.
    let (a, b, c) = (instance(), instance(), instance());
    host.drop_in(
        &format!("memcached-sidekick@{a}.service"),
        "credentials",
        "[Service]\nLoadCredential=etcd-password:/etc/sidekick/etcd-password\nEnvironment=DISCOVERY_PASSWORD_FILE=%d/etcd-password\n",
    );
    host.drop_in(
        &format!("memcached-sidekick@{b}.service"),
        "credentials",
        "[Service]\nLoadCredential=etcd-password:/etc/sidekick/etcd-password\n",
    );
    host.drop_in(
        &format!("memcached-sidekick@{c}.service"),
        "credentials",
        "[Service]\nLoadCredential=etcd-password:/etc/sidekick/etcd-password\nEnvironment=ETCDCTL_PASSWORD_FILE=%d/etcd-password\n",
    );
    let (_, took_a) = start_memcached(&etcd, &host, a).await;
    let (_, took_b) = start_memcached(&etcd, &host, b).await;
    start_memcached(&etcd, &host, c).await;
    let old_name = host.journal_args(&[
        "-u",
        &format!("memcached-sidekick@{c}.service"),
        "-p",
        "warning",
        "-o",
        "cat",
    ]);
    assert!(
        old_name.contains("ETCDCTL_PASSWORD_FILE is deprecated")
            && old_name.contains("DISCOVERY_PASSWORD_FILE"),
        "{old_name}"
    );
    for i in [a, b, c] {
        let unit = format!("memcached-sidekick@{i}.service");
        host.wait_property(&unit, "ActiveState", Duration::from_secs(20), |s| {
            s == "active"
        })
        .await;
        assert_eq!(host.show(&unit, "DynamicUser"), "yes");
        let show = host.systemctl(&["show", &unit]);
        assert!(!show.contains(SIDEKICK_PASSWORD), "in systemctl show");
        let pid = host.main_pid(&unit).to_string();
        let environ = host.run(&["cat", &format!("/proc/{pid}/environ")]);
        assert!(
            !environ.contains(SIDEKICK_PASSWORD),
            "in /proc/{pid}/environ"
        );
        assert!(environ.contains("CREDENTIALS_DIRECTORY="), "{environ}");
    }
    let journal = host.journal_args(&["-o", "verbose"]);
    assert!(!journal.contains(SIDEKICK_PASSWORD), "in the journal");
    assert!(journal.contains("registered"), "the journal was read");
    println!(
        "measured: credentials: start-to-registered {took_a:?} (DISCOVERY_PASSWORD_FILE=%d/…), {took_b:?} ($CREDENTIALS_DIRECTORY)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn systemd_warnings_carry_their_priority_into_the_journal() {
    let etcd = Etcd::single().await;
    let host = SystemdHost::start(HostConfig::new(&etcd.endpoints_arg())).await;
    let i = instance();
    host.sibling(format!("memcached-{i}"));
    let unit = format!("memcached-sidekick@{i}.service");
    // A Docker that is not there: the sidekick warns and keeps retrying.
    host.drop_in(
        &unit,
        "test-no-docker",
        "[Service]\nEnvironment=DOCKER_HOST=unix:///run/no-docker.sock\n",
    );
    host.systemctl(&["start", &format!("memcached@{i}.service")]);
    host.wait_journal(&unit, Duration::from_secs(30), "the warning", 0, |l| {
        l.contains("Docker unreachable")
    })
    .await;
    let warnings = host.journal_args(&["-u", &unit, "-p", "warning", "-o", "cat"]);
    assert!(warnings.contains("Docker unreachable"), "{warnings}");
    assert!(
        !warnings.contains("connecting to etcd"),
        "an info line at warning priority:\n{warnings}"
    );
    let info = host.journal_args(&["-u", &unit, "-p", "info", "-o", "cat"]);
    assert!(info.contains("connecting to etcd"), "{info}");
    // The prefix is parsed by journald, not left in the text.
    assert!(!info.contains("<4>") && !info.contains("<6>"), "{info}");
}

#[tokio::test(flavor = "multi_thread")]
async fn systemd_every_unit_that_runs_our_tools_is_exposed_at_most_2() {
    let etcd = Etcd::single().await;
    let host = SystemdHost::start(HostConfig::new(&etcd.endpoints_arg())).await;
    let mut report = Vec::new();
    for u in [
        "memcached-sidekick@1.service",
        "couchbase-sidekick@1.service",
        "sidekick@x.service",
        "sidekick-host.service",
        "web@1.service",
        "worker.service",
    ] {
        let out = host.run(&["systemd-analyze", "security", "--no-pager", u]);
        let score: f64 = out
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no score for {u}:\n{out}"));
        assert!(score <= 2.0, "{u}: exposure {score} > 2.0\n{out}");
        report.push(format!("{u} {score}"));
    }
    println!(
        "measured: exposure under systemd 252: {}",
        report.join(", ")
    );
}

/// The nginx example as `make install` installs it, under a real systemd:
/// `web-lb.service` (discover render, sandboxed) pulls in
/// `web-lb-nginx.service` (nginx, its first config rendered and checked
/// before it starts) and reloads it with `systemctl reload` after each
/// change. Backends run beside the test and the host shares the network,
/// so curl reaches nginx and nginx the backends.
#[tokio::test(flavor = "multi_thread")]
async fn systemd_reload_unit_reloads_nginx_through_systemctl() {
    use harness::web::{backend, hits, wait_listening};
    let etcd = Etcd::single().await;
    let host = SystemdHost::start(HostConfig::new(&etcd.endpoints_arg())).await;
    let reserved = harness::ports::reserve(3);
    let ports = harness::ports::numbers(&reserved[..2]);
    let backends: Vec<_> = ports.iter().map(|p| backend(*p)).collect();
    for (b, p) in backends.iter().zip(&ports) {
        wait_listening(b, *p).await;
    }
    let lb_port = reserved[2].number();
    let c = etcd.client().await;
    // The units' own keys (this etcd is the test's alone): nginx settings
    // under /config/web-lb, backends under /services/web.
    for (k, v) in [
        ("/config/web-lb/listen", format!("\"127.0.0.1:{lb_port}\"")),
        ("/services/web/1", format!("127.0.0.1:{}", ports[0])),
    ] {
        c.put(k, v).await.unwrap();
    }
    // What Debian's nginx package creates, and the host's skeleton root
    // lacks.
    host.run(&["mkdir", "-p", "/var/lib/nginx", "/var/log/nginx"]);
    host.systemctl(&["start", "web-lb.service"]);
    host.wait_journal(
        "web-lb.service",
        Duration::from_secs(30),
        "render to follow etcd",
        0,
        |l| l.contains("rendering; following etcd"),
    )
    .await;
    let nginx_pid = host.main_pid("web-lb-nginx.service");
    assert!(nginx_pid > 0, "{}", host.journal_all());
    let serving = |want: Vec<u16>, what: &'static str| {
        let want: std::collections::BTreeSet<String> = want.iter().map(u16::to_string).collect();
        let host = &host;
        async move {
            harness::eventually_async(
                Duration::from_secs(30),
                format!("{what}\n{}", host.journal_all()),
                || {
                    let want = want.clone();
                    async move {
                        let got: std::collections::BTreeSet<String> =
                            hits(lb_port, want.len() * 3).await?.into_iter().collect();
                        (got == want).then_some(())
                    }
                },
            )
            .await;
        }
    };
    serving(vec![ports[0]], "nginx to reach web/1").await;
    assert_eq!(count(&host.journal("web-lb-nginx.service"), "Reloaded"), 0);

    // Only a reload puts web/2 into nginx's rotation, and only systemd's
    // ExecReload (reached through `systemctl reload`) reloads nginx here.
    c.put("/services/web/2", format!("127.0.0.1:{}", ports[1]))
        .await
        .unwrap();
    serving(
        ports.to_vec(),
        "nginx, reloaded by systemd, to send to web/2",
    )
    .await;
    host.wait_journal(
        "web-lb-nginx.service",
        Duration::from_secs(10),
        "systemd's reload",
        0,
        |l| l.contains("Reloaded"),
    )
    .await;
    let j = host.journal("web-lb-nginx.service");
    assert_eq!(count(&j, "Reloaded"), 1, "one reload for one change\n{j}");
    assert_eq!(
        host.main_pid("web-lb-nginx.service"),
        nginx_pid,
        "a reload, not a restart\n{j}"
    );
    assert!(
        host.journal("web-lb.service").contains("reloaded"),
        "{}",
        host.journal("web-lb.service")
    );
}
