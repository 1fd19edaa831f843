//! A real systemd (the machine's own, 252) as PID 1 in a Docker container,
//! with the units and binaries as `make install` installs them, so tests
//! drive units with `systemctl` and read `journalctl`.
//!
//! The recipe (see the README's "Running the units under systemd"):
//! * the image is a skeleton root imported from a tarball: a copy of the
//!   machine's `/etc` (empty `machine-id`, no enabled services, no shadow
//!   files or SSH host keys), `/var/lib/dpkg`, and the merged-usr symlinks;
//!   the machine's `/usr` is bind-mounted read-only at run time, so nothing
//!   is downloaded. Built when missing, under a file lock;
//! * `--network host`, so the units reach the harness's etcd on loopback;
//!   the host's Docker socket, so container units start sibling containers;
//!   `CAP_SYS_ADMIN` (without it every unit with mount sandboxing fails with
//!   226/NAMESPACE; `--privileged` is refused by this engine);
//! * a stand-in `docker.service` (oneshot, `RemainAfterExit=yes`) satisfies
//!   the container units' `Requires=docker.service`;
//! * `mount --make-rshared /` before systemd starts: systemd skips it in a
//!   container, and `LoadCredential=` needs it.
//!
//! [`SystemdHost::start_bare`] boots the same host with nothing of ours
//! installed and a writable `/usr` (an overlay over the machine's, in a
//! tmpfs inside the container, which has `CAP_SYS_ADMIN`), so a test can
//! `dpkg -i` the package there: the skeleton's `/var/lib/dpkg` is the
//! machine's, so dpkg sees the same installed packages, and whatever it
//! writes goes with the container. The machine's `/usr/local` is hidden
//! under an empty tmpfs, and the `/etc/default/*` files are written inside
//! (the operator's own files, which a purge must leave). A test hands it
//! files through [`SystemdHost::share`], mounted read-only at `/share`.
//!
//! The host container and every sibling container its units start are
//! removed on drop, also when a test panics; all carry [`TEST_LABEL`] with
//! this checkout as its value, so `make sweep` finds leftovers.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use tempfile::TempDir;
use tokio::time::Instant;

use crate::docker::{TEST_IMAGE, TEST_LABEL, unique_name};

/// The skeleton-root image. Bump the tag when the skeleton (`build_skeleton`) changes.
pub const SYSTEMD_IMAGE: &str = "discovery-test/systemd:1";

/// The test image, as `IMAGE=` in `/etc/default/memcached` takes it.
pub fn test_image() -> String {
    format!("{}:{}", TEST_IMAGE.0, TEST_IMAGE.1)
}

const STANDIN_DOCKER: &str = "\
[Unit]
Description=Stand-in for the machine's Docker engine (reached through the mounted socket)
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true
";

/// Build [`SYSTEMD_IMAGE`] unless it exists (serialised across test processes).
pub fn ensure_image() {
    let exists = || {
        Command::new("docker")
            .args(["image", "inspect", SYSTEMD_IMAGE])
            .env_remove("DOCKER_HOST")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if exists() {
        return;
    }
    let lock_path = std::env::temp_dir().join("discovery-test-systemd-image.lock");
    let lock = std::fs::File::create(&lock_path).expect("lock file");
    let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock systemd image build");
    if exists() {
        return;
    }
    let skel = tempfile::tempdir().expect("skeleton dir");
    build_skeleton(skel.path());
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(skel.path())
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .expect("tar the skeleton");
    let out = Command::new("docker")
        .args(["import", "-", SYSTEMD_IMAGE])
        .env_remove("DOCKER_HOST")
        .stdin(tar.stdout.take().expect("tar stdout"))
        .output()
        .expect("docker import");
    let tarred = tar.wait().expect("wait for tar");
    assert!(tarred.success(), "tar of the skeleton root failed");
    assert!(
        out.status.success(),
        "docker import {SYSTEMD_IMAGE}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The skeleton root in `dir` (see the module docs).
fn build_skeleton(dir: &Path) {
    let sh = format!(
        r#"set -e
cd '{d}'
chmod 0755 .
mkdir -p var/lib var/log var/tmp run tmp proc sys dev usr root home
tar -C / --exclude=etc/shadow --exclude=etc/shadow- --exclude=etc/gshadow --exclude=etc/gshadow- \
    --exclude='etc/ssh/ssh_host_*' -cf - etc | tar -xf -
: > etc/machine-id
# Nothing of the machine's own services: only what a test starts runs.
find etc/systemd/system -mindepth 1 -maxdepth 1 \( -name '*.wants' -o -name '*.requires' \) -exec rm -rf {{}} +
cp -a /var/lib/dpkg var/lib/
for d in bin lib lib64 sbin; do ln -s usr/$d $d; done
"#,
        d = dir.display()
    );
    let out = Command::new("sh").args(["-c", &sh]).output().expect("sh");
    assert!(
        out.status.success(),
        "building the skeleton root: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What goes into the host's `/etc/default/*`.
#[derive(Clone, Debug, Default)]
pub struct HostConfig {
    sidekick: Vec<String>,
    memcached: Vec<String>,
    couchbase: Vec<String>,
}

impl HostConfig {
    /// `/etc/default/sidekick` with `ETCDCTL_ENDPOINTS=endpoints`;
    /// `/etc/default/memcached` and `/etc/default/couchbase` run the test
    /// image (serving `tcp:11211` and `http:8091`), labelled for clean-up.
    pub fn new(endpoints: &str) -> Self {
        let opts = format!("DOCKER_OPTS=--label {TEST_LABEL}={}", crate::checkout());
        Self {
            sidekick: vec![format!("ETCDCTL_ENDPOINTS={endpoints}")],
            memcached: vec![
                format!("IMAGE={}", test_image()),
                opts.clone(),
                "ARGS=tcp:11211".into(),
            ],
            couchbase: vec![
                format!("IMAGE={}", test_image()),
                opts,
                "ARGS=http:8091".into(),
            ],
        }
    }

    /// One more `NAME=value` line in `/etc/default/sidekick`.
    pub fn sidekick_env(mut self, line: impl Into<String>) -> Self {
        self.sidekick.push(line.into());
        self
    }
}

/// A container running systemd as PID 1; removed with its units'
/// containers on drop.
pub struct SystemdHost {
    name: String,
    dir: TempDir,
    siblings: Mutex<Vec<String>>,
}

/// How our tools get into the host.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Layout {
    /// `make install PREFIX=/usr/local`, bind-mounted read-only; the
    /// `/etc/default/*` files bind-mounted too.
    MakeInstall,
    /// Nothing installed; `/usr` writable for dpkg; `/etc/default/*`
    /// written inside.
    Bare,
}

/// The container's command for [`Layout::Bare`]: `/usr` becomes an
/// overlay (the machine's `/usr`, mounted at `/.host-usr`, under a tmpfs
/// upper layer), the machine's `/usr/local` is hidden, then as for the
/// other layout. The shell runs from the old `/usr`; systemd from the new.
///
/// The machine is itself a Docker image, whose `/usr/sbin/policy-rc.d`
/// (no package's) forbids maintainer scripts to start or stop anything;
/// a real host has none, so the overlay drops it.
const BARE_BOOT: &str = "set -e
mkdir -p /.usr-rw
mount -t tmpfs -o mode=0755 tmpfs /.usr-rw
mkdir /.usr-rw/upper /.usr-rw/work
mount -t overlay overlay -o lowerdir=/.host-usr,upperdir=/.usr-rw/upper,workdir=/.usr-rw/work /usr
mount -t tmpfs -o mode=0755 tmpfs /usr/local
rm -f /usr/sbin/policy-rc.d
mount --make-rshared /
exec /lib/systemd/systemd";

fn lines(v: &[String]) -> String {
    let mut s = v.join("\n");
    s.push('\n');
    s
}

impl SystemdHost {
    /// Build the image if missing, `make install` into a fresh root, start
    /// systemd, and wait until it has booted (`running` or `degraded`).
    pub async fn start(config: HostConfig) -> Self {
        Self::boot(config, Layout::MakeInstall).await
    }

    /// The same host with nothing of ours installed and a writable `/usr`,
    /// for `dpkg -i` (see the module docs); `config`'s `/etc/default/*`
    /// files are written inside, as an operator would.
    pub async fn start_bare(config: HostConfig) -> Self {
        let host = Self::boot(config.clone(), Layout::Bare).await;
        for (name, lines_) in [
            ("sidekick", &config.sidekick),
            ("memcached", &config.memcached),
            ("couchbase", &config.couchbase),
        ] {
            let path = format!("/etc/default/{name}");
            host.write_file(&path, &lines(lines_));
            host.run(&["chmod", "0644", &path]);
        }
        host
    }

    /// A directory of the test's, mounted read-only at `/share` in the
    /// host (only for [`SystemdHost::start_bare`]).
    pub fn share(&self) -> PathBuf {
        self.dir.path().join("share")
    }

    async fn boot(config: HostConfig, layout: Layout) -> Self {
        tokio::task::spawn_blocking(ensure_image)
            .await
            .expect("image task");
        let dir = tempfile::Builder::new()
            .prefix("systemd-host-")
            .tempdir()
            .expect("temp dir");
        let etc = dir.path().join("etc");
        std::fs::create_dir_all(&etc).expect("etc dir");
        std::fs::write(etc.join("docker.service"), STANDIN_DOCKER).expect("docker.service");
        let mount = |src: PathBuf, dst: &str| format!("{}:{dst}:ro", src.display());
        let name = unique_name("systemd");
        let mut run = Command::new("docker");
        run.env_remove("DOCKER_HOST")
            .args(["run", "-d", "--name", &name, "--label"])
            .arg(format!("{TEST_LABEL}={}", crate::checkout()))
            .args([
                "--network",
                "host",
                "-e",
                "container=docker",
                "--cap-add",
                "SYS_ADMIN",
                "--security-opt",
                "seccomp=unconfined",
                "--security-opt",
                "apparmor=unconfined",
                "-v",
                "/usr:/usr:ro",
                "-v",
                "/var/run/docker.sock:/var/run/docker.sock",
                "-v",
                "/sys/fs/cgroup:/sys/fs/cgroup:ro",
                "--tmpfs",
                "/run",
                "--tmpfs",
                "/run/lock",
                "--tmpfs",
                "/tmp",
                "-v",
            ])
            .arg(mount(
                etc.join("docker.service"),
                "/etc/systemd/system/docker.service",
            ));
        match layout {
            Layout::MakeInstall => {
                let root = dir.path().join("root");
                crate::install::make_install(&root, "/usr/local");
                std::fs::write(etc.join("sidekick"), lines(&config.sidekick))
                    .expect("sidekick env");
                std::fs::write(etc.join("memcached"), lines(&config.memcached))
                    .expect("memcached env");
                std::fs::write(etc.join("couchbase"), lines(&config.couchbase))
                    .expect("couchbase env");
                for (src, dst) in [
                    (root.join("usr/local"), "/usr/local"),
                    (etc.join("sidekick"), "/etc/default/sidekick"),
                    (etc.join("memcached"), "/etc/default/memcached"),
                    (etc.join("couchbase"), "/etc/default/couchbase"),
                ] {
                    run.arg("-v").arg(mount(src, dst));
                }
                // systemd makes / shared at boot, except in a container;
                // without it the credentials a unit's executor mounts in
                // its own namespace never reach the unit (LoadCredential=
                // gives an empty $CREDENTIALS_DIRECTORY). PID 1 stays
                // systemd (exec).
                run.args([
                    SYSTEMD_IMAGE,
                    "/bin/sh",
                    "-c",
                    "mount --make-rshared / && exec /lib/systemd/systemd",
                ]);
            }
            Layout::Bare => {
                let share = dir.path().join("share");
                std::fs::create_dir_all(&share).expect("share dir");
                run.args(["-v", "/usr:/.host-usr:ro", "-v"])
                    .arg(mount(share, "/share"))
                    .args([SYSTEMD_IMAGE, "/bin/sh", "-c", BARE_BOOT]);
            }
        }
        let out = run.output().expect("docker run");
        Self::booted(name, dir, out).await
    }

    /// Wait until systemd in the container `docker run` started has booted.
    async fn booted(name: String, dir: TempDir, out: Output) -> Self {
        let host = Self {
            name,
            dir,
            siblings: Mutex::new(Vec::new()),
        };
        assert!(
            out.status.success(),
            "docker run {SYSTEMD_IMAGE}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let o = host.exec(&["systemctl", "is-system-running"]);
            let state = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            if state == "running" || state == "degraded" {
                break;
            }
            if Instant::now() > deadline {
                panic!(
                    "systemd in {} did not boot within 60s (state {state:?})\n{}",
                    host.name,
                    host.journal_all()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        host
    }

    /// The host container's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Remove the container `name` (a unit's sibling) when this host goes.
    pub fn sibling(&self, name: impl Into<String>) {
        self.siblings.lock().unwrap().push(name.into());
    }

    /// `docker exec HOST args…`.
    pub fn exec(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .env_remove("DOCKER_HOST")
            .arg("exec")
            .arg(&self.name)
            .args(args)
            .output()
            .expect("docker exec")
    }

    /// `docker exec -i HOST args…` with `input` on stdin.
    pub fn exec_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = Command::new("docker")
            .env_remove("DOCKER_HOST")
            .args(["exec", "-i", &self.name])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("docker exec -i");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write stdin");
        child.wait_with_output().expect("docker exec -i")
    }

    /// Run `args` in the host; panic with the output (and the journal) if
    /// it fails, else return stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let o = self.exec(args);
        assert!(
            o.status.success(),
            "{args:?} in {} failed ({}):\n{}{}\n--- journal ---\n{}",
            self.name,
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.journal_all()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `systemctl args…`, which must succeed.
    pub fn systemctl(&self, args: &[&str]) -> String {
        let mut v = vec!["systemctl"];
        v.extend_from_slice(args);
        self.run(&v)
    }

    /// `systemctl show -P PROPERTY UNIT`.
    pub fn show(&self, unit: &str, property: &str) -> String {
        self.systemctl(&["show", "-P", property, unit])
            .trim()
            .to_owned()
    }

    /// Write `content` to `path` inside the host (mode 0600, root).
    pub fn write_file(&self, path: &str, content: &str) {
        let dir = Path::new(path)
            .parent()
            .expect("a directory")
            .to_string_lossy()
            .into_owned();
        self.run(&["mkdir", "-p", &dir]);
        let o = self.exec_stdin(
            &["sh", "-c", &format!("umask 077 && cat > '{path}'")],
            content.as_bytes(),
        );
        assert!(
            o.status.success(),
            "write {path}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// A drop-in `/etc/systemd/system/UNIT.d/NAME.conf`, then daemon-reload.
    pub fn drop_in(&self, unit: &str, name: &str, content: &str) {
        self.write_file(
            &format!("/etc/systemd/system/{unit}.d/{name}.conf"),
            content,
        );
        self.run(&[
            "chmod",
            "0644",
            &format!("/etc/systemd/system/{unit}.d/{name}.conf"),
        ]);
        self.systemctl(&["daemon-reload"]);
    }

    /// `journalctl -u UNIT -o cat` (the unit's lines, no metadata).
    pub fn journal(&self, unit: &str) -> String {
        self.journal_args(&["-u", unit, "-o", "cat"])
    }

    /// `journalctl --no-pager args…`.
    pub fn journal_args(&self, args: &[&str]) -> String {
        let mut v = vec!["journalctl", "--no-pager"];
        v.extend_from_slice(args);
        let o = self.exec(&v);
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The whole journal, for failure messages.
    pub fn journal_all(&self) -> String {
        let o = self.exec(&["journalctl", "--no-pager", "-n", "300"]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Wait until `property` of `unit` satisfies `pred`; return its value.
    pub async fn wait_property(
        &self,
        unit: &str,
        property: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let o = self.exec(&["systemctl", "show", "-P", property, unit]);
            let v = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            if o.status.success() && pred(&v) {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "{unit}: {property} still {v:?} after {timeout:?}\n--- status ---\n{}\n--- journal ---\n{}",
                    String::from_utf8_lossy(
                        &self
                            .exec(&["systemctl", "status", "--no-pager", unit])
                            .stdout
                    ),
                    self.journal_all()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait until `unit`'s journal (`-o cat`) has a line matching `pred`,
    /// counting from line `skip`; return that line.
    pub async fn wait_journal(
        &self,
        unit: &str,
        timeout: Duration,
        what: &str,
        skip: usize,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let j = self.journal(unit);
            if let Some(l) = j.lines().skip(skip).find(|l| pred(l)) {
                return l.to_owned();
            }
            if Instant::now() > deadline {
                panic!("{unit}: no journal line for {what} within {timeout:?}\n{j}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait until `key` in `etcd` holds a value `pred` accepts; return it.
    /// On timeout, panic with the value seen and this host's journal.
    pub async fn wait_key(
        &self,
        etcd: &crate::EtcdCluster,
        key: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = etcd.get_value(key).await.filter(|v| pred(v)) {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "{key}: no accepted value within {timeout:?} (now {:?})\n--- journal ---\n{}",
                    etcd.get_value(key).await,
                    self.journal_all()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The unit's main PID inside the host (0 if none).
    pub fn main_pid(&self, unit: &str) -> u32 {
        self.show(unit, "MainPID").parse().unwrap_or(0)
    }
}

impl Drop for SystemdHost {
    fn drop(&mut self) {
        // The host first, so no unit restarts a sibling once it is gone.
        let siblings = self.siblings.lock().map(|s| s.clone()).unwrap_or_default();
        for names in [vec![self.name.clone()], siblings] {
            if names.is_empty() {
                continue;
            }
            let _ = Command::new("docker")
                .env_remove("DOCKER_HOST")
                .args(["rm", "-f"])
                .args(&names)
                .output();
        }
    }
}
