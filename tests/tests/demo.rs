//! `make demo` keeps working: the script narrates set, silent heartbeats,
//! a move (set with prevNode) and a stop (delete), then removes everything.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// The demo's etcd ports, reserved by the harness (keep them while the
/// demo runs), as `DEMO_ETCD_PORTS` takes them.
fn etcd_ports() -> (Vec<harness::Port>, String) {
    let ports = harness::ports::reserve(2);
    let arg = format!("{},{}", ports[0], ports[1]);
    (ports, arg)
}

fn demo(etcd_ports: &str) -> Command {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut c = Command::new(repo.join("examples/demo.sh"));
    c.env("DEMO_NO_BUILD", "1")
        .env("DEMO_ETCD_PORTS", etcd_ports)
        .env_remove("DOCKER_HOST");
    c
}

/// What the demo said it used: its run name (`demo-PID`, the prefix of its
/// container and networks) and its temp dir.
fn run_and_work(stdout: &str) -> (String, PathBuf) {
    let run = stdout
        .split("Starting a container (")
        .nth(1)
        .and_then(|r| r.split("-web)").next())
        .expect("the demo names its container");
    let work = stdout
        .split("(data in ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .expect("the demo names its data dir");
    (run.to_owned(), PathBuf::from(work))
}

/// Nothing of that run is left: no process, container, network or directory.
fn assert_nothing_left(run: &str, work: &Path) {
    assert!(!work.exists(), "{} left behind", work.display());
    let mine = |pid: &str| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .ok()
            .filter(|c| c.contains(&*work.to_string_lossy()) || c.contains(run))
    };
    let procs: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|pid| mine(&pid).map(|c| format!("{pid}: {c}")))
        .collect();
    assert!(procs.is_empty(), "processes left behind: {procs:#?}");
    for what in [["ps", "-aq"], ["network", "ls"]] {
        let out = Command::new("docker")
            .args(what)
            .args(["-q", "--filter", &format!("name={run}-")])
            .output()
            .unwrap();
        assert!(
            out.stdout.is_empty(),
            "docker {what:?} left behind: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn the_demo_narrates_the_main_job_and_cleans_up() {
    let t = Instant::now();
    let (_reserved, ports) = etcd_ports();
    let out = demo(&ports).env("DEMO_TTL", "3").output().unwrap();
    let took = t.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(took < Duration::from_secs(90), "the demo took {took:?}");
    let (run, work) = run_and_work(&stdout);
    assert_nothing_left(&run, &work);
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("discover | "))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, vec!["get", "set", "set", "delete"], "{stdout}");
    assert!(
        events[1].get("prevNode").is_none(),
        "the registration is a new key"
    );
    let (first, moved) = (&events[1]["node"]["value"], &events[2]["node"]["value"]);
    assert_ne!(first, moved, "the move changed the address");
    assert_eq!(
        &events[2]["prevNode"]["value"], first,
        "the move is a set with prevNode"
    );
    // Nothing between the registration and the move: heartbeats are silent.
    let heartbeat = stdout.find("2. One TTL").unwrap();
    let move_step = stdout.find("3. The container moves").unwrap();
    assert!(
        !stdout[heartbeat..move_step].contains("discover |"),
        "{stdout}"
    );
    assert!(stdout.contains("demo: done;"), "{stdout}");
}

#[test]
fn ctrl_c_at_a_terminal_mid_demo_exits_0_and_leaves_nothing_behind() {
    // A real terminal: `script` runs the demo on a pseudo-terminal, and the
    // byte 0x03 written to it is Ctrl-C (the terminal sends SIGINT to its
    // foreground process group).
    use std::io::{BufRead, Write};
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    // `script -c` runs its command through $SHELL. `exec` makes the demo
    // that shell's process: otherwise a /bin/sh (dash) in between takes the
    // Ctrl-C too and exits 130 whatever the demo did. SHELL is pinned so
    // that this runs the same everywhere (CI has no login shell).
    let demo = repo.join("examples/demo.sh");
    let (_reserved, ports) = etcd_ports();
    let mut child = Command::new("script")
        .args(["-qfec"])
        .arg(format!("exec '{}'", demo.display()))
        .arg("/dev/null")
        .env("SHELL", "/bin/sh")
        .env("DEMO_NO_BUILD", "1")
        .env("DEMO_TTL", "20")
        .env("DEMO_ETCD_PORTS", &ports)
        .env_remove("DOCKER_HOST")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(u32);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = killpg(Pid::from_raw(self.0 as i32), Signal::SIGKILL);
        }
    }
    let _guard = Kill(child.id());
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen.contains("2. One TTL") {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("the demo never reached its step 2:\n{seen}"));
        seen.push_str(&line);
        seen.push('\n');
    }
    let t = Instant::now();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&[0x03]).unwrap();
    stdin.flush().unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "still running 10 s after Ctrl-C:\n{seen}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = t.elapsed();
    drop(stdin);
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(2)) {
        seen.push_str(&line);
        seen.push('\n');
    }
    assert_eq!(status.code(), Some(0), "{seen}");
    assert!(seen.contains("demo: interrupted;"), "{seen}");
    // Not after its 20 s of heartbeats: at once.
    assert!(took < Duration::from_secs(5), "cleanup took {took:?}");
    println!("DEMO Ctrl-C at a terminal -> cleaned up and exited 0 in {took:?}");
    let (run, work) = run_and_work(&seen);
    assert_nothing_left(&run, &work);
}
