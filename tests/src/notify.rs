//! A stand-in for systemd's notification socket, to see READY=1, STATUS=
//! and WATCHDOG=1 as a unit manager would.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Collects every datagram sent to it.
pub struct NotifySocket {
    path: PathBuf,
    _dir: tempfile::TempDir,
    messages: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl NotifySocket {
    /// Bind a fresh socket.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let messages: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
        let m = messages.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            loop {
                match sock.recv(&mut buf) {
                    Ok(n) => {
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        for line in text.lines() {
                            m.lock().unwrap().push((Instant::now(), line.to_owned()));
                        }
                    }
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut =>
                    {
                        if Arc::strong_count(&m) == 1 {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        Self {
            path,
            _dir: dir,
            messages,
        }
    }

    /// The value for `NOTIFY_SOCKET`.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Every line received so far (`READY=1`, `STATUS=...`).
    pub fn lines(&self) -> Vec<String> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// Wait for a line satisfying `pred`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        crate::wait::eventually(
            timeout,
            format!("{what}; notifications so far: {:?}", self.lines()),
            || self.lines().into_iter().find(|l| pred(l)),
        )
        .await
    }
}

impl Default for NotifySocket {
    fn default() -> Self {
        Self::new()
    }
}
