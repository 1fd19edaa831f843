//! Podman as the second container engine: a real `podman system service`
//! serving the Docker-compatible API on a socket of the test's own, with a
//! `containers.conf` of the test's own, and containers run by the real
//! `podman` CLI (as a user would type `podman stop` and `podman start`).
//!
//! Debian's podman 4.3.1 on this kind of host needs `default_ulimits`:
//! without them runc fails "error setting rlimits ... operation not
//! permitted". The test image comes from Docker (`docker save | podman load`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;
use tokio::time::Instant;

use crate::docker::{TEST_IMAGE, TEST_LABEL};

/// The `containers.conf` every podman the harness runs reads (through
/// `CONTAINERS_CONF`).
pub const CONTAINERS_CONF: &str = "[containers]\n\
    default_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n";

/// The network podman attaches containers to by default (10.88.0.0/16).
pub const PODMAN_NETWORK: &str = "podman";

/// A `podman system service --time=0` on a private socket; stopped (and
/// its directory removed) on drop, also when a test panics.
pub struct Podman {
    dir: TempDir,
    socket: PathBuf,
    service: Option<Child>,
}

impl Podman {
    /// Start the service, wait until it answers, and make sure the test
    /// image is in podman's store.
    pub async fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("podman-test-")
            .tempdir_in(crate::scratch_dir())
            .expect("temp dir");
        std::fs::write(dir.path().join("containers.conf"), CONTAINERS_CONF)
            .expect("write containers.conf");
        let socket = dir.path().join("podman.sock");
        let log = std::fs::File::create(dir.path().join("service.log")).expect("service log");
        let service = Command::new("podman")
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .env("CONTAINERS_CONF", dir.path().join("containers.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("start `podman system service` (make deps installs podman)");
        let mut p = Self {
            dir,
            socket,
            service: Some(service),
        };
        p.wait_ready().await;
        let conf = p.conf();
        tokio::task::spawn_blocking(move || load_image(&conf))
            .await
            .expect("image load task");
        p
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(Ok(Some(status))) = self.service.as_mut().map(Child::try_wait) {
                panic!("podman system service exited ({status})\n{}", self.log());
            }
            if self.socket.exists() {
                if let Ok(api) = bollard::Docker::connect_with_unix(
                    &self.socket.to_string_lossy(),
                    5,
                    bollard::API_DEFAULT_VERSION,
                ) {
                    if api.ping().await.is_ok() {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "podman's API did not answer on {} within 30s\n{}",
                self.socket.display(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `DOCKER_HOST` for a client of this service.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The test's own `containers.conf`.
    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("containers.conf")
    }

    /// The service's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("service.log")).unwrap_or_default()
    }

    /// Run the podman CLI with the test's `containers.conf`; panics with its
    /// stderr if it fails, else returns its stdout, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        podman_cli(&self.conf(), args)
    }

    /// `podman run -d` of the test image named `name` (unique per test),
    /// labelled for clean-up, with `args` for its entry point (`tcp:PORT`);
    /// removed on drop.
    pub fn run(&self, name: &str, args: &[&str]) -> PodmanContainer {
        self.run_with(name, &[], args)
    }

    /// [`Podman::run`] with more `podman run` options (`--entrypoint ...`).
    pub fn run_with(&self, name: &str, options: &[&str], args: &[&str]) -> PodmanContainer {
        let image = format!("{}:{}", TEST_IMAGE.0, TEST_IMAGE.1);
        let label = format!("{TEST_LABEL}={}", crate::checkout());
        let mut cli = vec!["run", "-d", "--name", name, "--label", &label];
        cli.extend(options);
        cli.push(&image);
        cli.extend(args);
        // The guard exists before the container does: a failed run that
        // left a created container behind still removes it.
        let c = PodmanContainer {
            name: name.to_owned(),
            conf: self.conf(),
        };
        self.cli(&cli);
        c
    }
}

impl Podman {
    /// `podman network create --subnet fd00:…/64 NAME`: a network with an
    /// IPv6 subnet and none for IPv4 (Docker 20.10 cannot make one; Podman
    /// 4 can). Removed, with what runs on it, on drop.
    pub fn ipv6_only_network(&self, base: &str) -> PodmanNetwork {
        let name = crate::docker::unique_name(base);
        // A /64 of its own, so parallel runs never share one.
        let subnet = format!("fd00:6e7:{:x}::/64", fastrand::u16(1..0xffff));
        let net = PodmanNetwork {
            name: name.clone(),
            conf: self.conf(),
        };
        self.cli(&["network", "create", "--subnet", &subnet, &name]);
        net
    }
}

/// A podman network; removed (with force) on drop.
pub struct PodmanNetwork {
    name: String,
    conf: PathBuf,
}

impl PodmanNetwork {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for PodmanNetwork {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["network", "rm", "-f", &self.name])
            .env("CONTAINERS_CONF", &self.conf)
            .output();
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        if let Some(mut c) = self.service.take() {
            let pid = Pid::from_raw(c.id() as i32);
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while std::time::Instant::now() < deadline {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = kill(pid, Signal::SIGKILL);
            let _ = c.wait();
        }
    }
}

/// A podman container; removed (with force) on drop.
pub struct PodmanContainer {
    name: String,
    conf: PathBuf,
}

impl PodmanContainer {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its IPv4 address on the default `podman` network, if running.
    pub fn ip(&self) -> Option<String> {
        let ip = podman_cli(
            &self.conf,
            &[
                "inspect",
                "--format",
                &format!(
                    "{{{{(index .NetworkSettings.Networks \"{PODMAN_NETWORK}\").IPAddress}}}}"
                ),
                &self.name,
            ],
        );
        Some(ip).filter(|ip| !ip.is_empty())
    }

    /// Its IPv4 and IPv6 addresses on `network` (empty where it has none).
    pub fn addrs_on(&self, network: &str) -> (String, String) {
        let field =
            |f: &str| format!("{{{{(index .NetworkSettings.Networks \"{network}\").{f}}}}}");
        let out = podman_cli(
            &self.conf,
            &[
                "inspect",
                "--format",
                &format!("{}|{}", field("IPAddress"), field("GlobalIPv6Address")),
                &self.name,
            ],
        );
        let (v4, v6) = out.split_once('|').unwrap_or((&out, ""));
        (v4.to_owned(), v6.to_owned())
    }

    /// `podman stop -t SECS`.
    pub fn stop(&self, secs: u32) {
        podman_cli(&self.conf, &["stop", "-t", &secs.to_string(), &self.name]);
    }

    /// `podman stop -t SECS` in the background (it returns at once; the
    /// command runs until the container is down).
    pub fn stop_in_background(&self, secs: u32) -> std::process::Child {
        Command::new("podman")
            .args(["stop", "-t", &secs.to_string(), &self.name])
            .env("CONTAINERS_CONF", &self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run podman stop")
    }

    /// `podman start`.
    pub fn start(&self) {
        podman_cli(&self.conf, &["start", &self.name]);
    }
}

impl Drop for PodmanContainer {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "-f", "-t", "0", &self.name])
            .env("CONTAINERS_CONF", &self.conf)
            .output();
    }
}

fn podman_cli(conf: &Path, args: &[&str]) -> String {
    let out = Command::new("podman")
        .args(args)
        .env("CONTAINERS_CONF", conf)
        .output()
        .expect("run the podman CLI");
    assert!(
        out.status.success(),
        "podman {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `docker save IMAGE | podman load`, unless podman has it (serialised
/// across test processes).
fn load_image(conf: &Path) {
    let image = format!("{}:{}", TEST_IMAGE.0, TEST_IMAGE.1);
    let exists = |conf: &Path| {
        Command::new("podman")
            .args(["image", "exists", &image])
            .env("CONTAINERS_CONF", conf)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if exists(conf) {
        return;
    }
    let lock_path = std::env::temp_dir().join("discovery-test-podman-image.lock");
    let lock = std::fs::File::create(&lock_path).expect("lock file");
    let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock podman image load");
    if exists(conf) {
        return;
    }
    let out = Command::new("sh")
        .arg("-c")
        .arg("docker save \"$1\" | podman load")
        .arg("sh")
        .arg(&image)
        .env("CONTAINERS_CONF", conf)
        .env_remove("DOCKER_HOST")
        .output()
        .expect("run docker save | podman load");
    assert!(
        out.status.success() && exists(conf),
        "docker save {image} | podman load failed (is the test image built? make image):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
