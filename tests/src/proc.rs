//! Our binaries (and others) as real child processes, with their output
//! captured for assertions and failure reports.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::time::Instant;

/// The path of one of the workspace's binaries (`sidekick`, `discover`),
/// next to the test executable in `target/<profile>/`.
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test-binary>, or target/<profile>/<bench-binary>
    let mut dir = exe.parent().expect("target dir");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().expect("target dir");
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (cargo build --workspace)",
        path.display()
    );
    path
}

type Lines = Arc<Mutex<Vec<(Instant, String)>>>;

/// A running child process whose stdout lines and stderr are recorded.
/// Killed (with its descendants) on drop.
pub struct Proc {
    cmdline: String,
    child: Child,
    out: Lines,
    err: Lines,
    /// The threads reading stdout and stderr: finished once the pipes
    /// reach end of file (the child and any descendant holding them exited).
    readers: [std::thread::JoinHandle<()>; 2],
    status: Option<ExitStatus>,
}

impl Proc {
    /// A command for one of our binaries, logging at debug level for our crates.
    pub fn command(bin: &str) -> Command {
        let mut c = Command::new(bin_path(bin));
        c.env("RUST_LOG", "info,discovery=debug,sidekick=debug");
        c.env_remove("JOURNAL_STREAM");
        c
    }

    /// Start `cmd` with stdout and stderr captured.
    pub fn spawn(mut cmd: Command) -> Proc {
        let cmdline = format!("{cmd:?}");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmdline}: {e}"));
        let out: Lines = Arc::default();
        let err: Lines = Arc::default();
        let so = child.stdout.take().expect("stdout");
        let se = child.stderr.take().expect("stderr");
        let readers = [spawn_reader(so, out.clone()), spawn_reader(se, err.clone())];
        Proc {
            cmdline,
            child,
            out,
            err,
            readers,
            status: None,
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Send `sig` to the child.
    pub fn signal(&self, sig: Signal) {
        let _ = kill(Pid::from_raw(self.pid()), sig);
    }

    /// Stdout so far, line by line.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.out
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// Stdout lines with the time each was read.
    pub fn stdout_timed(&self) -> Vec<(Instant, String)> {
        self.out.lock().unwrap().clone()
    }

    /// Stdout parsed as JSON Lines (panics on a line that is not JSON).
    pub fn stdout_json(&self) -> Vec<serde_json::Value> {
        self.stdout_lines()
            .iter()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| {
                    panic!("stdout line is not JSON ({e}): {l}\n{}", self.dump())
                })
            })
            .collect()
    }

    /// Stderr lines with the time each was read.
    pub fn stderr_timed(&self) -> Vec<(Instant, String)> {
        self.err.lock().unwrap().clone()
    }

    /// Stderr so far.
    pub fn stderr(&self) -> String {
        let lines = self.err.lock().unwrap();
        let mut s = String::new();
        for (_, l) in lines.iter() {
            s.push_str(l);
            s.push('\n');
        }
        s
    }

    /// Wait until a stdout line satisfies `pred`; return it.
    pub async fn wait_stdout(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        self.wait_in(&self.out, timeout, what, 1, pred).await
    }

    /// Wait until a stderr line satisfies `pred`; return it.
    pub async fn wait_stderr(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        self.wait_in(&self.err, timeout, what, 1, pred).await
    }

    /// Wait until `n` stderr lines satisfy `pred` (a log line that comes
    /// once per round); return the `n`th. On timeout the panic carries the
    /// process's output, so a failure says what the process did instead.
    pub async fn wait_stderr_nth(
        &self,
        timeout: Duration,
        what: &str,
        n: usize,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        self.wait_in(&self.err, timeout, what, n, pred).await
    }

    /// How many stderr lines satisfy `pred` so far.
    pub fn stderr_count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.err
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, l)| pred(l))
            .count()
    }

    /// The first stdout line that satisfies `pred` within `timeout`, or
    /// `None`: for a caller that has more to say than [`Proc::dump`] when
    /// the line never comes.
    pub async fn stdout_within(
        &self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        Self::nth_within(&self.out, timeout, 1, pred).await
    }

    async fn wait_in(
        &self,
        lines: &Lines,
        timeout: Duration,
        what: &str,
        n: usize,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        Self::nth_within(lines, timeout, n, pred)
            .await
            .unwrap_or_else(|| {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\n{}",
                    self.dump()
                )
            })
    }

    async fn nth_within(
        lines: &Lines,
        timeout: Duration,
        n: usize,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((_, l)) = lines
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, l)| pred(l))
                .nth(n.saturating_sub(1))
            {
                return Some(l.clone());
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The exit status, if the child has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Wait for the child to exit (panics with a dump after `timeout`).
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit() {
                // Let the reader threads drain the pipes: until end of file,
                // which a busy machine may take a while to deliver (a fixed
                // 50 ms once lost the last line of an exit-2 message), or
                // 5 s if a descendant still holds them open.
                let drained = Instant::now() + Duration::from_secs(5);
                while !self.readers.iter().all(|r| r.is_finished()) && Instant::now() < drained {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                return s;
            }
            if Instant::now() > deadline {
                panic!("process did not exit within {timeout:?}\n{}", self.dump());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The command, its stdout and its stderr, for failure messages.
    pub fn dump(&self) -> String {
        format!(
            "--- command ---\n{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmdline,
            self.stdout_lines().join("\n"),
            self.stderr()
        )
    }
}

fn spawn_reader(r: impl Read + Send + 'static, lines: Lines) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\n', '\r'])
                        .to_owned();
                    lines.lock().unwrap().push((Instant::now(), line));
                }
            }
        }
    })
}

/// Every descendant of `pid` (children, grandchildren, ...), read from /proc.
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut parent_of = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Ok(p) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if let Some(pp) = parent_pid(p) {
                parent_of.push((p, pp));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(cur) = frontier.pop() {
        for (p, pp) in &parent_of {
            if *pp == cur && !out.contains(p) {
                out.push(*p);
                frontier.push(*p);
            }
        }
    }
    out
}

/// A process's parent pid, from /proc/PID/stat.
pub fn parent_pid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ..." where comm may contain spaces or parentheses.
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// A process's state letter from /proc (R, S, Z, T, ...).
pub fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.chars().next()
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.pid();
        let kids = descendants(pid);
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        for k in kids {
            let _ = kill(Pid::from_raw(k), Signal::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// Wait until process `pid` is gone (reaped). False if it is still there, or
/// a zombie nobody reaps, at the deadline.
pub async fn wait_pid_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if proc_state(pid).is_none() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proc_state(pid).is_none()
}

/// A `sidekick` command against `etcd` (endpoints through ETCDCTL_ENDPOINTS,
/// as a unit's EnvironmentFile would give them).
pub fn sidekick(etcd: &crate::etcd::EtcdCluster, args: &[&str]) -> Command {
    let mut c = Proc::command("sidekick");
    c.env("ETCDCTL_ENDPOINTS", etcd.endpoints_arg());
    // Nor the Docker CLI's other variables: a test sets what it tests.
    for v in [
        "DOCKER_HOST",
        "DOCKER_TLS_VERIFY",
        "DOCKER_TLS",
        "DOCKER_CERT_PATH",
        "DOCKER_API_VERSION",
    ] {
        c.env_remove(v);
    }
    c.args(args);
    c
}

/// A `discover` command against `etcd`.
pub fn discover(etcd: &crate::etcd::EtcdCluster, args: &[&str]) -> Command {
    let mut c = Proc::command("discover");
    c.env("ETCDCTL_ENDPOINTS", etcd.endpoints_arg());
    c.args(args);
    c
}
