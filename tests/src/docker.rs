//! Docker fixtures: the locally built test image, a flannel-like network,
//! and containers, created through the harness's own negotiated bollard
//! client, that tests can stop, kill, start, pause and inspect.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HealthConfig, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use tokio::sync::OnceCell;

/// The test image: a static busybox whose entrypoint serves `tcp:PORT`
/// (one `VERSION ...` line per connection) and `http:PORT` (busybox httpd).
pub const TEST_IMAGE: (&str, &str) = (
    "discovery-test/busybox",
    include_str!("../image/TAG").trim_ascii(),
);

/// A user-defined network on a flannel-like subnet.
pub const FLANNEL_NETWORK: &str = "discovery-test-flannel";
/// Its subnet.
pub const FLANNEL_SUBNET: &str = "10.1.0.0/16";
/// The part of it Docker allocates from: the lower half, so that the
/// addresses tests pin (10.1.200.0 and up, see [`move_stopped_container`])
/// are never handed out, whether Docker allocates lowest-free-first or
/// serially.
pub const FLANNEL_DYNAMIC: &str = "10.1.0.0/17";

/// The label every test container and network carries, so `make test`
/// can sweep leftovers of a killed run.
pub const TEST_LABEL: &str = "discovery-test";

/// The real Docker socket.
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";

static INIT: OnceCell<()> = OnceCell::const_new();

/// The harness's own Docker client (API version negotiated with the engine).
#[derive(Clone)]
pub struct Docker {
    api: bollard::Docker,
}

impl Docker {
    /// Connect, and build the test image and the flannel-like network if
    /// they are missing.
    pub async fn connect() -> Self {
        let api =
            bollard::Docker::connect_with_unix(DOCKER_SOCKET, 120, bollard::API_DEFAULT_VERSION)
                .expect("docker socket")
                .negotiate_version()
                .await
                .expect("Docker engine answers on /var/run/docker.sock");
        let d = Self { api };
        INIT.get_or_init(|| async {
            d.ensure_image().await;
            d.ensure_flannel_network().await;
        })
        .await;
        d
    }

    /// The negotiated bollard client.
    pub fn api(&self) -> &bollard::Docker {
        &self.api
    }

    /// Build the test image unless it exists (serialised across test processes).
    pub async fn ensure_image(&self) {
        let tag = format!("{}:{}", TEST_IMAGE.0, TEST_IMAGE.1);
        if self.api.inspect_image(&tag).await.is_ok() {
            return;
        }
        let tag2 = tag.clone();
        tokio::task::spawn_blocking(move || build_image(&tag2))
            .await
            .expect("image build task");
        self.api
            .inspect_image(&tag)
            .await
            .unwrap_or_else(|e| panic!("test image {tag} missing after build: {e}"));
    }

    /// Create the flannel-like network unless it exists (serialised across
    /// test processes). A network left by an older checkout, without
    /// [`FLANNEL_DYNAMIC`], is replaced if no container uses it.
    pub async fn ensure_flannel_network(&self) {
        let _guard = tokio::task::spawn_blocking(|| {
            let path = std::env::temp_dir().join("discovery-test-network.lock");
            let file = std::fs::File::create(&path).expect("lock file");
            nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
                .map_err(|(_, e)| e)
                .expect("lock the network set-up")
        })
        .await
        .expect("lock task");
        if let Ok(n) = self.api.inspect_network(FLANNEL_NETWORK, None).await {
            let ranged = n
                .ipam
                .and_then(|i| i.config)
                .unwrap_or_default()
                .iter()
                .any(|c| c.ip_range.as_deref() == Some(FLANNEL_DYNAMIC));
            if ranged {
                return;
            }
            if let Err(e) = self.api.remove_network(FLANNEL_NETWORK).await {
                eprintln!(
                    "{FLANNEL_NETWORK} has no ip_range {FLANNEL_DYNAMIC} and cannot be replaced ({e}); pinned addresses may collide with allocated ones"
                );
                return;
            }
        }
        let req = bollard::models::NetworkCreateRequest {
            name: FLANNEL_NETWORK.into(),
            driver: Some("bridge".into()),
            ipam: Some(bollard::models::Ipam {
                config: Some(vec![bollard::models::IpamConfig {
                    subnet: Some(FLANNEL_SUBNET.into()),
                    ip_range: Some(FLANNEL_DYNAMIC.into()),
                    gateway: Some("10.1.0.1".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            labels: Some(HashMap::from([(
                TEST_LABEL.to_owned(),
                crate::checkout().to_owned(),
            )])),
            ..Default::default()
        };
        if let Err(e) = self.api.create_network(req).await {
            // Another test process may have created it meanwhile.
            if self
                .api
                .inspect_network(FLANNEL_NETWORK, None)
                .await
                .is_err()
            {
                panic!("create network {FLANNEL_NETWORK}: {e}");
            }
        }
    }

    /// A throwaway network (Docker picks the subnet), removed on drop.
    pub async fn network(&self, name: &str) -> TestNetwork {
        let req = bollard::models::NetworkCreateRequest {
            name: name.into(),
            driver: Some("bridge".into()),
            labels: Some(HashMap::from([(
                TEST_LABEL.to_owned(),
                crate::checkout().to_owned(),
            )])),
            ..Default::default()
        };
        self.api.create_network(req).await.expect("create network");
        TestNetwork { name: name.into() }
    }

    /// Create and start a container from the test image, labelled for
    /// clean-up; removed (with force) when the returned guard drops.
    pub async fn run(&self, spec: ContainerSpec) -> TestContainer {
        let body = ContainerCreateBody {
            image: Some(format!("{}:{}", TEST_IMAGE.0, TEST_IMAGE.1)),
            cmd: Some(spec.args.clone()),
            labels: Some(HashMap::from([(
                TEST_LABEL.to_owned(),
                crate::checkout().to_owned(),
            )])),
            healthcheck: spec.health.clone(),
            host_config: Some(HostConfig {
                network_mode: spec.network.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = self
            .api
            .create_container(
                Some(
                    CreateContainerOptionsBuilder::new()
                        .name(&spec.name)
                        .build(),
                ),
                body,
            )
            .await
            .unwrap_or_else(|e| panic!("create container {}: {e}", spec.name));
        // The guard exists before the start: a failed start still removes it.
        let c = TestContainer {
            id: created.id,
            name: spec.name,
            api: self.api.clone(),
        };
        self.api
            .start_container(&c.id, None)
            .await
            .unwrap_or_else(|e| panic!("start container {}: {e}", c.name));
        // Running is not listening: wait until every port it serves accepts.
        let network = spec.network.as_deref().unwrap_or("bridge");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        for port in &spec.ports {
            loop {
                let ip = c.ip(network).await;
                if let Some(ip) = &ip {
                    if tokio::net::TcpStream::connect((ip.as_str(), *port))
                        .await
                        .is_ok()
                    {
                        break;
                    }
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "container {} (ip {ip:?} on {network}) does not accept on port {port} within 20s",
                    c.name
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        c
    }
}

/// The directory with the image's Dockerfile and scripts.
pub fn image_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("image")
}

fn build_image(tag: &str) {
    let lock_path = std::env::temp_dir().join("discovery-test-image.lock");
    let lock = std::fs::File::create(&lock_path).expect("lock file");
    let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock image build");
    if Command::new("docker")
        .args(["image", "inspect", tag])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
    {
        return;
    }
    let ctx = tempfile::tempdir().expect("build context");
    for f in [
        "Dockerfile",
        "entry",
        "tcp-reply",
        "index.html",
        "check",
        "TAG",
    ] {
        std::fs::copy(image_dir().join(f), ctx.path().join(f)).expect("copy image file");
    }
    std::fs::copy("/bin/busybox", ctx.path().join("busybox"))
        .expect("copy /bin/busybox (install Debian's busybox-static)");
    let out = Command::new("docker")
        .args(["build", "-q", "-t", tag])
        .arg(ctx.path())
        .output()
        .expect("run docker build");
    assert!(
        out.status.success(),
        "docker build failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What to run.
#[derive(Clone, Debug)]
pub struct ContainerSpec {
    name: String,
    args: Vec<String>,
    network: Option<String>,
    health: Option<HealthConfig>,
    ports: Vec<u16>,
}

impl ContainerSpec {
    /// A container named `name` (unique per test) on the default bridge,
    /// serving nothing.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            args: Vec::new(),
            // Named explicitly: Docker 20.10 reports an unnamed default as
            // network mode "default".
            network: Some("bridge".into()),
            health: None,
            ports: Vec::new(),
        }
    }

    /// Serve a TCP responder on `port`.
    pub fn tcp(mut self, port: u16) -> Self {
        self.args.push(format!("tcp:{port}"));
        self.ports.push(port);
        self
    }

    /// Serve HTTP on `port`.
    pub fn http(mut self, port: u16) -> Self {
        self.args.push(format!("http:{port}"));
        self.ports.push(port);
        self
    }

    /// Start on this network instead of the default bridge.
    pub fn network(mut self, net: impl Into<String>) -> Self {
        self.network = Some(net.into());
        self
    }

    /// A HEALTHCHECK that passes while `/tmp/healthy` exists, checked every 300 ms.
    pub fn health_file(mut self) -> Self {
        let nanos = |d: Duration| i64::try_from(d.as_nanos()).expect("duration in ns");
        self.health = Some(HealthConfig {
            test: Some(
                ["CMD", "test", "-f", "/tmp/healthy"]
                    .map(String::from)
                    .to_vec(),
            ),
            interval: Some(nanos(Duration::from_millis(300))),
            timeout: Some(nanos(Duration::from_secs(1))),
            retries: Some(1),
            ..Default::default()
        });
        self
    }
}

/// A network removed on drop.
pub struct TestNetwork {
    name: String,
}

impl TestNetwork {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["network", "rm", &self.name])
            .output();
    }
}

/// A running test container; removed (with force) on drop.
pub struct TestContainer {
    name: String,
    id: String,
    api: bollard::Docker,
}

impl TestContainer {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Inspect through the Docker API.
    pub async fn inspect(&self) -> bollard::models::ContainerInspectResponse {
        self.api
            .inspect_container(&self.id, None)
            .await
            .expect("inspect container")
    }

    /// The IPv4 address on `network`, if attached and running.
    pub async fn ip(&self, network: &str) -> Option<String> {
        self.inspect()
            .await
            .network_settings?
            .networks?
            .get(network)?
            .ip_address
            .clone()
            .filter(|ip| !ip.is_empty())
    }

    /// The IP on the default bridge.
    pub async fn bridge_ip(&self) -> Option<String> {
        self.ip("bridge").await
    }

    /// `docker stop -t 2`.
    pub async fn stop(&self) {
        self.api
            .stop_container(
                &self.id,
                Some(StopContainerOptionsBuilder::new().t(2).build()),
            )
            .await
            .expect("stop container");
    }

    /// `docker kill` (SIGKILL).
    pub async fn kill(&self) {
        self.api
            .kill_container(
                &self.id,
                Some(KillContainerOptionsBuilder::new().signal("KILL").build()),
            )
            .await
            .expect("kill container");
    }

    /// `docker start`.
    pub async fn start(&self) {
        self.api
            .start_container(&self.id, None)
            .await
            .expect("start container");
    }

    /// `docker pause`.
    pub async fn pause(&self) {
        self.api.pause_container(&self.id).await.expect("pause");
    }

    /// `docker unpause`.
    pub async fn unpause(&self) {
        self.api.unpause_container(&self.id).await.expect("unpause");
    }

    /// Attach to another network.
    pub async fn connect_network(&self, network: &str) {
        self.api
            .connect_network(
                network,
                bollard::models::NetworkConnectRequest {
                    container: self.id.clone(),
                    ..Default::default()
                },
            )
            .await
            .expect("connect network");
    }

    /// Run a command inside (through the docker CLI); panics if it fails.
    pub async fn exec(&self, args: &[&str]) {
        let mut cmd = tokio::process::Command::new("docker");
        cmd.arg("exec").arg(&self.id).args(args);
        let out = cmd.output().await.expect("docker exec");
        assert!(
            out.status.success(),
            "docker exec {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Remove now (with force).
    pub async fn remove(self) {
        let _ = self
            .api
            .remove_container(
                &self.id,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
            .await;
        // The drop's `docker rm -f` then finds nothing, quietly.
    }
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        // Synchronous, through the CLI: a drop cannot await, and this also
        // runs while a panicking test's runtime shuts down.
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.id])
            .env_remove("DOCKER_HOST")
            .output();
    }
}

/// `docker inspect` through the CLI, for cross-checking the API.
pub fn cli_inspect_ip(name: &str, network: &str) -> String {
    let out = Command::new("docker")
        .args([
            "inspect",
            "-f",
            &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
            name,
        ])
        .output()
        .expect("docker inspect");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A name unique to this test run.
pub fn unique_name(base: &str) -> String {
    format!("dt-{base}-{:06x}", fastrand::u32(..0xff_ffff))
}

/// The docker CLI against the local engine (never a DOCKER_HOST the
/// environment may carry); panics with its stderr if it fails, else returns
/// its stdout, trimmed.
pub fn docker_cli(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .env_remove("DOCKER_HOST")
        .output()
        .expect("run the docker CLI");
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Give the stopped container `name` another address on `network` (a
/// user-defined subnet such as [`FLANNEL_NETWORK`]): it is disconnected and
/// connected again with a random address in `10.1.200.0`-`10.1.249.255`,
/// outside the range Docker allocates from ([`FLANNEL_DYNAMIC`]). Returns
/// the new address, which the container has once it starts.
///
/// Tests used to squat the freed address with another container instead;
/// on a busy run another test's container could take it first ("Address
/// already in use").
pub fn move_stopped_container(name: &str, network: &str, old_ip: &str) -> String {
    docker_cli(&["network", "disconnect", network, name]);
    connect_pinned(name, network, old_ip)
}

/// Connect the stopped container `name` to `network` (a user-defined subnet
/// such as [`FLANNEL_NETWORK`]) at a random address in
/// `10.1.200.0`-`10.1.249.255`, outside the range Docker allocates from,
/// and other than `not`. Returns the address.
pub fn connect_pinned(name: &str, network: &str, not: &str) -> String {
    let ip = loop {
        let ip = format!("10.1.{}.{}", fastrand::u8(200..250), fastrand::u8(2..255));
        if ip != not {
            break ip;
        }
    };
    docker_cli(&["network", "connect", "--ip", &ip, network, name]);
    ip
}

/// A test-image container pinned at `ip` on `network`, labelled for
/// clean-up: `docker run -d` (or `docker create` when `start` is false),
/// with `args` for its entry point. Tests use it to take the address a
/// stopped container left, or to have a replacement ready at a known one.
pub fn pinned_container(start: bool, name: &str, network: &str, ip: &str, args: &[&str]) {
    let label = format!("{TEST_LABEL}={}", crate::checkout());
    let image = format!("{}:{}", TEST_IMAGE.0, TEST_IMAGE.1);
    let mut cli = if start {
        vec!["run", "-d"]
    } else {
        vec!["create"]
    };
    cli.extend([
        "--name",
        name,
        "--label",
        &label,
        "--network",
        network,
        "--ip",
        ip,
        &image,
    ]);
    cli.extend(args);
    docker_cli(&cli);
}
