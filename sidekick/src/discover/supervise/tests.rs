//! The supervisor's decisions on tokio's paused clock, with a recording
//! `ChildOs` in place of processes (the end-to-end tests in
//! tests/tests/discover.rs run the real thing).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::time::Instant;

use super::input::{ChildInput, ExecOptions, Feed, Wait};
use super::machine::{HEALTHY_RUN, Supervisor};
use super::os::ChildOs;
use super::state::Flow;
use crate::common::metrics::Metrics;

/// What the supervisor asked of the system, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    /// Started a child with these backends; it got this pid.
    Spawn(i32, String),
    /// Wrote the snapshot of these backends.
    Snapshot(String),
    /// Signalled this process group.
    Signal(i32, Signal),
}

#[derive(Default)]
struct Record {
    calls: Vec<Call>,
    next_pid: i32,
    fail_snapshot: bool,
}

/// A `ChildOs` that records calls; pids count up from 100.
#[derive(Clone, Default)]
struct FakeOs(Rc<RefCell<Record>>);

impl std::fmt::Debug for FakeOs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FakeOs")
    }
}

fn backends(input: &ChildInput) -> String {
    input.env[0].1.to_string_lossy().into_owned()
}

impl ChildOs for FakeOs {
    fn spawn(&mut self, input: &ChildInput) -> anyhow::Result<Pid> {
        let mut r = self.0.borrow_mut();
        let pid = 100 + r.next_pid;
        r.next_pid += 1;
        r.calls.push(Call::Spawn(pid, backends(input)));
        Ok(Pid::from_raw(pid))
    }
    fn write_snapshot(&mut self, input: &ChildInput) -> anyhow::Result<()> {
        let mut r = self.0.borrow_mut();
        if r.fail_snapshot {
            anyhow::bail!("disk full");
        }
        r.calls.push(Call::Snapshot(backends(input)));
        Ok(())
    }
    fn signal(&mut self, pid: Pid, sig: Signal) {
        self.0
            .borrow_mut()
            .calls
            .push(Call::Signal(pid.as_raw(), sig));
    }
}

impl FakeOs {
    /// The calls since the last look.
    fn take(&self) -> Vec<Call> {
        std::mem::take(&mut self.0.borrow_mut().calls)
    }
}

fn opts() -> ExecOptions {
    ExecOptions {
        argv: vec!["app".into()],
        kill_signal: Signal::SIGTERM,
        kill_timeout: Duration::from_secs(10),
        reload_signal: None,
        wait: None,
        splay: None,
        restart_child: false,
        snapshot_file: None,
    }
}

fn input(backends: &str, revision: i64) -> ChildInput {
    ChildInput {
        env: vec![
            ("SERVICES_X".into(), backends.into()),
            ("DISCOVER_REVISION".into(), revision.to_string().into()),
        ],
        snapshot: serde_json::Value::Null,
    }
}

fn set(backends: &str, revision: i64) -> Feed {
    Feed::Update {
        input: input(backends, revision),
        trigger: Some(format!("set at {revision}")),
    }
}

fn start(o: ExecOptions) -> (Supervisor<FakeOs>, FakeOs) {
    let os = FakeOs::default();
    let sup = Supervisor::start(
        o,
        input("a", 1),
        os.clone(),
        Arc::new(Metrics::with_prefix("test")),
    )
    .unwrap();
    assert_eq!(os.take(), vec![Call::Spawn(100, "a".into())]);
    (sup, os)
}

/// Let `d` pass, firing every deadline on the way as the event loop does.
async fn run_for(sup: &mut Supervisor<FakeOs>, d: Duration) {
    let end = Instant::now() + d;
    while let Some(t) = sup.next_deadline().filter(|t| *t <= end) {
        tokio::time::sleep_until(t).await;
        assert!(matches!(sup.on_timer(), Flow::Continue));
    }
    tokio::time::sleep_until(end).await;
}

fn cont(f: Flow) {
    assert!(matches!(f, Flow::Continue), "{f:?}");
}

fn done(f: Flow) -> anyhow::Result<i32> {
    match f {
        Flow::Done(r) => r,
        Flow::Continue => panic!("expected the supervisor to be done"),
    }
}

const MS: Duration = Duration::from_millis(1);

#[tokio::test(start_paused = true)]
async fn without_wait_a_set_restarts_at_once_with_the_newest_backends() {
    let (mut sup, os) = start(opts());
    cont(sup.on_feed(set("a,b", 2)));
    run_for(&mut sup, Duration::ZERO).await;
    assert_eq!(os.take(), vec![Call::Signal(100, Signal::SIGTERM)]);
    // A change while the child stops: the new child gets it.
    cont(sup.on_feed(set("a,b,c", 3)));
    cont(sup.on_child_exit(Pid::from_raw(100), 0));
    assert_eq!(
        os.take(),
        vec![
            Call::Signal(100, Signal::SIGKILL), // stragglers in the group
            Call::Spawn(101, "a,b,c".into())
        ]
    );
    run_for(&mut sup, Duration::from_secs(60)).await;
    assert_eq!(os.take(), vec![], "nothing left pending");
}

#[tokio::test(start_paused = true)]
async fn wait_min_ends_a_quiet_burst_and_max_caps_a_steady_one() {
    let wait = Wait {
        min: Duration::from_millis(200),
        max: Duration::from_secs(2),
    };
    let (mut sup, os) = start(ExecOptions {
        wait: Some(wait),
        ..opts()
    });
    // A burst of three within 100 ms, then quiet: one restart, 200 ms
    // after the last change.
    for (i, b) in ["a,b", "a,b,c", "a,b,c,d"].iter().enumerate() {
        cont(sup.on_feed(set(b, 2 + i as i64)));
        run_for(&mut sup, Duration::from_millis(50)).await;
    }
    // 150 ms since the first change; the last came 50 ms ago.
    run_for(&mut sup, Duration::from_millis(149)).await;
    assert_eq!(os.take(), vec![], "not before MIN of quiet");
    run_for(&mut sup, MS).await;
    assert_eq!(os.take(), vec![Call::Signal(100, Signal::SIGTERM)]);
    cont(sup.on_child_exit(Pid::from_raw(100), 0));
    assert_eq!(os.take()[1], Call::Spawn(101, "a,b,c,d".into()));

    // A change every 100 ms for 5 s never leaves 200 ms of quiet: MAX (2 s
    // after the first) cuts in, once.
    let t0 = Instant::now();
    for i in 0..50 {
        cont(sup.on_feed(set(&format!("n{i}"), 10 + i)));
        run_for(&mut sup, Duration::from_millis(100)).await;
        if !os.0.borrow().calls.is_empty() {
            break;
        }
    }
    assert_eq!(os.take(), vec![Call::Signal(101, Signal::SIGTERM)]);
    assert_eq!(
        t0.elapsed(),
        wait.max,
        "acted at MAX after the first change"
    );
}

#[tokio::test(start_paused = true)]
async fn splay_delays_each_restart_by_its_own_draw() {
    let splay = Duration::from_secs(30);
    let (mut sup, os) = start(ExecOptions {
        splay: Some(splay),
        ..opts()
    });
    sup.rng = fastrand::Rng::with_seed(7);
    let draw = splay.mul_f64(sup.rng.clone().f64());
    assert!(draw > Duration::ZERO && draw < splay, "{draw:?}");
    cont(sup.on_feed(set("a,b", 2)));
    // A second change of the same burst does not draw again.
    cont(sup.on_feed(set("a,b,c", 3)));
    run_for(&mut sup, draw - MS).await;
    assert_eq!(os.take(), vec![], "not before the splay");
    run_for(&mut sup, MS).await;
    assert_eq!(os.take(), vec![Call::Signal(100, Signal::SIGTERM)]);
}

#[tokio::test(start_paused = true)]
async fn kill_timeout_escalates_to_sigkill_after_the_kill_signal() {
    let (mut sup, os) = start(ExecOptions {
        kill_signal: Signal::SIGQUIT,
        kill_timeout: Duration::from_secs(3),
        ..opts()
    });
    cont(sup.on_feed(set("a,b", 2)));
    run_for(&mut sup, Duration::ZERO).await;
    assert_eq!(os.take(), vec![Call::Signal(100, Signal::SIGQUIT)]);
    run_for(&mut sup, Duration::from_secs(3) - MS).await;
    assert_eq!(os.take(), vec![], "the child gets its kill timeout");
    run_for(&mut sup, MS).await;
    assert_eq!(os.take(), vec![Call::Signal(100, Signal::SIGKILL)]);
    // Nothing more to escalate to: no further deadline until it exits.
    assert_eq!(sup.next_deadline(), None);
    cont(sup.on_child_exit(Pid::from_raw(100), 137));
    assert_eq!(os.take()[1], Call::Spawn(101, "a,b".into()));
}

#[tokio::test(start_paused = true)]
async fn restart_child_backs_off_and_a_healthy_run_resets_it() {
    let (mut sup, os) = start(ExecOptions {
        restart_child: true,
        ..opts()
    });
    let mut pid = 100;
    let mut delays = Vec::new();
    for _ in 0..7 {
        cont(sup.on_child_exit(Pid::from_raw(pid), 3));
        let t = Instant::now();
        let at = sup.next_deadline().expect("a respawn is due");
        run_for(&mut sup, at - t).await;
        delays.push(t.elapsed());
        pid += 1;
        let calls = os.take();
        assert_eq!(
            calls.last(),
            Some(&Call::Spawn(pid, "a".into())),
            "{calls:?}"
        );
    }
    // 200 ms doubling to 10 s, each stretched by up to 2x.
    for (d, base) in delays
        .iter()
        .zip([200u64, 400, 800, 1600, 3200, 6400, 10_000])
    {
        let base = Duration::from_millis(base);
        assert!(
            *d >= base && *d <= base * 2,
            "{d:?} for {base:?}: {delays:?}"
        );
    }
    // A child that ran HEALTHY_RUN before dying starts the backoff afresh.
    run_for(&mut sup, HEALTHY_RUN).await;
    cont(sup.on_child_exit(Pid::from_raw(pid), 3));
    let d = sup.next_deadline().unwrap() - Instant::now();
    assert!(
        d >= Duration::from_millis(200) && d <= Duration::from_millis(400),
        "{d:?}"
    );
    // A stop request while it waits to respawn: nothing to stop, exit 0.
    assert_eq!(done(sup.on_signal(Signal::SIGTERM)).unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_child_that_exits_by_itself_ends_discover_with_its_code() {
    let (mut sup, os) = start(opts());
    // An orphan of the child, reaped by the subreaper: not ours.
    cont(sup.on_child_exit(Pid::from_raw(4242), 0));
    assert_eq!(os.take(), vec![]);
    assert_eq!(done(sup.on_child_exit(Pid::from_raw(100), 7)).unwrap(), 7);
}

#[tokio::test(start_paused = true)]
async fn signals_are_passed_on_and_the_reload_signal_refreshes_the_snapshot_first() {
    let (mut sup, os) = start(ExecOptions {
        reload_signal: Some(Signal::SIGUSR1),
        ..opts()
    });
    for sig in [
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
    ] {
        cont(sup.on_signal(sig));
        assert_eq!(os.take(), vec![Call::Signal(100, sig)]);
    }
    // The reload signal, sent by hand after an untriggered change (a delete
    // under --restart-on set): the snapshot is written first, and the
    // child counts as having the new backends.
    cont(sup.on_feed(Feed::Update {
        input: input("b", 2),
        trigger: None,
    }));
    cont(sup.on_signal(Signal::SIGUSR1));
    assert_eq!(
        os.take(),
        vec![
            Call::Snapshot("b".into()),
            Call::Signal(100, Signal::SIGUSR1)
        ]
    );
    cont(sup.on_feed(set("b", 3)));
    run_for(&mut sup, Duration::from_secs(1)).await;
    assert_eq!(os.take(), vec![], "it already has b");
    // A change: a reload, not a restart.
    cont(sup.on_feed(set("b,c", 4)));
    run_for(&mut sup, Duration::ZERO).await;
    assert_eq!(
        os.take(),
        vec![
            Call::Snapshot("b,c".into()),
            Call::Signal(100, Signal::SIGUSR1)
        ]
    );
    // A snapshot that cannot be written stops the child; discover fails.
    os.0.borrow_mut().fail_snapshot = true;
    cont(sup.on_feed(set("c", 5)));
    run_for(&mut sup, Duration::ZERO).await;
    assert_eq!(os.take(), vec![Call::Signal(100, Signal::SIGTERM)]);
    let e = done(sup.on_child_exit(Pid::from_raw(100), 0)).unwrap_err();
    assert!(e.to_string().contains("disk full"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn sigterm_is_passed_on_and_a_second_one_kills_now() {
    let (mut sup, os) = start(ExecOptions {
        kill_signal: Signal::SIGQUIT,
        ..opts()
    });
    cont(sup.on_signal(Signal::SIGTERM));
    // Passed on as it came (not the --kill-signal).
    assert_eq!(os.take(), vec![Call::Signal(100, Signal::SIGTERM)]);
    run_for(&mut sup, Duration::from_secs(1)).await;
    cont(sup.on_signal(Signal::SIGINT));
    assert_eq!(os.take(), vec![Call::Signal(100, Signal::SIGKILL)]);
    assert_eq!(sup.next_deadline(), None);
    assert_eq!(
        done(sup.on_child_exit(Pid::from_raw(100), 137)).unwrap(),
        137
    );
}

#[tokio::test(start_paused = true)]
async fn a_stop_request_during_a_restart_becomes_an_exit() {
    let (mut sup, os) = start(opts());
    cont(sup.on_feed(set("a,b", 2)));
    run_for(&mut sup, Duration::ZERO).await;
    assert_eq!(os.take(), vec![Call::Signal(100, Signal::SIGTERM)]);
    cont(sup.on_signal(Signal::SIGINT));
    assert_eq!(os.take(), vec![Call::Signal(100, Signal::SIGINT)]);
    // A child ignoring both is killed after the kill timeout, counted from
    // the stop request; then discover exits with its code, no restart.
    run_for(&mut sup, Duration::from_secs(10)).await;
    assert_eq!(os.take(), vec![Call::Signal(100, Signal::SIGKILL)]);
    assert_eq!(
        done(sup.on_child_exit(Pid::from_raw(100), 137)).unwrap(),
        137
    );
    assert_eq!(
        os.take(),
        vec![Call::Signal(100, Signal::SIGKILL)],
        "no spawn"
    );
}

#[tokio::test(start_paused = true)]
async fn the_same_backends_back_within_wait_cost_no_restart() {
    let (mut sup, os) = start(ExecOptions {
        wait: Some(Wait {
            min: Duration::from_secs(1),
            max: Duration::from_secs(5),
        }),
        ..opts()
    });
    // `systemctl restart` of a sidekick: a delete, then the same address.
    cont(sup.on_feed(Feed::Update {
        input: input("", 2),
        trigger: Some("delete".into()),
    }));
    run_for(&mut sup, Duration::from_millis(300)).await;
    cont(sup.on_feed(set("a", 3)));
    run_for(&mut sup, Duration::from_secs(10)).await;
    assert_eq!(os.take(), vec![], "a different revision, the same backends");
    // A real change restarts.
    cont(sup.on_feed(set("a,b", 4)));
    run_for(&mut sup, Duration::from_secs(1)).await;
    assert_eq!(os.take(), vec![Call::Signal(100, Signal::SIGTERM)]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_watch_stops_the_child_and_fails() {
    let (mut sup, os) = start(opts());
    cont(sup.on_feed(Feed::Failed(anyhow::anyhow!("watch gone"))));
    assert_eq!(os.take(), vec![Call::Signal(100, Signal::SIGTERM)]);
    let e = done(sup.on_child_exit(Pid::from_raw(100), 0)).unwrap_err();
    assert_eq!(e.to_string(), "watch gone");
}
