//! Loopback TCP ports reserved for one test at a time: the harness's one
//! way to pick a port that a server started later will bind.
//!
//! Picking a free port (bind port 0, read it, close) and handing it to a
//! server that binds it a moment later is a race: nextest runs each test in
//! its own process, six at once, and other checkouts' suites run on the same
//! machine, so another test's etcd or nginx could take the port in between.
//! A [`Port`] closes that gap:
//!
//! - it holds an exclusive `flock` on `/tmp/discovery-test-ports/PORT.lock`
//!   for as long as the value lives; the directory is machine-wide (not
//!   under `$TMPDIR` or the checkout), so every process of every checkout
//!   sees the same locks. The kernel drops the lock when the holder dies,
//!   even by SIGKILL, so a crashed test leaks nothing;
//! - the port is chosen among those not locked and not bound now (a bind on
//!   127.0.0.1 succeeds), so a server that does not use this scheme is
//!   stepped around too;
//! - it lies below the kernel's ephemeral range
//!   (`/proc/sys/net/ipv4/ip_local_port_range`), so no outgoing connection
//!   and no bind to port 0 (Docker's published ports included) can take it
//!   while its server is down, such as an etcd member killed and about to
//!   be restarted on it.
//!
//! Keep the `Port` alive as long as the server may bind it (a field beside
//! the server's process), and pass [`Port::number`] or [`Port::addr`] on.
//! A server that binds port 0 itself and reports it (the example apps'
//! `LISTEN=127.0.0.1:0`), or a listener the test binds and keeps, needs no
//! reservation.
//!
//! ```no_run
//! let lb = harness::ports::Port::reserve();
//! // nginx -g "... listen 127.0.0.1:{lb} ..." ; curl http://{}/ , lb.addr()
//! # let _ = (lb.number(), lb.addr());
//! let backends = harness::ports::reserve(3);
//! # let _ = backends;
//! ```

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// Where the lock files live: one directory for the whole machine.
pub const LOCK_DIR: &str = "/tmp/discovery-test-ports";

/// The lowest port handed out: below it live well-known services.
const LOWEST: u16 = 10_000;

/// A loopback TCP port reserved for this process until dropped.
pub struct Port {
    /// The port.
    number: u16,
    /// The `flock` that reserves it, released on drop (or at exit).
    _lock: Flock<File>,
}

impl std::fmt::Debug for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Port({})", self.number)
    }
}

impl std::fmt::Display for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.number)
    }
}

impl Port {
    /// Reserve a port that no other test holds and nothing listens on.
    ///
    /// Panics (with the range and the lock directory) if none is found in
    /// 2,000 tries, which means the range is exhausted or the directory is
    /// unusable.
    pub fn reserve() -> Self {
        let (from, to) = range();
        let dir = lock_dir();
        let span = u32::from(to - from);
        let start = fastrand::u32(..span);
        for i in 0..span.min(2_000) {
            let number = from + ((start + i) % span) as u16;
            if let Some(port) = Self::try_reserve(&dir, number) {
                return port;
            }
        }
        panic!(
            "no loopback port in {from}..{to} is both unlocked (in {}) and unbound",
            dir.display()
        );
    }

    /// Take `number` if its lock is free and nothing is bound to it.
    fn try_reserve(dir: &Path, number: u16) -> Option<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o666)
            .open(dir.join(format!("{number}.lock")))
            .ok()?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).ok()?;
        // Held: no test of ours binds it now. Something else may still
        // listen on it (a server that does not reserve its port).
        std::net::TcpListener::bind(("127.0.0.1", number)).ok()?;
        // For whoever looks into the directory: who holds it.
        let holder = format!("{} {}\n", std::process::id(), crate::checkout());
        let _ = lock.set_len(0);
        let _ = lock.write_all_at(holder.as_bytes(), 0);
        Some(Self {
            number,
            _lock: lock,
        })
    }

    /// The port number.
    pub fn number(&self) -> u16 {
        self.number
    }

    /// `127.0.0.1:PORT`, for a server's listen flag or a client's address.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.number)
    }
}

/// `n` distinct reserved ports.
pub fn reserve(n: usize) -> Vec<Port> {
    (0..n).map(|_| Port::reserve()).collect()
}

/// The numbers of `ports`, for code that takes plain `u16`s (keep `ports`
/// alive beside them).
pub fn numbers(ports: &[Port]) -> Vec<u16> {
    ports.iter().map(Port::number).collect()
}

/// Ports handed out: from [`LOWEST`] up to the start of the kernel's
/// ephemeral range (or 10000..30000 if that range starts too low to leave
/// room, in which case outgoing connections may compete).
fn range() -> (u16, u16) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if ephemeral_low >= LOWEST + 2_000 {
        (LOWEST, ephemeral_low)
    } else {
        (LOWEST, 30_000)
    }
}

/// [`LOCK_DIR`], created world-writable (with the sticky bit, as `/tmp`)
/// so that every user's tests share it.
fn lock_dir() -> PathBuf {
    let dir = PathBuf::from(LOCK_DIR);
    if !dir.is_dir() {
        std::fs::create_dir_all(&dir).expect("create the port lock directory");
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777));
    }
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserved_port_is_not_handed_out_again_until_dropped() {
        let a = Port::reserve();
        let dir = lock_dir();
        // Held by us: another reservation of the same number fails, also
        // through a second open of the file (as another process would).
        assert!(Port::try_reserve(&dir, a.number()).is_none());
        let many = reserve(20);
        assert!(many.iter().all(|p| p.number() != a.number()));
        let (from, to) = range();
        assert!(many.iter().all(|p| (from..to).contains(&p.number())));
        let n = a.number();
        // Another process (util-linux's flock, as a test in another
        // process or checkout would) cannot take it either, until we let go.
        let lock_file = dir.join(format!("{n}.lock"));
        let other = || {
            std::process::Command::new("flock")
                .args(["-n", "-E", "75"])
                .arg(&lock_file)
                .arg("true")
                .status()
                .unwrap()
                .code()
        };
        assert_eq!(other(), Some(75), "another process took a held port");
        drop(a);
        assert_eq!(other(), Some(0), "released on drop");
        let again = Port::try_reserve(&dir, n).expect("free once dropped");
        // A port something listens on is never handed out.
        let l = std::net::TcpListener::bind(("127.0.0.1", again.number())).unwrap();
        drop(again);
        assert!(Port::try_reserve(&dir, n).is_none(), "bound, so not free");
        drop(l);
    }
}
