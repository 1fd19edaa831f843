//! Active health checks, against real containers of the test image
//! (busybox httpd serving `/cgi-bin/check`, steered through `/tmp/check`
//! with `docker exec`), a real etcd and the real binaries: a dead server is
//! withdrawn after `fall` criticals and comes back after `rise` passes; a
//! 429 warns and stays; a slow answer is critical; flapping changes
//! nothing; docker-exec reads exit codes; 50 containers are checked spread
//! over the interval; tcp, exec and registrator's check settings each go
//! and come back with what they check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use harness::docker::{ContainerSpec, docker_cli, unique_name};
use harness::host_agent::{Fleet, Spec, converges, etcd_map, host_agent};
use harness::notify::NotifySocket;
use harness::proc::{Proc, sidekick};
use harness::{Docker, Etcd, RawWatch, eventually, eventually_async, unique_prefix};
use tokio::time::Instant;

/// The busiest a 2-core machine running six tests at once gets: the room
/// a wait needs beyond what it asserts.
const SETTLE: Duration = Duration::from_secs(30);

async fn scrape(addr: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.ok()?;
    Some(buf)
}

/// `docker exec NAME sh -c SCRIPT`.
fn exec(name: &str, script: &str) {
    docker_cli(&["exec", name, "sh", "-c", script]);
}

/// A labelled container serving HTTP on port 80.
fn http(suffix: &str) -> Spec {
    let mut s = Spec::new(suffix);
    s.args.push("http:80".into());
    s.expose.push(80);
    s
}

/// Wait for an event matching `pred`; on a timeout, panic with what the
/// watch saw and `p`'s command and output.
async fn event(
    watch: &RawWatch,
    p: &Proc,
    what: &str,
    pred: impl Fn(&harness::RawEvent) -> bool,
) -> harness::RawEvent {
    let deadline = Instant::now() + SETTLE;
    loop {
        if let Some(e) = watch.events().into_iter().find(|e| pred(e)) {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "no event for {what} within {SETTLE:?}; saw {:?}\n{}",
            watch
                .events()
                .iter()
                .map(|e| (e.put, e.key.clone(), e.value_str()))
                .collect::<Vec<_>>(),
            p.dump()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The last STATUS= the agent sent.
fn status(notify: &NotifySocket) -> String {
    notify
        .lines()
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("STATUS=").map(str::to_owned))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_server_is_withdrawn_after_fall_criticals_and_back_after_rise_passes() {
    let etcd = Etcd::single().await;
    let docker = Docker::connect().await;
    let name = unique_name("chk-http");
    let c = docker.run(ContainerSpec::new(&name).http(80)).await;
    let ip = c.bridge_ip().await.unwrap();
    let key = format!("{}/web/1", unique_prefix("chk"));
    let (interval, timeout, fall, rise) = (Duration::from_secs(1), Duration::from_secs(1), 2, 2);
    // Reserved by the harness until the test ends, so no other test's
    // server takes it before the sidekick binds it.
    let metrics_port = harness::Port::reserve();
    let metrics = metrics_port.addr();
    let notify = NotifySocket::new();
    let mut cmd = sidekick(
        &etcd,
        &[
            "--key",
            &key,
            "--container",
            &name,
            "--port",
            "80",
            "--check",
            "http:/cgi-bin/check",
            "--check-interval",
            "1s",
            "--check-fall",
            "2",
            "--check-rise",
            "2",
            "--metrics-addr",
            &metrics,
        ],
    );
    cmd.env("NOTIFY_SOCKET", notify.path());
    let p = Proc::spawn(cmd);
    let watch = RawWatch::start(&etcd, &key).await;
    // Registered at the first pass.
    event(&watch, &p, "registered at the first pass", |e| {
        e.put && e.value_str() == format!("{ip}:80")
    })
    .await;

    // The server dies: the key goes after `fall` criticals.
    exec(&name, "killall httpd");
    let killed = Instant::now();
    let gone = event(&watch, &p, "withdrawn after the server died", |e| !e.put).await;
    let took = gone.at - killed;
    let bound = interval * fall + timeout + Duration::from_secs(1);
    println!("CHECK server killed -> key gone {took:?} (bound {bound:?})");
    assert!(took <= bound, "{took:?} > {bound:?}\n{}", p.dump());
    eventually(
        Duration::from_secs(10),
        "STATUS= naming the failing container",
        || {
            let s = status(&notify);
            (s.contains(&name) && s.contains("check critical")).then_some(())
        },
    )
    .await;
    p.wait_stderr(Duration::from_secs(5), "the withdrawal logged", |l| {
        l.contains("check critical; withdrawn") && l.contains("fails=2")
    })
    .await;
    let text = eventually_async(Duration::from_secs(10), "the critical state in metrics", || async {
        scrape(&metrics)
            .await
            .filter(|t| t.contains(&format!("sidekick_check_state{{container=\"{name}\",key=\"{key}\",state=\"critical\"}} 1")))
    })
    .await;
    assert!(
        text.lines()
            .any(|l| l.starts_with("sidekick_check_results_total{outcome=\"critical\"}")),
        "{text}"
    );

    // Back up: registered again after `rise` passes.
    docker_cli(&["exec", "-d", &name, "httpd", "-f", "-p", "80", "-h", "/www"]);
    let started = Instant::now();
    let back = event(&watch, &p, "registered again", |e| e.put && e.at > gone.at).await;
    let took = back.at - started;
    let bound = interval * rise + timeout + Duration::from_secs(1);
    println!("CHECK server restarted -> key back {took:?} (bound {bound:?})");
    assert!(took <= bound, "{took:?} > {bound:?}\n{}", p.dump());
    assert_eq!(back.value_str(), format!("{ip}:80"));
    // The line is written before the put, but the reader of the pipe may
    // see it after the watch has seen the put: wait for it.
    p.wait_stderr(Duration::from_secs(5), "the rise logged", |l| {
        l.contains("check passes again; registering") && l.contains("rise=2")
    })
    .await;
    // Transitions are logged, not every result.
    let logged = p
        .stderr()
        .lines()
        .filter(|l| l.contains("check passes") || l.contains("check critical"))
        .count();
    assert_eq!(logged, 3, "{}", p.dump());
}

#[tokio::test(flavor = "multi_thread")]
async fn warnings_stay_slow_answers_are_critical_flapping_changes_nothing_and_docker_exec_reads_exit_codes()
 {
    let etcd = Etcd::single().await;
    let prefix = unique_prefix("chkhost");
    let fleet = Fleet::new("chkhost");
    let json = |s: Spec, check: &str| {
        s.label("discovery.key", &format!("{prefix}/%n"))
            .label("discovery.port", "80")
            .label("discovery.value", "json")
            .label("discovery.check", check)
    };
    let exit_code = "docker-exec:sh -c 'exit $(cat /tmp/code 2>/dev/null || echo 0)'";
    let specs = vec![
        json(http("warn"), "http:/cgi-bin/check").label("discovery.check-interval", "500ms"),
        json(http("slow"), "http:/cgi-bin/check")
            .label("discovery.check-interval", "1s")
            .label("discovery.check-timeout", "500ms")
            .label("discovery.check-fall", "2"),
        // 1 s, not less: the timeout is the interval, and a CGI answer
        // that a busy 2-core machine delays past it would be a real
        // critical next to the script's own failure.
        json(http("flap"), "http:/cgi-bin/check")
            .label("discovery.check-interval", "1s")
            .label("discovery.check-rise", "2")
            .label("discovery.check-fall", "2"),
        json(http("exec0"), exit_code).label("discovery.check-interval", "500ms"),
        json(http("exec1"), exit_code).label("discovery.check-interval", "500ms"),
        json(http("exec2"), exit_code).label("discovery.check-interval", "500ms"),
    ];
    fleet.start(specs).await;
    exec(&fleet.name("exec1"), "echo 1 > /tmp/code");
    exec(&fleet.name("exec2"), "echo 2 > /tmp/code");
    let notify = NotifySocket::new();
    let mut cmd = host_agent(&etcd, &fleet, &["--allow-prefix", &prefix]);
    cmd.env("NOTIFY_SOCKET", notify.path());
    let p = Proc::spawn(cmd);
    let running = fleet.running();
    let key = |s: &str| format!("{prefix}/{}", fleet.name(s));
    let value = |s: &str, status: &str| {
        let name = fleet.name(s);
        format!(
            r#"{{"ip":"{}","port":80,"container":"{name}","host":"{}","status":"{status}"}}"#,
            running[&name],
            nix::unistd::gethostname().unwrap().into_string().unwrap()
        )
    };
    // Every container but exec2 (exit 2: critical) is registered; exec1
    // (exit 1) with status warning.
    let want: BTreeMap<String, String> = [
        (key("warn"), value("warn", "passing")),
        (key("slow"), value("slow", "passing")),
        (key("flap"), value("flap", "passing")),
        (key("exec0"), value("exec0", "passing")),
        (key("exec1"), value("exec1", "warning")),
    ]
    .into();
    let mut have = BTreeMap::new();
    let deadline = Instant::now() + SETTLE;
    while have != want {
        assert!(
            Instant::now() < deadline,
            "etcd holds {have:#?}, not {want:#?}\n{}",
            p.dump()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        have = etcd_map(&etcd, &prefix).await;
    }
    eventually(
        Duration::from_secs(15),
        "STATUS= naming exec2 and exec1",
        || {
            let s = status(&notify);
            (s.contains("1 failing checks")
                && s.contains(&fleet.name("exec2"))
                && s.contains("exit code 2")
                && s.contains("1 warning")
                && s.contains(&fleet.name("exec1")))
            .then_some(())
        },
    )
    .await;

    let watch = RawWatch::start(&etcd, &prefix).await;
    // A 429 is a warning: still registered, the value says so.
    exec(&fleet.name("warn"), "echo 429 > /tmp/check");
    event(&watch, &p, "the warning in the value", |e| {
        e.put && e.key == key("warn") && e.value_str() == value("warn", "warning")
    })
    .await;
    // `discover ls` shows it.
    let out = std::process::Command::new(harness::bin_path("discover"))
        .args(["ls", &prefix])
        .env("ETCDCTL_ENDPOINTS", etcd.endpoints_arg())
        .output()
        .unwrap();
    let ls = String::from_utf8_lossy(&out.stdout);
    let row = |k: &str| {
        ls.lines()
            .find(|l| l.starts_with(k))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        ls.lines().next().unwrap_or_default().ends_with("CHECK"),
        "discover ls:\n{ls}"
    );
    assert!(
        row(&key("warn")).ends_with(" warning"),
        "discover ls:\n{ls}"
    );
    assert!(
        row(&key("exec0")).ends_with(" passing"),
        "discover ls:\n{ls}"
    );

    // A slow answer times out: critical, withdrawn after fall 2.
    exec(&fleet.name("slow"), "echo slow > /tmp/check");
    let t = Instant::now();
    let gone = event(&watch, &p, "the slow server withdrawn", |e| {
        !e.put && e.key == key("slow")
    })
    .await;
    let bound = Duration::from_secs(2) + Duration::from_millis(500) + Duration::from_secs(1);
    assert!(gone.at - t <= bound, "{:?} > {bound:?}", gone.at - t);
    p.wait_stderr(
        Duration::from_secs(5),
        "the slow server's withdrawal logged",
        |l| {
            l.contains("check critical; withdrawn")
                && l.contains(&fleet.name("slow"))
                && l.contains("no answer within 500ms")
        },
    )
    .await;

    // Flapping: every other check fails, rise 2 / fall 2: no transition
    // over 20 checks.
    let flap_key = key("flap");
    let checks_of_flap = || {
        p.stderr()
            .lines()
            .filter(|l| l.contains("check started") && l.contains(&flap_key))
            .count()
    };
    exec(&fleet.name("flap"), "echo flap > /tmp/check");
    let from = checks_of_flap();
    eventually(SETTLE, "20 checks of the flapping server", || {
        (checks_of_flap() >= from + 20).then_some(())
    })
    .await;
    let flapped: Vec<_> = watch
        .events()
        .into_iter()
        .filter(|e| e.key == flap_key)
        .collect();
    assert!(
        flapped.is_empty(),
        "flapping caused transitions: {flapped:#?}\n{}",
        p.stderr()
            .lines()
            .filter(|l| l.contains(&fleet.name("flap")) && !l.contains("check started"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        !p.stderr()
            .lines()
            .any(|l| l.contains(&fleet.name("flap")) && l.contains("check critical")),
        "{}",
        p.dump()
    );

    // docker-exec: exit 2 becomes 0, registered; 0 becomes 2, withdrawn
    // after fall (3 by default).
    exec(&fleet.name("exec2"), "echo 0 > /tmp/code");
    event(&watch, &p, "exec2 registered once it exits 0", |e| {
        e.put && e.key == key("exec2") && e.value_str() == value("exec2", "passing")
    })
    .await;
    exec(&fleet.name("exec0"), "echo 2 > /tmp/code");
    event(&watch, &p, "exec0 withdrawn once it exits 2", |e| {
        !e.put && e.key == key("exec0")
    })
    .await;
}

/// tcp and exec checks, and registrator's `SERVICE_CHECK_HTTP` and
/// `SERVICE_CHECK_TCP`, under `--all`: each registers at its first pass,
/// is withdrawn when what it checks goes, and comes back with it.
#[tokio::test(flavor = "multi_thread")]
async fn tcp_exec_and_registrators_check_settings_withdraw_and_register_again() {
    let etcd = Etcd::single().await;
    let prefix = unique_prefix("chkkinds");
    let fleet = Fleet::new("chkkinds");
    let flags = tempfile::tempdir().unwrap();
    let flag = flags.path().join("up");
    std::fs::write(&flag, "").unwrap();
    // Run by no shell, split as one: the address is in the environment.
    // Exit 2, not test's 1: 1 is a warning, which stays registered.
    let exec_check = format!(
        "exec:sh -c 'test -e {} && test \"$DISCOVERY_PORT\" = 80 || exit 2'",
        flag.display()
    );
    let fast = |s: Spec| {
        s.label("discovery.port", "80")
            .label("discovery.check-interval", "500ms")
            .label("discovery.check-fall", "2")
    };
    let specs = vec![
        fast(http("tcp"))
            .label("discovery.key", &format!("{prefix}/tcp/%n"))
            .label("discovery.check", "tcp"),
        fast(http("exec"))
            .label("discovery.key", &format!("{prefix}/exec/%n"))
            .label("discovery.check", &exec_check),
        http("reghttp")
            .label("SERVICE_NAME", "reghttp")
            .label("SERVICE_CHECK_HTTP", "/index.html")
            .label("SERVICE_CHECK_INTERVAL", "500ms"),
        Spec::new("regtcp")
            .tcp(80)
            .label("SERVICE_NAME", "regtcp")
            .label("SERVICE_CHECK_TCP", "true")
            .label("SERVICE_CHECK_INTERVAL", "500ms"),
    ];
    fleet.start(specs).await;
    let p = Proc::spawn(host_agent(
        &etcd,
        &fleet,
        &["--prefix", &prefix, "--allow-exec-checks"],
    ));
    let running = fleet.running();
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let all: BTreeMap<String, String> = [
        ("tcp", format!("{prefix}/tcp/{}", fleet.name("tcp"))),
        ("exec", format!("{prefix}/exec/{}", fleet.name("exec"))),
        (
            "reghttp",
            format!("{prefix}/reghttp/{host}:{}:80", fleet.name("reghttp")),
        ),
        (
            "regtcp",
            format!("{prefix}/regtcp/{host}:{}:80", fleet.name("regtcp")),
        ),
    ]
    .into_iter()
    .map(|(s, k)| (k, format!("{}:80", running[&fleet.name(s)])))
    .collect();
    converges(&etcd, &prefix, SETTLE, || all.clone(), || p.dump()).await;

    // What each checks goes: every key is withdrawn.
    exec(&fleet.name("tcp"), "killall httpd");
    std::fs::remove_file(&flag).unwrap();
    exec(&fleet.name("reghttp"), "killall httpd");
    exec(&fleet.name("regtcp"), "killall nc");
    converges(&etcd, &prefix, SETTLE, BTreeMap::new, || p.dump()).await;
    for name in ["tcp", "exec", "reghttp", "regtcp"] {
        let name = fleet.name(name);
        p.wait_stderr(SETTLE, "the withdrawal logged", |l| {
            l.contains("check critical; withdrawn") && l.contains(&name)
        })
        .await;
    }

    // It comes back: every key is registered again.
    for name in ["tcp", "reghttp"] {
        docker_cli(&[
            "exec",
            "-d",
            &fleet.name(name),
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/www",
        ]);
    }
    docker_cli(&[
        "exec",
        "-d",
        &fleet.name("regtcp"),
        "nc",
        "-ll",
        "-p",
        "80",
        "-e",
        "/bin/tcp-reply",
    ]);
    std::fs::write(&flag, "").unwrap();
    converges(&etcd, &prefix, SETTLE, || all.clone(), || p.dump()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_containers_are_all_checked_spread_over_the_interval() {
    let etcd = Etcd::single().await;
    let prefix = unique_prefix("chk50");
    let fleet = Fleet::new("chk50");
    let specs = (0..50)
        .map(|i| {
            http(&format!("c{i}"))
                .label("discovery.key", &format!("{prefix}/%n"))
                .label("discovery.port", "80")
                .label("discovery.check", "http:/")
                .label("discovery.check-interval", "2s")
        })
        .collect();
    fleet.start(specs).await;
    let p = Proc::spawn(host_agent(&etcd, &fleet, &["--allow-prefix", &prefix]));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = etcd_map(&etcd, &prefix).await.len();
        if n == 50 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n} of 50 containers registered in 60 s\n{}",
            p.dump()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Three intervals of steady checks.
    let from = Instant::now();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let interval = Duration::from_secs(2);
    let mut by_key: HashMap<String, Vec<Instant>> = HashMap::new();
    for (at, line) in p.stderr_timed() {
        if at < from || !line.contains("check started") {
            continue;
        }
        if let Some(k) = line
            .split('"')
            .find(|s| s.starts_with(&format!("{prefix}/")))
        {
            by_key.entry(k.to_owned()).or_default().push(at);
        }
    }
    assert_eq!(
        by_key.len(),
        50,
        "not every container was checked\n{}",
        p.dump()
    );
    let fewest = by_key.values().map(Vec::len).min().unwrap();
    assert!(
        fewest >= 2,
        "a container was checked {fewest} times in 3 intervals"
    );
    // Where in the interval each check started: spread, not a burst.
    let mut tenths = [0usize; 10];
    let mut total = 0;
    for at in by_key.values().flatten() {
        let phase = (*at - from).as_nanos() % interval.as_nanos();
        tenths[(phase * 10 / interval.as_nanos()) as usize] += 1;
        total += 1;
    }
    println!("CHECK 50 containers: checks per tenth of the 2 s interval: {tenths:?}");
    let busiest = *tenths.iter().max().unwrap();
    assert!(
        busiest * 10 <= total * 4 && tenths.iter().filter(|n| **n > 0).count() >= 6,
        "checks are not spread over the interval: {tenths:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn check_flags_and_labels_refuse_bad_input() {
    let etcd = Etcd::single().await;
    let run = |args: &[&str]| {
        let out = sidekick(&etcd, args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let one = ["--key", "/services/x/1", "--container", "x"];
    for (extra, why) in [
        (vec!["--check", "tcp"], "--check tcp needs --port"),
        (vec!["--check", "udp"], "is not a check"),
        (
            vec!["--check", "http:health", "--port", "80"],
            "must start with '/'",
        ),
        (
            vec!["--check", "tcp", "--port", "80", "--check-interval", "10ms"],
            "--check-interval: 10ms is too short",
        ),
        (
            vec![
                "--check",
                "tcp",
                "--port",
                "80",
                "--check-interval",
                "1s",
                "--check-timeout",
                "2s",
            ],
            "longer than the interval",
        ),
        (
            vec!["--check", "tcp", "--port", "80", "--check-fall", "0"],
            "--check-fall",
        ),
        (
            vec!["--check", "exec:/no/such/check"],
            "not an executable file",
        ),
        (vec!["--check-rise", "2"], "--check"),
        (vec!["--family", "5"], "--family"),
    ] {
        let args: Vec<&str> = one.iter().copied().chain(extra.iter().copied()).collect();
        let (code, err) = run(&args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(why), "{args:?}: {err}");
    }
    for (args, why) in [
        (vec!["--all", "--check", "tcp"], "apply to one container"),
        (vec!["--all", "--allow-prefix", "config"], "--allow-prefix"),
        (
            vec!["--key", "/s/1", "--ip", "10.0.0.1", "--family", "6"],
            "--family chooses",
        ),
        (
            vec![
                "--key", "/s/1", "--ip", "10.0.0.1", "--check", "tcp", "--port", "1",
            ],
            "--check needs --container",
        ),
        (
            vec!["--key", "/s/1", "--container", "x", "--allow-prefix", "/s"],
            "--all",
        ),
    ] {
        let (code, err) = run(&args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(why), "{args:?}: {err}");
    }
}
