//! The discover binary against a real etcd, with real child processes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use harness::proc::{Proc, descendants, discover, proc_state, sidekick};
use harness::tcp_proxy::TcpProxy;
use harness::{Etcd, RawWatch, eventually};
use nix::sys::signal::Signal;
use tokio::time::Instant;

fn etcdctl(etcd: &Etcd, args: &[&str]) {
    let out = Command::new(harness::etcd::etcdctl_binary())
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", etcd.endpoints_arg()))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run(cmd: Command) -> (i32, String, String) {
    let mut cmd = cmd;
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn get_and_watch_print_etcd_v2_envelopes_byte_for_byte() {
    // A fresh etcd: revisions are known (the first write is revision 2).
    let etcd = Etcd::single().await;
    etcdctl(&etcd, &["put", "/services/couchbase/1", "10.1.1.2"]); // rev 2
    etcdctl(&etcd, &["put", "/services/couchbase-old/1", "no"]); // rev 3, another directory
    let (code, out, err) = run(discover(&etcd, &["get", "/services/couchbase"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "{\"action\":\"get\",\"revision\":3,\"node\":{\"key\":\"/services/couchbase\",\"dir\":true,\"nodes\":[{\"key\":\"/services/couchbase/1\",\"value\":\"10.1.1.2\",\"createdIndex\":2,\"modifiedIndex\":2}],\"createdIndex\":2,\"modifiedIndex\":2}}\n"
    );

    let w = Proc::spawn(discover(&etcd, &["watch", "/services/couchbase/"]));
    w.wait_stdout(Duration::from_secs(10), "the get line", |l| {
        l.contains("\"get\"")
    })
    .await;
    etcdctl(&etcd, &["put", "/services/couchbase/1", "10.1.53.5"]); // 4 set
    etcdctl(&etcd, &["put", "/services/couchbase/1", "10.1.53.5"]); // 5 update
    etcdctl(&etcd, &["put", "/services/couchbase/2", "10.1.53.6"]); // 6 set, new
    etcdctl(&etcd, &["put", "/services/couchbase-old/1", "x"]); // 7 not ours
    etcdctl(&etcd, &["del", "/services/couchbase/1"]); // 8 delete
    // A value that is not UTF-8 (written with a raw client: etcdctl takes text).
    let mut raw = etcd.raw_client().await;
    raw.put("/services/couchbase/3", vec![0xffu8, 0xfe], None)
        .await
        .unwrap(); // 9
    w.wait_stdout(Duration::from_secs(10), "the binary value", |l| {
        l.contains("valueBase64")
    })
    .await;
    let want = [
        "{\"action\":\"get\",\"revision\":3,\"node\":{\"key\":\"/services/couchbase\",\"dir\":true,\"nodes\":[{\"key\":\"/services/couchbase/1\",\"value\":\"10.1.1.2\",\"createdIndex\":2,\"modifiedIndex\":2}],\"createdIndex\":2,\"modifiedIndex\":2}}",
        "{\"action\":\"set\",\"revision\":4,\"node\":{\"key\":\"/services/couchbase/1\",\"value\":\"10.1.53.5\",\"createdIndex\":2,\"modifiedIndex\":4},\"prevNode\":{\"key\":\"/services/couchbase/1\",\"value\":\"10.1.1.2\",\"createdIndex\":2,\"modifiedIndex\":2}}",
        "{\"action\":\"update\",\"revision\":5,\"node\":{\"key\":\"/services/couchbase/1\",\"value\":\"10.1.53.5\",\"createdIndex\":2,\"modifiedIndex\":5},\"prevNode\":{\"key\":\"/services/couchbase/1\",\"value\":\"10.1.53.5\",\"createdIndex\":2,\"modifiedIndex\":4}}",
        "{\"action\":\"set\",\"revision\":6,\"node\":{\"key\":\"/services/couchbase/2\",\"value\":\"10.1.53.6\",\"createdIndex\":6,\"modifiedIndex\":6}}",
        "{\"action\":\"delete\",\"revision\":8,\"node\":{\"key\":\"/services/couchbase/1\",\"createdIndex\":2,\"modifiedIndex\":8},\"prevNode\":{\"key\":\"/services/couchbase/1\",\"value\":\"10.1.53.5\",\"createdIndex\":2,\"modifiedIndex\":5}}",
        "{\"action\":\"set\",\"revision\":9,\"node\":{\"key\":\"/services/couchbase/3\",\"valueBase64\":\"//4=\",\"createdIndex\":9,\"modifiedIndex\":9}}",
    ];
    assert_eq!(w.stdout_lines(), want, "{}", w.dump());

    // --actions filters; --since-revision continues from a revision.
    let since = Proc::spawn(discover(
        &etcd,
        &[
            "watch",
            "/services/couchbase",
            "--since-revision",
            "4",
            "--actions",
            "set,delete",
        ],
    ));
    since
        .wait_stdout(Duration::from_secs(10), "the last set", |l| {
            l.contains("\"revision\":9")
        })
        .await;
    let out = since.stdout_lines().join("\n");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].contains("\"revision\":4") && lines[0].contains("10.1.53.5"),
        "state at 4: {}",
        lines[0]
    );
    let actions: Vec<&str> = lines[1..]
        .iter()
        .map(|l| {
            if l.contains("\"set\"") {
                "set"
            } else if l.contains("\"delete\"") {
                "delete"
            } else {
                "other"
            }
        })
        .collect();
    assert_eq!(
        actions,
        vec!["set", "delete", "set"],
        "events after 4, updates filtered: {out}"
    );

    // get --ttl on a leased key; --format values and env; several prefixes.
    let lease = raw.lease_grant(60, None).await.unwrap().id();
    raw.put(
        "/services/memcached/1",
        "10.1.0.9:11211",
        Some(etcd_client::PutOptions::new().with_lease(lease)),
    )
    .await
    .unwrap();
    let (_, out, _) = run(discover(&etcd, &["get", "/services/memcached", "--ttl"]));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let ttl = v["node"]["nodes"][0]["ttl"].as_u64().unwrap();
    assert!((55..=60).contains(&ttl), "{out}");
    let (_, out, _) = run(discover(
        &etcd,
        &[
            "get",
            "/services/couchbase",
            "/services/memcached",
            "--format",
            "env",
        ],
    ));
    // The raw bytes of the binary value, read back lossily here.
    assert_eq!(
        out,
        "SERVICES_COUCHBASE=10.1.53.6,\u{fffd}\u{fffd}\nSERVICES_MEMCACHED=10.1.0.9:11211\n"
    );
    let (_, out, _) = run(discover(
        &etcd,
        &["get", "/services/memcached", "--format", "values"],
    ));
    assert_eq!(out, "10.1.0.9:11211\n");
    // An empty directory still has "nodes": [].
    let (_, out, _) = run(discover(&etcd, &["get", "/services/none"]));
    assert!(out.contains("\"nodes\":[]"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ls_prints_a_table_with_ttls() {
    let etcd = Etcd::single().await;
    let mut raw = etcd.raw_client().await;
    let lease = raw.lease_grant(30, None).await.unwrap().id();
    raw.put(
        "/services/memcached/1",
        "10.1.0.2:11211",
        Some(etcd_client::PutOptions::new().with_lease(lease)),
    )
    .await
    .unwrap();
    raw.put("/services/memcached/2", "10.1.0.3:11211", None)
        .await
        .unwrap();
    let (code, out, err) = run(discover(&etcd, &["ls", "/services/memcached"]));
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("KEY")
            && lines[0].contains("VALUE")
            && lines[0].contains("TTL")
            && lines[0].contains("MODIFIED")
    );
    assert!(
        lines[1].starts_with("/services/memcached/1")
            && lines[1].contains("10.1.0.2:11211")
            && lines[1].contains("s "),
        "{out}"
    );
    assert!(lines[2].contains(" - "), "no lease shows -: {out}");
}

/// A child (sh) that logs `start PID …` once its traps are set (a signal
/// sent as soon as the test sees that line must find them), runs `on_term`
/// on SIGTERM and logs the snapshot file on SIGHUP.
fn child_script(dir: &Path, on_term: &str) -> PathBuf {
    let path = dir.join("child.sh");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n\
             trap '{on_term}' TERM\n\
             trap 'echo \"hup $$ $(tr -d \"\\n \" < \"$DISCOVER_SNAPSHOT_FILE\")\" >> \"$LOG\"' HUP\n\
             echo \"start $$ ${{SERVICES_COUCHBASE-unset}} ${{COUCHBASE-unset}} $DISCOVER_REVISION ${{ETCDCTL_PASSWORD-nopw}}\" >> \"$LOG\"\n\
             while :; do sleep 0.05; done\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn log_lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn starts(log: &Path) -> Vec<String> {
    log_lines(log)
        .into_iter()
        .filter(|l| l.starts_with("start"))
        .collect()
}

/// Start `discover ... --exec` with its child logging to `log`, and wait
/// for the child's first start.
async fn spawn_supervisor(mut cmd: Command, log: &Path) -> Proc {
    cmd.env("LOG", log);
    let p = Proc::spawn(cmd);
    eventually(Duration::from_secs(10), "first start", || {
        (starts(log).len() == 1).then_some(())
    })
    .await;
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_restarts_on_set_and_delete_never_on_update() {
    let etcd = Etcd::single().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let script = child_script(dir.path(), "echo \"term $$\" >> \"$LOG\"; exit 7");
    etcdctl(&etcd, &["put", "/services/couchbase/1", "10.1.1.2"]);
    let cmd = discover(
        &etcd,
        &[
            "watch",
            "/services/couchbase",
            "--exec",
            script.to_str().unwrap(),
        ],
    );
    let mut p = spawn_supervisor(cmd, &log).await;
    assert!(
        starts(&log)[0].contains(" 10.1.1.2 unset "),
        "env: {:?}",
        starts(&log)
    );

    // An update (same value) does not restart.
    etcdctl(&etcd, &["put", "/services/couchbase/1", "10.1.1.2"]);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        starts(&log).len(),
        1,
        "no restart on update: {:?}",
        log_lines(&log)
    );

    // A set does, with the new environment, read at that put's revision.
    etcdctl(&etcd, &["put", "/services/couchbase/2", "10.1.1.3"]);
    let revision = etcd.revision().await;
    eventually(Duration::from_secs(5), "restart on set", || {
        (starts(&log).len() == 2).then_some(())
    })
    .await;
    assert!(
        starts(&log)[1].contains(&format!(" 10.1.1.2,10.1.1.3 unset {revision} ")),
        "SERVICES_COUCHBASE and DISCOVER_REVISION={revision}: {:?}",
        starts(&log)
    );
    assert!(
        log_lines(&log).iter().any(|l| l.starts_with("term")),
        "the old child got SIGTERM"
    );

    // So does a delete.
    etcdctl(&etcd, &["del", "/services/couchbase/1"]);
    eventually(Duration::from_secs(5), "restart on delete", || {
        (starts(&log).len() == 3).then_some(())
    })
    .await;
    assert!(starts(&log)[2].contains(" 10.1.1.3 "), "{:?}", starts(&log));

    // SIGTERM to discover: the child gets SIGTERM, discover exits with its code.
    p.signal(Signal::SIGTERM);
    let status = p.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(
        status.code(),
        Some(7),
        "the child's exit code passes through\n{}",
        p.dump()
    );
    assert_eq!(
        log_lines(&log).last().map(|l| l.starts_with("term")),
        Some(true)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_on_set_keeps_the_chapter_semantics_and_env_name_renames() {
    let etcd = Etcd::single().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let script = child_script(dir.path(), "exit 0");
    etcdctl(&etcd, &["put", "/services/couchbase/1", "10.1.1.2"]);
    etcdctl(&etcd, &["put", "/services/couchbase/2", "10.1.1.3"]);
    let cmd = discover(
        &etcd,
        &[
            "watch",
            "/services/couchbase",
            "--restart-on",
            "set",
            "--env-name",
            "COUCHBASE=/services/couchbase",
            "--exec",
            script.to_str().unwrap(),
        ],
    );
    let _p = spawn_supervisor(cmd, &log).await;
    assert!(
        starts(&log)[0].contains(" unset 10.1.1.2,10.1.1.3 "),
        "renamed: {:?}",
        starts(&log)
    );
    etcdctl(&etcd, &["del", "/services/couchbase/1"]);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        starts(&log).len(),
        1,
        "no restart on delete with --restart-on set"
    );
    etcdctl(&etcd, &["put", "/services/couchbase/3", "10.1.1.4"]);
    eventually(Duration::from_secs(5), "restart on set", || {
        (starts(&log).len() == 2).then_some(())
    })
    .await;
    assert!(
        starts(&log)[1].contains(" 10.1.1.3,10.1.1.4 "),
        "the delete is in the new env: {:?}",
        starts(&log)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_sets_is_coalesced_by_wait() {
    let etcd = Etcd::single().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let script = child_script(dir.path(), "exit 0");
    let cmd = discover(
        &etcd,
        &[
            "watch",
            "/services/couchbase",
            "--wait",
            "200ms:2s",
            "--exec",
            script.to_str().unwrap(),
        ],
    );
    let _p = spawn_supervisor(cmd, &log).await;
    // 100 sets back to back. How fast etcd takes them is the machine's
    // business (P5 of `make bench` measures it); what --wait 200ms:2s
    // promises is a restart per 200 ms of quiet or per 2 s of burst, so the
    // bound on restarts is worked out from the gaps this burst really had.
    let (quiet, ceiling) = (Duration::from_millis(200), Duration::from_secs(2));
    let mut raw = etcd.raw_client().await;
    let t = Instant::now();
    let mut last = t;
    let mut quiet_gaps = 0;
    for i in 0..100 {
        raw.put(
            format!("/services/couchbase/{}", i % 10),
            format!("10.1.2.{i}"),
            None,
        )
        .await
        .unwrap();
        // Counted from 150 ms: discover sees the events a little later
        // than they were put, so a shorter gap can look quiet to it.
        if last.elapsed() >= quiet - Duration::from_millis(50) {
            quiet_gaps += 1;
        }
        last = Instant::now();
    }
    let burst = t.elapsed();
    eventually(
        Duration::from_secs(20),
        "a restart with the final state",
        || {
            starts(&log)
                .last()
                .is_some_and(|l| l.contains("10.1.2.99"))
                .then_some(())
        },
    )
    .await;
    // A deliberate quiet period of one --wait ceiling: no restart may
    // follow the one with the final state, and only an absence shows that.
    tokio::time::sleep(ceiling).await;
    let restarts = starts(&log).len() - 1;
    let most = 2 + quiet_gaps + (burst.as_millis() / ceiling.as_millis()) as usize;
    assert!(
        (1..=most).contains(&restarts),
        "100 sets in {burst:?} ({quiet_gaps} gaps of {quiet:?} or more) gave {restarts} restarts, \
         more than {most}: {:?}",
        starts(&log)
    );
    assert!(
        starts(&log).last().unwrap().contains("10.1.2.99"),
        "the last restart has the final state"
    );
    println!(
        "DISCOVER 100 sets in {burst:?} ({quiet_gaps} quiet gaps) with --wait 200ms:2s -> {restarts} restart(s)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_child_ignoring_sigterm_is_killed_and_nothing_is_left_behind() {
    let etcd = Etcd::single().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    // Ignores TERM, and leaves an orphan behind on each start.
    let script = dir.path().join("stubborn.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\ntrap '' TERM\necho \"start $$\" >> \"$LOG\"\n(sh -c 'sleep 0.3' &)\nwhile :; do sleep 0.05; done\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cmd = discover(
        &etcd,
        &[
            "watch",
            "/services/couchbase",
            "--kill-timeout",
            "700ms",
            "--exec",
            script.to_str().unwrap(),
        ],
    );
    let p = spawn_supervisor(cmd, &log).await;
    let t = Instant::now();
    etcdctl(&etcd, &["put", "/services/couchbase/1", "x"]);
    eventually(
        Duration::from_secs(5),
        "restart despite the ignored SIGTERM",
        || (starts(&log).len() == 2).then_some(()),
    )
    .await;
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(700),
        "waited the kill timeout: {took:?}"
    );
    p.wait_stderr(Duration::from_secs(1), "the SIGKILL", |l| {
        l.contains("SIGKILL")
    })
    .await;
    // The orphans (sleep 0.3) are reparented to discover and reaped: no zombie.
    tokio::time::sleep(Duration::from_secs(1)).await;
    // A zombie may exist for the instant between a child's exit and its
    // reaping; one that is still there half a second later was never reaped.
    let zombies = || -> Vec<i32> {
        descendants(p.pid())
            .into_iter()
            .filter(|pid| proc_state(*pid) == Some('Z'))
            .collect()
    };
    let first = zombies();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lasting: Vec<i32> = zombies()
        .into_iter()
        .filter(|z| first.contains(z))
        .collect();
    assert!(
        lasting.is_empty(),
        "zombies left unreaped under discover: {lasting:?}"
    );
    let direct: Vec<i32> = descendants(p.pid())
        .into_iter()
        .filter(|pid| harness::proc::parent_pid(*pid) == Some(p.pid()))
        .collect();
    assert_eq!(
        direct.len(),
        1,
        "one child running, nothing else: {direct:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_signal_writes_the_snapshot_before_signalling() {
    let etcd = Etcd::single().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let snap = dir.path().join("backends.json");
    let script = child_script(dir.path(), "exit 0");
    etcdctl(&etcd, &["put", "/services/couchbase/1", "10.1.1.2"]);
    let cmd = discover(
        &etcd,
        &[
            "watch",
            "/services/couchbase",
            "--reload-signal",
            "SIGHUP",
            "--snapshot-file",
            snap.to_str().unwrap(),
            "--exec",
            script.to_str().unwrap(),
        ],
    );
    let _p = spawn_supervisor(cmd, &log).await;
    let first: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&snap).unwrap()).unwrap();
    assert_eq!(
        first["prefixes"]["/services/couchbase"]["values"],
        serde_json::json!(["10.1.1.2"])
    );
    etcdctl(&etcd, &["put", "/services/couchbase/2", "10.1.1.3"]);
    let hup = eventually(Duration::from_secs(5), "the child got SIGHUP", || {
        log_lines(&log).into_iter().find(|l| l.starts_with("hup"))
    })
    .await;
    // The child read the file in its HUP handler: it already had the new backend.
    assert!(
        hup.contains("10.1.1.3"),
        "snapshot updated before the signal: {hup}"
    );
    assert_eq!(starts(&log).len(), 1, "signalled, not restarted");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_pipe_ends_discover_with_0() {
    let etcd = Etcd::single().await;
    let bin = harness::proc::bin_path("discover");
    let t = Instant::now();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} watch /services/x | head -1; echo \"rc=${{PIPESTATUS:-}}\"",
            bin.display()
        ))
        .env("ETCDCTL_ENDPOINTS", etcd.endpoints_arg())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\"get\""), "{stdout}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "exited promptly: {:?}",
        t.elapsed()
    );
    // Exit status of discover itself (not head):
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "{} watch /services/x | head -1 >/dev/null; echo ${{PIPESTATUS[0]}}",
            bin.display()
        ))
        .env("ETCDCTL_ENDPOINTS", etcd.endpoints_arg())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_survives_an_etcd_restart_without_gap_or_duplicate() {
    let mut etcd = Etcd::single().await;
    // Through a proxy, so that the second phase can cut discover off while
    // etcd goes on taking writes.
    let proxy = TcpProxy::start(etcd.endpoint(0).trim_start_matches("http://"));
    let mut cmd = discover(&etcd, &["watch", "/services/couchbase"]);
    cmd.env("ETCDCTL_ENDPOINTS", proxy.endpoint());
    let w = Proc::spawn(cmd);
    w.wait_stdout(Duration::from_secs(10), "get line", |l| {
        l.contains("\"get\"")
    })
    .await;
    let mut raw = etcd.raw_client().await;
    let mut last = 0;
    for i in 0..50 {
        last = raw
            .put(
                format!("/services/couchbase/{}", i % 5),
                format!("a{i}"),
                None,
            )
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
    }
    etcd.kill(0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    etcd.restart(0).await;
    let mut raw = etcd.raw_client().await;
    for i in 0..50 {
        last = raw
            .put(
                format!("/services/couchbase/{}", i % 5),
                format!("b{i}"),
                None,
            )
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
    }
    let want = format!("\"revision\":{last},");
    w.wait_stdout(Duration::from_secs(15), "the last revision", |l| {
        l.contains(&want)
    })
    .await;

    // Cut off while puts and deletes go on: all of them arrive once it is back.
    proxy.cut();
    w.wait_stderr(Duration::from_secs(10), "the cut noticed", |l| {
        l.contains("watch disconnected")
    })
    .await;
    for i in 0..30 {
        let r = if i % 3 == 2 {
            raw.delete(format!("/services/couchbase/{}", i % 5), None)
                .await
                .unwrap()
                .header()
                .unwrap()
                .revision()
        } else {
            raw.put(
                format!("/services/couchbase/{}", i % 5),
                format!("c{i}"),
                None,
            )
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision()
        };
        // A delete of a key already gone writes no revision.
        last = last.max(r);
    }
    proxy.restore();
    let want = format!("\"revision\":{last},");
    w.wait_stdout(
        Duration::from_secs(15),
        "the last revision after the cut",
        |l| l.contains(&want),
    )
    .await;
    let revs: Vec<i64> = w.stdout_json()[1..]
        .iter()
        .map(|v| v["revision"].as_i64().unwrap())
        .collect();
    let expected: Vec<i64> = (2..=last).collect();
    assert_eq!(revs, expected, "every revision once, in order");
}

#[tokio::test(flavor = "multi_thread")]
async fn config_prints_json_and_drives_a_child_through_its_environment() {
    let etcd = Etcd::single().await;
    etcdctl(&etcd, &["put", "/config/web/port", "3000"]);
    etcdctl(&etcd, &["put", "/config/web/db/host", "db1"]);
    let p = Proc::spawn(discover(&etcd, &["config", "/config/web"]));
    p.wait_stdout(Duration::from_secs(10), "the config", |l| {
        l == r#"{"db":{"host":"db1"},"port":3000}"#
    })
    .await;
    etcdctl(&etcd, &["put", "/config/web/port", "3001"]);
    p.wait_stdout(Duration::from_secs(5), "the new config", |l| {
        l.contains("3001")
    })
    .await;
    drop(p);

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let script = dir.path().join("c.sh");
    std::fs::write(&script, "#!/bin/sh\ntrap 'exit 0' TERM\necho \"start PORT=$PORT DB_HOST=$DB_HOST\" >> \"$LOG\"\nwhile :; do sleep 0.05; done\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = discover(
        &etcd,
        &["config", "/config/web", "--exec", script.to_str().unwrap()],
    );
    cmd.env("LOG", &log);
    let _c = Proc::spawn(cmd);
    eventually(Duration::from_secs(10), "started with the config", || {
        (starts(&log) == vec!["start PORT=3001 DB_HOST=db1".to_owned()]).then_some(())
    })
    .await;
    etcdctl(&etcd, &["put", "/config/web/db/host", "db2"]);
    eventually(
        Duration::from_secs(5),
        "restarted with the new config",
        || {
            (starts(&log).last().map(String::as_str) == Some("start PORT=3001 DB_HOST=db2"))
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_usage_exits_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["get"], "PREFIX"),
        (&["get", "services/x"], "must start with '/'"),
        (&["get", "/a//b"], "empty segment"),
        (&["watch", "/x", "--exec"], "--exec needs a command"),
        (
            &["watch", "/x", "--exec", "/nonexistent/cmd"],
            "not an executable",
        ),
        (
            &["watch", "/x", "--exec", "no-such-command-anywhere"],
            "not an executable",
        ),
        (
            &[
                "watch",
                "/x",
                "--reload-signal",
                "SIGNOPE",
                "--exec",
                "true",
            ],
            "not a signal",
        ),
        (
            &["watch", "/x", "--reload-signal", "KILL", "--exec", "true"],
            "cannot be handled",
        ),
        (
            &["watch", "/x", "--wait", "2s:1s", "--exec", "true"],
            "shorter than MIN",
        ),
        (
            &["watch", "/x", "--wait", "soon", "--exec", "true"],
            "--wait",
        ),
        (
            &["watch", "/x", "--restart-on", "update", "--exec", "true"],
            "heartbeat",
        ),
        (
            &["watch", "/x", "--restart-on", "delete", "--exec", "true"],
            "must include set",
        ),
        (
            &["watch", "/x", "--env-name", "1BAD=/x", "--exec", "true"],
            "not a valid environment variable",
        ),
        (
            &["watch", "/x", "--env-name", "OK=/y", "--exec", "true"],
            "not one of the watched prefixes",
        ),
        (
            &[
                "watch",
                "/x",
                "--snapshot-file",
                "/nonexistent/dir/f.json",
                "--exec",
                "true",
            ],
            "does not exist",
        ),
        // clap's `requires`: "the following required arguments were not
        // provided: --exec", and a usage line with both flags.
        (
            &["watch", "/x", "--snapshot-file", "/tmp/f.json"],
            "not provided:\n  --exec",
        ),
        (
            &["watch", "/x", "--kill-signal", "QUIT"],
            "not provided:\n  --exec",
        ),
        (
            &["watch", "/x", "--kill-signal", "STOP", "--exec", "true"],
            "pauses a process",
        ),
        (
            &["config", "/c", "--env-name", "A=/c", "--exec", "true"],
            "--env-name applies to watch",
        ),
        (&["watch", "/x", "--actions", "sets"], "unknown action"),
        (&["watch", "/x", "--since-revision", "0"], "since-revision"),
        (
            &["watch", "/x", "--kill-timeout", "0", "--exec", "true"],
            "zero",
        ),
        (
            &["watch", "/a-b", "/a/b", "--exec", "true"],
            "would both be passed as A_B",
        ),
        (
            &["watch", "/path", "--exec", "true"],
            "name it with --env-name",
        ),
        (
            &[
                "watch",
                "/x",
                "--env-name",
                "LD_PRELOAD=/x",
                "--exec",
                "true",
            ],
            "would replace a variable",
        ),
        (
            &[
                "watch",
                "/x",
                "--env-name",
                "A=/x",
                "--env-name",
                "B=/x",
                "--exec",
                "true",
            ],
            "names /x twice",
        ),
        (
            &[
                "config",
                "/config/web",
                "--restart-on",
                "set",
                "--exec",
                "true",
            ],
            "--restart-on applies to watch",
        ),
        (&["get", "/x", "--endpoints", "http://h"], "no port"),
        (&["get", "/x", "--format", "yaml"], "yaml"),
    ];
    for (args, want) in cases {
        let mut c = Proc::command("discover");
        c.args(*args).env_remove("ETCDCTL_ENDPOINTS");
        let (code, _, err) = run(c);
        assert_eq!(code, 2, "{args:?} should exit 2: {err}");
        assert!(err.contains(want), "{args:?}: expected {want:?} in: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    println!("DISCOVER bad-usage cases: {}", cases.len());
    // An unreachable etcd is a runtime failure for a one-shot get: 1, naming the endpoint.
    let mut c = Proc::command("discover");
    c.args([
        "get",
        "/x",
        "--endpoints",
        "127.0.0.1:1",
        "--dial-timeout",
        "300ms",
        "--command-timeout",
        "1s",
    ]);
    let (code, _, err) = run(c);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("127.0.0.1:1"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backend_back_at_the_same_address_within_wait_costs_no_restart() {
    // `systemctl restart` of a sidekick: its SIGTERM revokes (a delete), the
    // new process registers again (a set of the same value). The web tier
    // must not restart for that; a real change still restarts it.
    let etcd = Etcd::single().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let script = child_script(dir.path(), "exit 0");
    let sk_args = [
        "--key",
        "/services/couchbase/1",
        "--ip",
        "10.1.1.2",
        "--ttl",
        "3",
    ];
    let mut sk = Proc::spawn(sidekick(&etcd, &sk_args));
    sk.wait_stderr(Duration::from_secs(10), "registered", |l| {
        l.contains("ready")
    })
    .await;
    let cmd = discover(
        &etcd,
        &[
            "watch",
            "/services/couchbase",
            "--wait",
            "1s:5s",
            "--exec",
            script.to_str().unwrap(),
        ],
    );
    let d = spawn_supervisor(cmd, &log).await;
    let raw = RawWatch::start(&etcd, "/services/couchbase/").await;

    sk.signal(Signal::SIGTERM);
    assert_eq!(sk.wait_exit(Duration::from_secs(2)).await.code(), Some(0));
    let sk2 = Proc::spawn(sidekick(&etcd, &sk_args));
    let deleted = raw
        .wait_for(Duration::from_secs(2), "the revoke", |e| !e.put)
        .await;
    raw.wait_for(Duration::from_secs(5), "the new registration", |e| {
        e.put && e.revision > deleted.revision
    })
    .await;
    // discover decides once the burst is quiet, and says so.
    d.wait_stderr(Duration::from_secs(8), "the decision", |l| {
        l.contains("what the child already has")
    })
    .await;
    assert_eq!(starts(&log).len(), 1, "no restart: {:?}", log_lines(&log));

    // A real change does restart it, with the new backends.
    etcdctl(&etcd, &["put", "/services/couchbase/2", "10.1.1.3"]);
    eventually(Duration::from_secs(8), "restart on a real change", || {
        (starts(&log).len() == 2).then_some(())
    })
    .await;
    assert!(
        starts(&log)[1].contains(" 10.1.1.2,10.1.1.3 "),
        "{:?}",
        starts(&log)
    );
    drop(sk2);
}

/// Without --exec there is nothing to reload: SIGHUP is logged and
/// ignored (its default action would end discover), the watch goes on, and
/// SIGTERM then stops it with 0.
#[tokio::test(flavor = "multi_thread")]
async fn watch_ignores_sighup_and_stops_on_sigterm() {
    let etcd = Etcd::single().await;
    let prefix = harness::unique_prefix("hup");
    let mut w = Proc::spawn(discover(&etcd, &["watch", &prefix]));
    w.wait_stdout(Duration::from_secs(10), "the get line", |l| {
        l.contains("\"get\"")
    })
    .await;
    for n in 1..=2 {
        w.signal(Signal::SIGHUP);
        w.wait_stderr_nth(Duration::from_secs(10), "the SIGHUP taken", n, |l| {
            l.contains("nothing to reload; ignored") && l.contains("SIGHUP")
        })
        .await;
    }
    etcdctl(&etcd, &["put", &format!("{prefix}/1"), "10.1.1.9"]);
    w.wait_stdout(Duration::from_secs(10), "the set after the SIGHUPs", |l| {
        l.contains("\"set\"") && l.contains("10.1.1.9")
    })
    .await;
    w.signal(Signal::SIGTERM);
    let status = w.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", w.dump());
    assert!(w.stderr().contains("stopping"), "{}", w.dump());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_before_the_first_listing_exits_0_without_a_child() {
    let mut etcd = Etcd::single().await;
    etcd.kill(0);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let script = child_script(dir.path(), "exit 0");
    let mut cmd = discover(
        &etcd,
        &[
            "watch",
            "/services/couchbase",
            "--exec",
            script.to_str().unwrap(),
        ],
    );
    cmd.env("LOG", &log);
    let mut d = Proc::spawn(cmd);
    d.wait_stderr(Duration::from_secs(10), "waiting for etcd", |l| {
        l.contains("not reachable")
    })
    .await;
    let t = Instant::now();
    d.signal(Signal::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(2)).await;
    assert_eq!(status.code(), Some(0), "{}", d.dump());
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(starts(&log).is_empty(), "no child was started");
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_child_backs_off_a_child_that_keeps_dying() {
    let etcd = Etcd::single().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut cmd = discover(
        &etcd,
        &[
            "watch",
            "/services/couchbase",
            "--restart-child",
            "--exec",
            "sh",
            "-c",
            "echo start >> \"$LOG\"; exit 3",
        ],
    );
    cmd.env("LOG", &log);
    let _d = Proc::spawn(cmd);
    eventually(Duration::from_secs(10), "first start", || {
        (!starts(&log).is_empty()).then_some(())
    })
    .await;
    // Delays of [0.2, 0.4), [0.4, 0.8), [0.8, 1.6), [1.6, 3.2) s: at most 5
    // starts in 3.5 s. A backoff that never grew would give 9 or more.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let n = starts(&log).len();
    assert!((3..=5).contains(&n), "{n} starts in 3.5 s");
}

/// A child (bash) that logs `sig NAME PID` for every signal discover
/// passes on, and exits 3 on SIGTERM. It logs `start PID` only once its
/// traps are set: a signal sent as soon as the test sees that line must
/// not meet bash's default action (which ends it).
fn signal_recorder(dir: &Path) -> PathBuf {
    let path = dir.join("signals.sh");
    std::fs::write(
        &path,
        "#!/bin/bash\n\
         for s in HUP QUIT USR1 USR2 WINCH ALRM PWR; do trap \"echo \\\"sig $s $$\\\" >> \\\"\\$LOG\\\"\" $s; done\n\
         trap 'echo \"sig TERM $$\" >> \"$LOG\"; exit 3' TERM\n\
         echo \"start $$\" >> \"$LOG\"\n\
         while :; do sleep 0.05; done\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_passes_signals_on_and_stops_the_child_with_kill_signal() {
    let etcd = Etcd::single().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let script = signal_recorder(dir.path());
    etcdctl(&etcd, &["put", "/services/signals/1", "10.1.9.1"]);
    let cmd = discover(
        &etcd,
        &[
            "watch",
            "/services/signals",
            "--kill-signal",
            "QUIT",
            "--kill-timeout",
            "3s",
            "--exec",
            script.to_str().unwrap(),
        ],
    );
    let mut p = spawn_supervisor(cmd, &log).await;
    let pid_of = |line: &str| line.rsplit(' ').next().unwrap().to_owned();
    let first = pid_of(&starts(&log)[0]);

    // A restart stops the child with --kill-signal (QUIT, which this one
    // only logs), then SIGKILL after --kill-timeout; never SIGTERM.
    etcdctl(&etcd, &["put", "/services/signals/2", "10.1.9.2"]);
    eventually(Duration::from_secs(20), "the restart", || {
        (starts(&log).len() == 2).then_some(())
    })
    .await;
    let lines = log_lines(&log);
    assert!(
        lines.contains(&format!("sig QUIT {first}")),
        "the old child got --kill-signal: {lines:?}"
    );
    assert!(
        !lines.contains(&format!("sig TERM {first}")),
        "and no SIGTERM: {lines:?}"
    );
    let second = pid_of(&starts(&log)[1]);

    // Every signal discover does not use itself goes to the child, and
    // discover lives on (a SIGUSR1 used to kill it).
    for (sig, name) in [
        (Signal::SIGUSR1, "USR1"),
        (Signal::SIGUSR2, "USR2"),
        (Signal::SIGHUP, "HUP"),
        (Signal::SIGQUIT, "QUIT"),
        (Signal::SIGWINCH, "WINCH"),
        (Signal::SIGALRM, "ALRM"),
        (Signal::SIGPWR, "PWR"),
    ] {
        p.signal(sig);
        let want = format!("sig {name} {second}");
        eventually(
            Duration::from_secs(10),
            format!("the child got {name}"),
            || log_lines(&log).contains(&want).then_some(()),
        )
        .await;
        assert!(
            p.try_exit().is_none(),
            "discover survived {name}\n{}",
            p.dump()
        );
    }
    assert_eq!(
        starts(&log).len(),
        2,
        "signals restart nothing: {:?}",
        log_lines(&log)
    );

    // SIGTERM is passed on as it is, and discover exits with the child's code.
    p.signal(Signal::SIGTERM);
    let status = p.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(3), "{}", p.dump());
    assert_eq!(log_lines(&log).last(), Some(&format!("sig TERM {second}")));
}
