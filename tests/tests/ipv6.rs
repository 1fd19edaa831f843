//! IPv6 addresses (`--family` and the label `discovery.family`), against a
//! real dual-stack Docker network (`docker network create --ipv6`) and a
//! real etcd: each family mode writes exactly the expected keys and values
//! (`[IPv6]:PORT`, the `-v6` second key, the JSON list), in both modes.
//!
//! An IPv6-only network comes from Podman (a real `podman system service`
//! serving the Docker API): Docker 20.10, this machine's engine, has no
//! `--ipv4=false` (it arrived in Docker 27) and gives every network an IPv4
//! subnet, while `podman network create --subnet fd00:…/64` makes a network
//! with no IPv4 at all.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use harness::docker::{docker_cli, unique_name};
use harness::host_agent::{Fleet, converges, host_agent};
use harness::podman::Podman;
use harness::proc::{Proc, sidekick};
use harness::{Docker, Etcd, unique_prefix};

const SETTLE: Duration = Duration::from_secs(30);

/// A dual-stack network, removed (with its containers) on drop.
struct Net {
    name: String,
    containers: Vec<String>,
}

impl Net {
    fn dual_stack(base: &str) -> Self {
        let name = format!("{base}-{:06x}", fastrand::u32(..0xff_ffff));
        // A /64 of its own, from the unique name, so parallel runs differ.
        let sub = fastrand::u16(1..0xffff);
        docker_cli(&[
            "network",
            "create",
            "--ipv6",
            "--subnet",
            &format!("fd00:d15c:{sub:x}::/64"),
            &name,
        ]);
        Self {
            name,
            containers: Vec::new(),
        }
    }

    /// Run a container on it with `labels`; its IPv4 and IPv6 addresses.
    fn run(&mut self, name: &str, labels: &[(&str, &str)]) -> (String, String) {
        let mut args = vec![
            "run".to_owned(),
            "-d".into(),
            "--name".into(),
            name.into(),
            "--network".into(),
            self.name.clone(),
            "--label".into(),
            format!("{}=1", harness::docker::TEST_LABEL),
        ];
        for (k, v) in labels {
            args.push("--label".into());
            args.push(format!("{k}={v}"));
        }
        args.push(format!(
            "{}:{}",
            harness::TEST_IMAGE.0,
            harness::TEST_IMAGE.1
        ));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker_cli(&args);
        self.containers.push(name.to_owned());
        let f = format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}} {{{{(index .NetworkSettings.Networks \"{}\").GlobalIPv6Address}}}}",
            self.name, self.name
        );
        let out = docker_cli(&["inspect", "-f", &f, name]);
        let (v4, v6) = out.trim().split_once(' ').unwrap();
        assert!(!v4.is_empty() && !v6.is_empty(), "{name}: {out}");
        (v4.to_owned(), v6.to_owned())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = Command::new("docker").args(["rm", "-f", c]).output();
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &self.name])
            .output();
    }
}

fn host() -> String {
    nix::unistd::gethostname().unwrap().into_string().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_family_mode_on_a_dual_stack_network_in_both_modes() {
    let etcd = Etcd::single().await;
    let prefix = unique_prefix("v6");
    let mut net = Net::dual_stack("v6net");
    let fleet = Fleet::new("v6");
    let only = fleet.only_label();
    let (only_k, only_v) = only.split_once('=').unwrap();
    let host = host();

    // --all: one container per family mode and value format.
    let key = format!("{prefix}/all/%n");
    let net_name = net.name.clone();
    let mut want = BTreeMap::new();
    let mut run = |suffix: &str, labels: &[(&str, &str)]| {
        let name = fleet.name(suffix);
        let mut l = vec![
            (only_k, only_v),
            ("discovery.key", key.as_str()),
            ("discovery.network", net_name.as_str()),
            ("discovery.port", "80"),
        ];
        l.extend_from_slice(labels);
        let (v4, v6) = net.run(&name, &l);
        (format!("{prefix}/all/{name}"), name, v4, v6)
    };
    let (k, _, v4, _) = run("default", &[]);
    want.insert(k, format!("{v4}:80"));
    let (k, _, v4, _) = run("four", &[("discovery.family", "4")]);
    want.insert(k, format!("{v4}:80"));
    let (k, _, _, v6) = run("six", &[("discovery.family", "6")]);
    want.insert(k, format!("[{v6}]:80"));
    let (k, _, _, v6) = run(
        "sixip",
        &[("discovery.family", "6"), ("discovery.value", "ip")],
    );
    want.insert(k, v6.clone());
    let (k, _, v4, v6) = run("both", &[("discovery.family", "both")]);
    want.insert(format!("{k}-v6"), format!("[{v6}]:80"));
    want.insert(k, format!("{v4}:80"));
    let (k, n, v4, v6) = run(
        "bothjson",
        &[("discovery.family", "both"), ("discovery.value", "json")],
    );
    want.insert(
        k,
        format!(
            r#"[{{"ip":"{v4}","port":80,"container":"{n}","host":"{host}"}},{{"ip":"{v6}","port":80,"container":"{n}","host":"{host}"}}]"#
        ),
    );
    let p = Proc::spawn(host_agent(&etcd, &fleet, &["--allow-prefix", &prefix]));
    let all = format!("{prefix}/all/");
    converges(&etcd, &all, SETTLE, || want.clone(), || p.dump()).await;

    // One container per sidekick: the same modes through --family.
    let name = fleet.name("one");
    let (v4, v6) = net.run(&name, &[]);
    let one = format!("{prefix}/one");
    let mut procs = Vec::new();
    let mut want = BTreeMap::new();
    for (sub, extra, expect) in [
        ("default", vec![], vec![("", format!("{v4}:80"))]),
        (
            "four",
            vec!["--family", "4"],
            vec![("", format!("{v4}:80"))],
        ),
        (
            "six",
            vec!["--family", "6"],
            vec![("", format!("[{v6}]:80"))],
        ),
        (
            "both",
            vec!["--family", "both"],
            vec![("", format!("{v4}:80")), ("-v6", format!("[{v6}]:80"))],
        ),
        (
            "json",
            vec!["--family", "both", "--json-value"],
            vec![(
                "",
                format!(
                    r#"[{{"ip":"{v4}","port":80,"container":"{name}","host":"{host}"}},{{"ip":"{v6}","port":80,"container":"{name}","host":"{host}"}}]"#
                ),
            )],
        ),
    ] {
        let key = format!("{one}/{sub}");
        let mut args = vec![
            "--key",
            key.as_str(),
            "--container",
            name.as_str(),
            "--network",
            net.name.as_str(),
            "--port",
            "80",
        ];
        args.extend(extra);
        procs.push(Proc::spawn(sidekick(&etcd, &args)));
        for (suffix, v) in expect {
            want.insert(format!("{key}{suffix}"), v);
        }
    }
    let dump = || procs.iter().map(Proc::dump).collect::<Vec<_>>().join("\n");
    converges(&etcd, &one, SETTLE, || want.clone(), dump).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn family_6_on_an_ipv4_only_network_is_a_clear_problem() {
    let etcd = Etcd::single().await;
    let prefix = unique_prefix("v6bad");
    let fleet = Fleet::new("v6bad");
    fleet
        .start(vec![
            harness::host_agent::Spec::new("c")
                .label("discovery.key", &format!("{prefix}/%n"))
                .label("discovery.family", "6"),
        ])
        .await;
    let p = Proc::spawn(host_agent(&etcd, &fleet, &["--allow-prefix", &prefix]));
    let name = fleet.name("c");
    harness::eventually(SETTLE, "the problem logged", || {
        p.stderr()
            .lines()
            .any(|l| {
                l.contains(&format!("container={name}"))
                    && l.contains("has no IPv6 address on network \"bridge\"")
                    && l.contains("--ipv6")
            })
            .then_some(())
    })
    .await;
    converges(&etcd, &prefix, SETTLE, BTreeMap::new, || p.dump()).await;
}

/// On an IPv6-only network (Podman's), the default registers the IPv6
/// address instead of refusing; `6` and `both` write it in each format;
/// `4` is a problem that names the fix. In both modes, with exact values.
#[tokio::test(flavor = "multi_thread")]
async fn every_family_mode_on_an_ipv6_only_podman_network_in_both_modes() {
    let etcd = Etcd::single().await;
    // The image is built for Docker first, then loaded into podman.
    Docker::connect().await;
    let podman = Podman::start().await;
    let net = podman.ipv6_only_network("v6only");
    let prefix = unique_prefix("v6only");
    let host = host();
    // This test's own opt-in label, so agents of parallel tests never meet.
    let only = format!("dt-v6only-{:06x}", fastrand::u32(..0xff_ffff));
    let key = format!("{prefix}/all/%n");
    let run = |base: &str, labels: &[(&str, &str)]| {
        let mut options = vec![
            "--network".to_owned(),
            net.name().to_owned(),
            "--label".into(),
            format!("{only}=1"),
            "--label".into(),
            format!("discovery.key={key}"),
            "--label".into(),
            format!("discovery.network={}", net.name()),
            "--label".into(),
            "discovery.port=80".into(),
        ];
        for (k, v) in labels {
            options.push("--label".into());
            options.push(format!("{k}={v}"));
        }
        let options: Vec<&str> = options.iter().map(String::as_str).collect();
        let c = podman.run_with(&unique_name(base), &options, &["tcp:80"]);
        let (v4, v6) = c.addrs_on(net.name());
        assert!(
            v4.is_empty() && !v6.is_empty(),
            "{}: {v4:?} {v6:?}",
            c.name()
        );
        let k = format!("{prefix}/all/{}", c.name());
        (c, k, v6)
    };
    let mut want = BTreeMap::new();
    let (c_default, k, v6) = run("v6-default", &[]);
    want.insert(k, format!("[{v6}]:80"));
    let (c_six, k, v6) = run(
        "v6-sixip",
        &[("discovery.family", "6"), ("discovery.value", "ip")],
    );
    want.insert(k, v6);
    let (c_both, k, v6) = run("v6-both", &[("discovery.family", "both")]);
    want.insert(format!("{k}-v6"), format!("[{v6}]:80"));
    let (c_json, k, v6) = run(
        "v6-json",
        &[("discovery.family", "both"), ("discovery.value", "json")],
    );
    want.insert(
        k,
        format!(
            r#"[{{"ip":"{v6}","port":80,"container":"{}","host":"{host}"}}]"#,
            c_json.name()
        ),
    );
    let (c_four, _, _) = run("v6-four", &[("discovery.family", "4")]);
    let mut cmd = sidekick(
        &etcd,
        &[
            "--all",
            "--only-label",
            &format!("{only}=1"),
            "--allow-prefix",
            &prefix,
        ],
    );
    cmd.env("DOCKER_HOST", podman.docker_host());
    let p = Proc::spawn(cmd);
    let all = format!("{prefix}/all/");
    converges(&etcd, &all, SETTLE, || want.clone(), || p.dump()).await;
    p.wait_stderr(SETTLE, "family 4 on an IPv6-only network reported", |l| {
        l.contains(c_four.name())
            && l.contains("has only an IPv6 address")
            && l.contains("family 6 or both")
    })
    .await;
    drop((c_default, c_six, c_both));

    // One container per sidekick: the default and both through --family.
    let c = podman.run_with(
        &unique_name("v6-one"),
        &["--network", net.name()],
        &["tcp:80"],
    );
    let (_, v6) = c.addrs_on(net.name());
    let one = format!("{prefix}/one");
    let mut procs = Vec::new();
    let mut want = BTreeMap::new();
    for (sub, extra, suffix, value) in [
        ("default", vec!["--port", "80"], "", format!("[{v6}]:80")),
        ("six", vec!["--family", "6"], "", v6.clone()),
        (
            "both",
            vec!["--family", "both", "--port", "80"],
            "-v6",
            format!("[{v6}]:80"),
        ),
    ] {
        let key = format!("{one}/{sub}");
        let mut args = vec!["--key", key.as_str(), "--container", c.name()];
        args.extend(extra);
        let mut cmd = sidekick(&etcd, &args);
        cmd.env("DOCKER_HOST", podman.docker_host());
        procs.push(Proc::spawn(cmd));
        want.insert(format!("{key}{suffix}"), value);
    }
    let dump = || procs.iter().map(Proc::dump).collect::<Vec<_>>().join("\n");
    converges(&etcd, &one, SETTLE, || want.clone(), dump).await;
}
