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

#[tokio::test(flavor = "multi_thread")]
async fn the_library_refuses_bad_input_and_writes_nothing() {
    let etcd = Etcd::single().await;
    let c = etcd.client().await;
    let before = etcd.revision().await;
    let ttl = |s: u64| RegisterOptions::new(Duration::from_secs(s));
    let long_key = format!("/{}", "k".repeat(2000));
    let mut n = 0;
    let mut check = |label: &str, r: Result<(), Error>, want: &str| {
        n += 1;
        let e = r.expect_err(label);
        let msg = e.to_string();
        assert!(msg.contains(want), "{label}: expected {want:?} in {msg:?}");
    };
    // Keys.
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
        check(
            &format!("register {k:?}"),
            c.register(k, "v", ttl(8)).map(drop),
            want,
        );
        check(&format!("put {k:?}"), c.put(k, "v").await.map(drop), want);
    }
    // TTLs and intervals.
    check(
        "ttl 0",
        c.register("/services/x", "v", ttl(0)).map(drop),
        "TTL is 0",
    );
    check(
        "ttl 1",
        c.register("/services/x", "v", ttl(1)).map(drop),
        "minimum",
    );
    check(
        "ttl 1.5s",
        c.register(
            "/services/x",
            "v",
            RegisterOptions::new(Duration::from_millis(1500)),
        )
        .map(drop),
        "whole number",
    );
    check(
        "ttl max",
        c.register("/services/x", "v", ttl(9_000_000_001)).map(drop),
        "maximum",
    );
    check(
        "interval = ttl",
        c.register(
            "/services/x",
            "v",
            ttl(8).with_interval(Duration::from_secs(8)),
        )
        .map(drop),
        "shorter than the TTL",
    );
    // Prefixes and revisions.
    check(
        "relative prefix",
        c.watch_prefix("services", WatchOptions::new()).map(drop),
        "start with '/'",
    );
    check(
        "negative revision",
        c.watch_prefix("/services", WatchOptions::new().with_start_revision(-1))
            .map(drop),
        "negative",
    );
    check(
        "prefix //",
        c.get_prefix("/a//").await.map(drop),
        "empty segment",
    );
    check(
        "members of a bad prefix",
        c.members("x").await.map(drop),
        "start with '/'",
    );
    // Connection options.
    check(
        "ftp endpoint",
        ConnectOptions::new()
            .with_endpoints(["ftp://h:1"])
            .connect()
            .await
            .map(drop),
        "scheme",
    );
    check(
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
    check(
        "https without CA",
        ConnectOptions::new()
            .with_endpoints(["https://127.0.0.1:1"])
            .connect()
            .await
            .map(drop),
        "did not answer at https://127.0.0.1:1",
    );
    check(
        "cert without key",
        ConnectOptions::new()
            .with_client_cert_file("/tmp/c.pem")
            .connect()
            .await
            .map(drop),
        "private key",
    );
    check(
        "password without user",
        ConnectOptions::new()
            .with_password(Password::new("p"))
            .connect()
            .await
            .map(drop),
        "without a user",
    );
    check(
        "unreachable",
        ConnectOptions::new()
            .with_endpoints(["127.0.0.1:1"])
            .with_dial_timeout(Duration::from_millis(300))
            .connect()
            .await
            .map(drop),
        "did not answer at http://127.0.0.1:1",
    );
    // Config that does not fit.
    #[derive(serde::Deserialize, Debug)]
    struct Cfg {
        #[allow(dead_code)]
        port: u16,
    }
    let mut raw = etcd.raw_client().await;
    raw.put("/config/bad-type/port", "\"high\"", None)
        .await
        .unwrap();
    raw.put("/config/bad-json", "{not json", None)
        .await
        .unwrap();
    raw.put("/config/bad-bytes/port", vec![0xffu8, 0xfe], None)
        .await
        .unwrap();
    let written = etcd.revision().await;
    check(
        "config of the wrong type",
        c.config::<Cfg>("/config/bad-type").await.map(drop),
        "does not fit",
    );
    check(
        "config that is not JSON",
        c.config::<Cfg>("/config/bad-json").await.map(drop),
        "not valid JSON",
    );
    check(
        "config that is not UTF-8",
        c.config::<Cfg>("/config/bad-bytes").await.map(drop),
        "not UTF-8",
    );
    // Plain parsers.
    check(
        "duration -1",
        parse_duration("-1").map(drop).map_err(Error::InvalidOption),
        "negative",
    );
    check(
        "duration abc",
        parse_duration("abc")
            .map(drop)
            .map_err(Error::InvalidOption),
        "not a duration",
    );
    check("empty prefix", Prefix::new("").map(drop), "empty");
    check("key /", validate_key("/"), "just '/'");
    assert!(n >= 30, "{n} cases");
    // No data lost and none made up: only the three config keys above were written.
    assert_eq!(etcd.revision().await, written);
    assert_eq!(written, before + 3);
    // Non-UTF-8 values are not bad input: they pass through intact.
    let bytes = vec![0u8, 0xff, 0x80, b'\n'];
    c.put("/services/bytes", bytes.clone()).await.unwrap();
    assert_eq!(
        c.get("/services/bytes").await.unwrap().unwrap().value(),
        &bytes[..]
    );
    println!("BADINPUT library cases: {n}");
}
