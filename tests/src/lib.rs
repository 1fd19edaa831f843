//! The shared end-to-end harness: real `etcd` processes (one, or a cluster
//! that can lose and regain members), real Docker containers from a locally
//! built image, our real binaries as child processes, and an independent
//! raw etcd watch to check what they did.
//!
//! Everything cleans up on drop, including when a test panics.
//!
//! Ports: a server started later gets a port from [`Port::reserve`] (or
//! [`ports::reserve`]), kept alive as long as the server may bind it. The
//! reservation holds across nextest's test processes and across checkouts
//! on the machine (a `flock` per port in one machine-wide directory); see
//! [`ports`]. Picking a free port and releasing it is not offered: another
//! test could take it before the server binds it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(missing_debug_implementations)]

pub mod audit;
pub mod deb;
pub mod docker;
pub mod docker_tls;
pub mod etcd;
pub mod host_agent;
pub mod install;
pub mod notify;
pub mod pki;
pub mod podman;
pub mod ports;
pub mod proc;
pub mod raw;
pub mod socket_proxy;
pub mod systemd;
pub mod tcp_proxy;
pub mod wait;
pub mod web;

pub use docker::{Docker, TEST_IMAGE, TestContainer};
pub use etcd::{Etcd, EtcdCluster, EtcdConfig};
pub use ports::Port;
pub use proc::{Proc, bin_path};
pub use raw::{RawEvent, RawWatch};
pub use wait::{eventually, eventually_async};

/// This checkout's workspace directory. Test containers carry it as the
/// value of their [`docker::TEST_LABEL`] and test etcds keep their data under
/// [`scratch_dir`], so `make sweep` removes this checkout's leftovers and
/// never another run's.
pub fn checkout() -> &'static str {
    let tests = env!("CARGO_MANIFEST_DIR");
    tests.strip_suffix("/tests").unwrap_or(tests)
}

/// This checkout's workspace directory, as a path (examples, units and
/// the Makefile live under it).
pub fn repo() -> std::path::PathBuf {
    std::path::PathBuf::from(checkout())
}

/// A directory of this checkout's own under the system's temp dir, for
/// etcd data dirs: `$TMPDIR/discovery-test<checkout with / as _>`.
pub fn scratch_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("discovery-test{}", checkout().replace('/', "_")));
    std::fs::create_dir_all(&dir).expect("create the scratch dir");
    dir
}

/// A key prefix unique to one test, so tests can share an etcd in parallel.
pub fn unique_prefix(test: &str) -> String {
    format!("/t/{test}-{:08x}", fastrand::u32(..))
}
