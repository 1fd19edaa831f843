//! What the `discover serve` tests share: the server as a real child
//! process on ports the kernel picked (it logs them, so no port is chosen
//! by the test and raced for), and Debian's `dig` as the client, with its
//! output parsed.
#![allow(dead_code)]

use std::time::Duration;

use harness::proc::discover;
use harness::{Etcd, Proc};

/// A running `discover serve`.
pub struct Serve {
    /// The process.
    pub proc: Proc,
    /// Its DNS port (UDP and TCP) on 127.0.0.1.
    pub dns: u16,
    /// Its HTTP port, with `--http`.
    pub http: Option<u16>,
}

/// The port in a log line's `field=127.0.0.1:PORT`.
fn port_of(line: &str, field: &str) -> u16 {
    let at = line
        .find(&format!("{field}=127.0.0.1:"))
        .unwrap_or_else(|| panic!("no {field}= in {line:?}"));
    line[at + field.len() + 11..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|e| panic!("{field} port in {line:?}: {e}"))
}

impl Serve {
    /// `discover serve ARGS --dns 127.0.0.1:0 [--http 127.0.0.1:0]`,
    /// waiting until its first snapshot is in.
    pub async fn start(etcd: &Etcd, args: &[&str], http: bool) -> Self {
        let s = Self::spawn(etcd, args, http).await;
        s.proc
            .wait_stderr(Duration::from_secs(30), "the first snapshot", |l| {
                l.contains("first snapshot in")
            })
            .await;
        s
    }

    /// The same, returning as soon as the sockets are bound.
    pub async fn spawn(etcd: &Etcd, args: &[&str], http: bool) -> Self {
        let mut all = vec!["serve", "--dns", "127.0.0.1:0"];
        if http {
            all.extend(["--http", "127.0.0.1:0"]);
        }
        all.extend_from_slice(args);
        Self::spawn_cmd(discover(etcd, &all), http).await
    }

    /// Any command line that runs `discover serve --dns 127.0.0.1:0`.
    pub async fn spawn_cmd(cmd: std::process::Command, http: bool) -> Self {
        let proc = Proc::spawn(cmd);
        let line = proc
            .wait_stderr(Duration::from_secs(30), "the DNS address", |l| {
                l.contains("answering DNS")
            })
            .await;
        let dns = port_of(&line, "dns");
        let http = if http {
            let line = proc
                .wait_stderr(Duration::from_secs(30), "the HTTP address", |l| {
                    l.contains("serving Prometheus SD")
                })
                .await;
            Some(port_of(&line, "http"))
        } else {
            None
        };
        Self { proc, dns, http }
    }

    /// `dig` against this server.
    pub async fn dig(&self, args: &[&str]) -> Dig {
        dig(self.dns, args).await
    }

    /// Poll `dig ARGS` until `ok` holds for its answer; panics with the
    /// last answer and the server's log after `timeout`.
    pub async fn dig_until(
        &self,
        timeout: Duration,
        what: &str,
        args: &[&str],
        ok: impl Fn(&Dig) -> bool,
    ) -> Dig {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let d = self.dig(args).await;
            if ok(&d) {
                return d;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\nlast dig {args:?}:\n{}\n{}",
                    d.raw,
                    self.proc.dump()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// One sample of the server's `/metrics` (`name{labels}` exactly).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let port = self.http.expect("started with --http");
        let body = http_get(port, "/metrics").await?.1;
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{series} ")))
            .and_then(|v| v.trim().parse().ok())
    }
}

/// One resource record as dig prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rr {
    /// Owner name, absolute.
    pub name: String,
    /// TTL in seconds.
    pub ttl: u32,
    /// Type (`A`, `SRV`, …).
    pub rtype: String,
    /// The data as dig prints it.
    pub data: String,
}

/// A dig answer.
#[derive(Clone, Debug, Default)]
pub struct Dig {
    /// `NOERROR`, `NXDOMAIN`, …; empty when no answer came.
    pub status: String,
    /// Header flags: `qr`, `aa`, `tc`, …
    pub flags: Vec<String>,
    /// The OPT record's UDP size, when the answer had EDNS.
    pub udp: Option<u16>,
    /// The answer section.
    pub answer: Vec<Rr>,
    /// The authority section.
    pub authority: Vec<Rr>,
    /// The additional section (without OPT).
    pub additional: Vec<Rr>,
    /// dig's whole output, for failure messages.
    pub raw: String,
}

impl Dig {
    /// Whether the header has `flag`.
    pub fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// The answer's data of type `t`, sorted.
    pub fn data(&self, t: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .answer
            .iter()
            .filter(|r| r.rtype == t)
            .map(|r| r.data.clone())
            .collect();
        v.sort();
        v
    }
}

/// `dig @127.0.0.1 -p PORT +norec +tries=1 +time=3 ARGS`, parsed.
pub async fn dig(port: u16, args: &[&str]) -> Dig {
    dig_at("127.0.0.1", port, args).await
}

/// `dig @ADDR -p PORT +norec +tries=1 +time=3 ARGS`, parsed.
pub async fn dig_at(addr: &str, port: u16, args: &[&str]) -> Dig {
    let out = tokio::process::Command::new("dig")
        .arg(format!("@{addr}"))
        .args(["-p", &port.to_string()])
        .args(["+norec", "+tries=1", "+time=3"])
        .args(args)
        .output()
        .await
        .expect("run dig (bind9-dnsutils)");
    parse_dig(&String::from_utf8_lossy(&out.stdout))
}

pub fn parse_dig(raw: &str) -> Dig {
    let mut d = Dig {
        raw: raw.to_owned(),
        ..Dig::default()
    };
    let mut section: Option<&str> = None;
    for line in raw.lines() {
        if let Some(h) = line.split("status: ").nth(1) {
            d.status = h.split(',').next().unwrap_or_default().to_owned();
        } else if let Some(f) = line.strip_prefix(";; flags:") {
            d.flags = f
                .split(';')
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect();
        } else if let Some(u) = line.split("udp: ").nth(1)
            && line.starts_with("; EDNS")
        {
            d.udp = u.trim().parse().ok();
        } else if let Some(s) = line
            .strip_prefix(";; ")
            .and_then(|l| l.strip_suffix(" SECTION:"))
        {
            section = Some(match s {
                "ANSWER" => "answer",
                "AUTHORITY" => "authority",
                "ADDITIONAL" => "additional",
                _ => "other",
            });
        } else if line.trim().is_empty() {
            section = None;
        } else if let Some(sec) = section
            && !line.starts_with(';')
        {
            let mut it = line.split_whitespace();
            let (Some(name), Some(ttl), Some(_class), Some(rtype)) =
                (it.next(), it.next(), it.next(), it.next())
            else {
                continue;
            };
            let rr = Rr {
                name: name.to_owned(),
                ttl: ttl.parse().unwrap_or(u32::MAX),
                rtype: rtype.to_owned(),
                data: it.collect::<Vec<_>>().join(" "),
            };
            match sec {
                "answer" => d.answer.push(rr),
                "authority" => d.authority.push(rr),
                "additional" => d.additional.push(rr),
                _ => {}
            }
        }
    }
    d
}

/// `GET path` on 127.0.0.1:`port` with Debian's curl: (status, body), or
/// None when nothing answered.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", "-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .await
        .expect("run curl");
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n')?;
    Some((code.trim().parse().ok()?, body.to_owned()))
}

/// Put `key = value` through the library.
pub async fn put(etcd: &Etcd, key: &str, value: &str) -> i64 {
    etcd.client().await.put(key, value).await.expect("put")
}
