//! Bad input to the library, table-driven, against a real etcd: every case
//! is refused with a message, nothing panics, and nothing is written.
//! (The tools' own tables are in sidekick.rs and discover.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use discovery::{
    ConnectOptions, Error, Password, Prefix, RegisterOptions, WatchOptions, parse_duration,
    validate_key,
};
use harness::Etcd;

/// Counts refusals; each must carry `want` in its message.
#[derive(Default)]
struct Cases(usize);

impl Cases {
    fn check(&mut self, label: &str, r: Result<(), Error>, want: &str) {
        self.0 += 1;
        let e = r.expect_err(label);
        let msg = e.to_string();
        assert!(msg.contains(want), "{label}: expected {want:?} in {msg:?}");
    }
}

/// A real etcd, our client, and the revision before any case ran: each
/// case that talks to etcd ends with [`Setup::wrote_nothing`].
struct Setup {
    etcd: Etcd,
    c: discovery::Client,
    before: i64,
}

impl Setup {
    async fn new() -> Self {
        let etcd = Etcd::single().await;
        let c = etcd.client().await;
        let before = etcd.revision().await;
        Self { etcd, c, before }
    }

    /// No data lost and none made up: the revision is where it was, plus
    /// what the test wrote itself.
    async fn wrote_nothing(&self, own_writes: i64) {
        assert_eq!(self.etcd.revision().await, self.before + own_writes);
    }
}

fn ttl(s: u64) -> RegisterOptions {
    RegisterOptions::new(Duration::from_secs(s))
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_keys_are_refused_by_register_and_put() {
    let s = Setup::new().await;
    let long_key = format!("/{}", "k".repeat(2000));
    let mut n = Cases::default();
    for (k, want) in [
        ("", "empty"),
        ("services/m/1", "start with '/'"),
        ("/services//1", "empty segment"),
        ("/services/m/", "ends with '/'"),
        ("/services/m 1", "whitespace"),
        ("/services/m\u{1}", "control character"),
        (long_key.as_str(), "limit"),
        ("/", "just '/'"),
    ] {
        n.check(
            &format!("register {k:?}"),
            s.c.register(k, "v", ttl(8)).map(drop),
            want,
        );
        n.check(&format!("put {k:?}"), s.c.put(k, "v").await.map(drop), want);
    }
    assert_eq!(n.0, 16);
    s.wrote_nothing(0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_ttls_and_intervals_are_refused() {
    let s = Setup::new().await;
    let c = &s.c;
    let mut n = Cases::default();
    n.check(
        "ttl 0",
        c.register("/services/x", "v", ttl(0)).map(drop),
        "TTL is 0",
    );
    n.check(
        "ttl 1",
        c.register("/services/x", "v", ttl(1)).map(drop),
        "minimum",
    );
    n.check(
        "ttl 1.5s",
        c.register(
            "/services/x",
            "v",
            RegisterOptions::new(Duration::from_millis(1500)),
        )
        .map(drop),
        "whole number",
    );
    n.check(
        "ttl max",
        c.register("/services/x", "v", ttl(9_000_000_001)).map(drop),
        "maximum",
    );
    n.check(
        "interval = ttl",
        c.register(
            "/services/x",
            "v",
            ttl(8).with_interval(Duration::from_secs(8)),
        )
        .map(drop),
        "shorter than the TTL",
    );
    assert_eq!(n.0, 5);
    s.wrote_nothing(0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_prefixes_and_revisions_are_refused() {
    let s = Setup::new().await;
    let c = &s.c;
    let mut n = Cases::default();
    n.check(
        "relative prefix",
        c.watch_prefix("services", WatchOptions::new()).map(drop),
        "start with '/'",
    );
    n.check(
        "negative revision",
        c.watch_prefix("/services", WatchOptions::new().with_start_revision(-1))
            .map(drop),
        "negative",
    );
    n.check(
        "prefix //",
        c.get_prefix("/a//").await.map(drop),
        "empty segment",
    );
    n.check(
        "members of a bad prefix",
        c.members("x").await.map(drop),
        "start with '/'",
    );
    assert_eq!(n.0, 4);
    s.wrote_nothing(0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_connection_options_are_refused() {
    // None of these reaches an etcd, so there is none to check.
    let mut n = Cases::default();
    n.check(
        "ftp endpoint",
        ConnectOptions::new()
            .with_endpoints(["ftp://h:1"])
            .connect()
            .await
            .map(drop),
        "scheme",
    );
    n.check(
        "no port",
        ConnectOptions::new()
            .with_endpoints(["h"])
            .connect()
            .await
            .map(drop),
        "no port",
    );
    // As etcdctl: https without a CA is tried with the system's CAs, not
    // refused before any I/O; nothing listens there, so it is unreachable.
    n.check(
        "https without CA",
        ConnectOptions::new()
            .with_endpoints(["https://127.0.0.1:1"])
            .connect()
            .await
            .map(drop),
        "did not answer at https://127.0.0.1:1",
    );
    n.check(
        "cert without key",
        ConnectOptions::new()
            .with_client_cert_file("/tmp/c.pem")
            .connect()
            .await
            .map(drop),
        "private key",
    );
    n.check(
        "password without user",
        ConnectOptions::new()
            .with_password(Password::new("p"))
            .connect()
            .await
            .map(drop),
        "without a user",
    );
    n.check(
        "unreachable",
        ConnectOptions::new()
            .with_endpoints(["127.0.0.1:1"])
            .with_dial_timeout(Duration::from_millis(300))
            .connect()
            .await
            .map(drop),
        "did not answer at http://127.0.0.1:1",
    );
    assert_eq!(n.0, 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn config_that_does_not_fit_is_refused() {
    #[derive(serde::Deserialize, Debug)]
    struct Cfg {
        #[allow(dead_code)]
        port: u16,
    }
    let s = Setup::new().await;
    let c = &s.c;
    let mut raw = s.etcd.raw_client().await;
    raw.put("/config/bad-type/port", "\"high\"", None)
        .await
        .unwrap();
    raw.put("/config/bad-json", "{not json", None)
        .await
        .unwrap();
    raw.put("/config/bad-bytes/port", vec![0xffu8, 0xfe], None)
        .await
        .unwrap();
    let mut n = Cases::default();
    n.check(
        "config of the wrong type",
        c.config::<Cfg>("/config/bad-type").await.map(drop),
        "does not fit",
    );
    n.check(
        "config that is not JSON",
        c.config::<Cfg>("/config/bad-json").await.map(drop),
        "not valid JSON",
    );
    n.check(
        "config that is not UTF-8",
        c.config::<Cfg>("/config/bad-bytes").await.map(drop),
        "not UTF-8",
    );
    assert_eq!(n.0, 3);
    // Only the three config keys above were written.
    s.wrote_nothing(3).await;
}

#[test]
fn the_plain_parsers_refuse_bad_input() {
    let mut n = Cases::default();
    n.check(
        "duration -1",
        parse_duration("-1").map(drop).map_err(Error::InvalidOption),
        "negative",
    );
    n.check(
        "duration abc",
        parse_duration("abc")
            .map(drop)
            .map_err(Error::InvalidOption),
        "not a duration",
    );
    n.check("empty prefix", Prefix::new("").map(drop), "empty");
    n.check("key /", validate_key("/"), "just '/'");
    assert_eq!(n.0, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn values_that_are_not_utf8_are_not_bad_input() {
    // They pass through intact.
    let s = Setup::new().await;
    let bytes = vec![0u8, 0xff, 0x80, b'\n'];
    s.c.put("/services/bytes", bytes.clone()).await.unwrap();
    assert_eq!(
        s.c.get("/services/bytes").await.unwrap().unwrap().value(),
        &bytes[..]
    );
}
