//! `make demo` keeps working: the script narrates set, silent heartbeats,
//! a move (set with prevNode) and a stop (delete), then removes everything.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

#[test]
fn the_demo_narrates_the_main_job_and_cleans_up() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = Command::new(repo.join("examples/demo.sh"))
        .env("DEMO_NO_BUILD", "1")
        .env("DEMO_TTL", "3")
        .env_remove("DOCKER_HOST")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
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
    assert!(stdout.contains("removed"), "{stdout}");
    // Its container and networks are gone.
    let left = Command::new("docker")
        .args(["ps", "-aq", "--filter", "name=demo-"])
        .output()
        .unwrap();
    assert!(left.stdout.is_empty(), "containers left behind");
}
