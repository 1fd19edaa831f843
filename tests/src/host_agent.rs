//! For `sidekick --all` tests: many labelled containers started at once
//! through the docker CLI, each run tagged with a label of its own so that
//! the agent under test (`--only-label`) sees only its test's containers,
//! and the oracle: what etcd should hold, read from Docker independently.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use tokio::time::Instant;

use crate::docker::{TEST_IMAGE, TEST_LABEL};
use crate::etcd::EtcdCluster;
use crate::proc::sidekick;

/// One test's containers: named `<run>-<suffix>`, labelled `<run>=1` and
/// with the harness's [`TEST_LABEL`]; all removed on drop.
pub struct Fleet {
    run: String,
    names: std::sync::Mutex<Vec<String>>,
}

/// What to run.
#[derive(Clone, Debug, Default)]
pub struct Spec {
    /// Name suffix.
    pub suffix: String,
    /// Labels besides the fleet's.
    pub labels: Vec<(String, String)>,
    /// Environment.
    pub env: Vec<String>,
    /// `-p` arguments.
    pub publish: Vec<String>,
    /// `--expose` ports.
    pub expose: Vec<u16>,
    /// Arguments to the image's entry (`tcp:PORT`).
    pub args: Vec<String>,
}

impl Spec {
    /// A container named `<run>-<suffix>`.
    pub fn new(suffix: impl Into<String>) -> Self {
        Self {
            suffix: suffix.into(),
            ..Self::default()
        }
    }

    /// Add a label.
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.push((k.to_owned(), v.to_owned()));
        self
    }

    /// Add an environment variable.
    pub fn env(mut self, e: &str) -> Self {
        self.env.push(e.to_owned());
        self
    }

    /// Add a `-p` argument.
    pub fn publish(mut self, p: &str) -> Self {
        self.publish.push(p.to_owned());
        self
    }

    /// Serve TCP on `port` (and expose it).
    pub fn tcp(mut self, port: u16) -> Self {
        self.args.push(format!("tcp:{port}"));
        self.expose.push(port);
        self
    }
}

impl Fleet {
    /// A fleet for test `base`.
    pub fn new(base: &str) -> Self {
        Self {
            run: format!("{base}-{:06x}", fastrand::u32(..0xff_ffff)),
            names: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The run's label (and name prefix).
    pub fn run(&self) -> &str {
        &self.run
    }

    /// The full name of container `suffix`.
    pub fn name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.run)
    }

    /// The `--only-label` argument for this fleet.
    pub fn only_label(&self) -> String {
        format!("{}=1", self.run)
    }

    /// Start every spec at once (`docker run -d`); panics with Docker's
    /// message if one fails.
    pub async fn start(&self, specs: Vec<Spec>) {
        let runs = specs.into_iter().map(|s| {
            let name = self.name(&s.suffix);
            self.names.lock().unwrap().push(name.clone());
            let mut cmd = tokio::process::Command::new("docker");
            cmd.args(["run", "-d", "--name", &name, "--network", "bridge"])
                .args(["--label", &format!("{TEST_LABEL}=1")])
                .args(["--label", &format!("{}=1", self.run)]);
            for (k, v) in &s.labels {
                cmd.args(["--label", &format!("{k}={v}")]);
            }
            for e in &s.env {
                cmd.args(["-e", e]);
            }
            for p in &s.publish {
                cmd.args(["-p", p]);
            }
            for p in &s.expose {
                cmd.args(["--expose", &p.to_string()]);
            }
            cmd.arg(format!("{}:{}", TEST_IMAGE.0, TEST_IMAGE.1))
                .args(&s.args);
            async move {
                let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
                    .await
                    .unwrap_or_else(|_| panic!("docker run {name}: no answer in 120 s"))
                    .expect("docker run");
                assert!(
                    out.status.success(),
                    "docker run {name}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        });
        futures::future::join_all(runs).await;
    }

    /// `docker <verb> <names>` for containers `suffixes` (stop -t 1, kill,
    /// start, restart -t 1).
    pub async fn cli(&self, verb: &[&str], suffixes: &[&str]) {
        let names: Vec<String> = suffixes.iter().map(|s| self.name(s)).collect();
        let out = tokio::process::Command::new("docker")
            .args(verb)
            .args(&names)
            .output()
            .await
            .expect("docker");
        assert!(
            out.status.success(),
            "docker {verb:?} {names:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Running containers of this fleet: name to the address the agent
    /// registers (the bridge's, else the only network's), from `docker ps`
    /// and `docker inspect` (the oracle).
    pub fn running(&self) -> BTreeMap<String, String> {
        let ids = docker(&[
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("label={}", self.run),
        ]);
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            return BTreeMap::new();
        }
        let mut args = vec![
            "inspect",
            "-f",
            "{{.Name}} {{.State.Running}}{{range $n, $e := .NetworkSettings.Networks}} {{$n}}={{$e.IPAddress}}{{end}}",
        ];
        args.extend(ids);
        docker(&args)
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                let name = it.next()?.trim_start_matches('/').to_owned();
                (it.next()? == "true").then_some(())?;
                let nets: Vec<(&str, &str)> = it.filter_map(|n| n.split_once('=')).collect();
                let ip = match nets.iter().find(|(n, _)| *n == "bridge") {
                    Some((_, ip)) => ip,
                    None if nets.len() == 1 => nets[0].1,
                    None => "",
                };
                Some((name, ip.to_owned()))
            })
            .collect()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let names = self.names.lock().map(|n| n.clone()).unwrap_or_default();
        for chunk in names.chunks(100) {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(chunk)
                .output();
        }
    }
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A `sidekick --all` command for `fleet` against `etcd`.
pub fn host_agent(etcd: &EtcdCluster, fleet: &Fleet, args: &[&str]) -> Command {
    let only = fleet.only_label();
    let mut all = vec!["--all", "--only-label", only.as_str()];
    all.extend_from_slice(args);
    sidekick(etcd, &all)
}

/// Everything under `prefix` in etcd: key to value.
pub async fn etcd_map(etcd: &EtcdCluster, prefix: &str) -> BTreeMap<String, String> {
    let mut c = etcd.raw_client().await;
    let r = c
        .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .expect("etcd get prefix");
    r.kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                String::from_utf8_lossy(kv.value()).into_owned(),
            )
        })
        .collect()
}

/// Poll until etcd under `prefix` equals `want()` (recomputed each time),
/// or panic after `timeout` with both sides and `context()`.
pub async fn converges<W, C>(
    etcd: &EtcdCluster,
    prefix: &str,
    timeout: Duration,
    want: W,
    context: C,
) where
    W: Fn() -> BTreeMap<String, String>,
    C: Fn() -> String,
{
    let deadline = Instant::now() + timeout;
    loop {
        let want = want();
        let have = etcd_map(etcd, prefix).await;
        if have == want {
            return;
        }
        if Instant::now() > deadline {
            let stale: Vec<_> = have
                .iter()
                .filter(|(k, v)| want.get(*k) != Some(v))
                .collect();
            let missing: Vec<_> = want
                .iter()
                .filter(|(k, v)| have.get(*k) != Some(v))
                .collect();
            panic!(
                "etcd under {prefix} did not match docker ps within {timeout:?}\nstale or wrong: {stale:#?}\nmissing: {missing:#?}\n{}",
                context()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
