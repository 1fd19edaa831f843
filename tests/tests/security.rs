//! TLS, auth, and secrets: the tools against a secured etcd.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use harness::etcd::{ROOT_PASSWORD, SIDEKICK_PASSWORD, enable_auth};
use harness::pki::Pki;
use harness::proc::{Proc, bin_path};
use harness::{EtcdCluster, EtcdConfig, RawWatch, eventually, eventually_async};
use nix::sys::signal::Signal;

fn tool(bin: &str, etcd: &EtcdCluster) -> Command {
    let mut c = Proc::command(bin);
    c.env("ETCDCTL_ENDPOINTS", etcd.endpoints_arg())
        .env_remove("DOCKER_HOST");
    c
}

fn output(mut c: Command) -> (i32, String, String) {
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_with_client_certificates_for_the_library_and_both_tools() {
    let pki = Pki::new();
    let etcd = EtcdCluster::start(EtcdConfig::new(1).with_tls(pki.etcd_files())).await;
    assert!(etcd.endpoint(0).starts_with("https://"));

    // The library.
    let client = etcd.client().await;
    client.put("/services/tls/lib", "1").await.unwrap();

    // sidekick through the flags.
    let mut sk = tool("sidekick", &etcd);
    sk.args(["--key", "/services/tls/1", "--ip", "10.9.0.1", "--ttl", "3"])
        .arg("--cacert")
        .arg(pki.path("ca.pem"))
        .arg("--cert")
        .arg(pki.path("client.pem"))
        .arg("--tls-key")
        .arg(pki.path("client.key"));
    let mut sk = Proc::spawn(sk);
    eventually_async(
        Duration::from_secs(10),
        "sidekick registered over TLS",
        || async { client.get("/services/tls/1").await.unwrap() },
    )
    .await;

    // discover through etcdctl's environment.
    let mut d = tool("discover", &etcd);
    d.args(["get", "/services/tls", "--format", "values"])
        .env("ETCDCTL_CACERT", pki.path("ca.pem"))
        .env("ETCDCTL_CERT", pki.path("client.pem"))
        .env("ETCDCTL_KEY", pki.path("client.key"));
    let (code, out, err) = output(d);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "10.9.0.1\n1\n");

    // discover through systemd credentials: no flag and no variable names
    // a file, so etcd-cacert, etcd-cert and etcd-key come from
    // $CREDENTIALS_DIRECTORY (what `LoadCredential=etcd-key:…` gives a
    // unit). etcd asks for a client certificate, so all three were read.
    let creds = tempfile::tempdir().unwrap();
    for (name, file) in [
        ("etcd-cacert", "ca.pem"),
        ("etcd-cert", "client.pem"),
        ("etcd-key", "client.key"),
    ] {
        std::fs::copy(pki.path(file), creds.path().join(name)).unwrap();
    }
    let get = || {
        let mut d = tool("discover", &etcd);
        d.args(["get", "/services/tls", "--format", "values"])
            .env("CREDENTIALS_DIRECTORY", creds.path());
        output(d)
    };
    let (code, out, err) = get();
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "10.9.0.1\n1\n");
    // A certificate without its key is a usage error, before any I/O.
    std::fs::remove_file(creds.path().join("etcd-key")).unwrap();
    let (code, _, err) = get();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("needs its private key"), "{err}");
    // Without both, etcd refuses the handshake (it asks every client for a
    // certificate): the credentials were what made it work.
    std::fs::remove_file(creds.path().join("etcd-cert")).unwrap();
    let (code, _, err) = get();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("requires a client certificate"), "{err}");

    sk.signal(Signal::SIGTERM);
    assert_eq!(sk.wait_exit(Duration::from_secs(3)).await.code(), Some(0));
}

/// etcdctl's conventions: an https endpoint without a CA is tried with the
/// system's CAs (not refused), and --insecure-skip-tls-verify connects
/// whatever signed etcd's certificate, with a warning.
#[tokio::test(flavor = "multi_thread")]
async fn https_without_a_ca_uses_the_system_roots_and_insecure_skip_verify_is_honoured() {
    let pki = Pki::new();
    let etcd = EtcdCluster::start(EtcdConfig::new(1).with_tls(pki.etcd_files())).await;
    etcd.client()
        .await
        .put("/services/skip/1", "10.9.0.9")
        .await
        .unwrap();
    let client_cert: [std::ffi::OsString; 4] = [
        "--cert".into(),
        pki.path("client.pem").into_os_string(),
        "--tls-key".into(),
        pki.path("client.key").into_os_string(),
    ];
    // No CA: the system's CAs do not know the harness's CA, so the
    // handshake fails and says why (not a refusal before any I/O).
    let mut d = tool("discover", &etcd);
    d.args([
        "get",
        "/services/skip",
        "--format",
        "values",
        "--dial-timeout",
        "2s",
    ])
    .args(&client_cert);
    let (code, out, err) = output(d);
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert!(
        err.contains("not signed by a CA this system trusts") && err.contains("--cacert"),
        "https without a CA: {err}"
    );
    // The same with the flag: served, and warned about.
    let mut d = tool("discover", &etcd);
    d.args([
        "get",
        "/services/skip",
        "--format",
        "values",
        "--insecure-skip-tls-verify",
    ])
    .args(&client_cert);
    let (code, out, err) = output(d);
    assert_eq!((code, out.as_str()), (0, "10.9.0.9\n"), "{err}");
    assert!(
        err.contains("not verifying etcd's TLS certificate"),
        "{err}"
    );
    // And through etcdctl's variable, for a long-running sidekick.
    let mut sk = tool("sidekick", &etcd);
    sk.args([
        "--key",
        "/services/skip/2",
        "--ip",
        "10.9.0.10",
        "--ttl",
        "3",
    ])
    .args(&client_cert)
    .env("ETCDCTL_INSECURE_SKIP_TLS_VERIFY", "true");
    let mut sk = Proc::spawn(sk);
    let client = etcd.client().await;
    eventually_async(
        Duration::from_secs(10),
        "sidekick registered without verifying etcd's certificate",
        || async { client.get("/services/skip/2").await.unwrap() },
    )
    .await;
    sk.signal(Signal::SIGTERM);
    assert_eq!(sk.wait_exit(Duration::from_secs(3)).await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_refusals_name_the_problem() {
    let pki = Pki::new();
    let etcd = EtcdCluster::start(EtcdConfig::new(1).with_tls(pki.etcd_files())).await;
    let get = |extra: &[&std::ffi::OsStr]| {
        let mut d = tool("discover", &etcd);
        d.args([
            "get",
            "/services",
            "--dial-timeout",
            "2s",
            "--command-timeout",
            "3s",
        ])
        .args(extra);
        output(d)
    };
    // A CA that did not sign etcd's certificate.
    let (code, _, err) = get(&[
        "--cacert".as_ref(),
        pki.path("other-ca.pem").as_os_str(),
        "--cert".as_ref(),
        pki.path("client.pem").as_os_str(),
        "--tls-key".as_ref(),
        pki.path("client.key").as_os_str(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("TLS handshake")
            && err.contains("not signed by the CA given")
            && err.contains("--cacert")
            && err.contains("UnknownIssuer"),
        "wrong CA: {err}"
    );
    println!("SECURITY wrong CA -> exit {code}: {}", err.trim());
    // No client certificate, while etcd requires one.
    let (code, _, err) = get(&["--cacert".as_ref(), pki.path("ca.pem").as_os_str()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("TLS handshake")
            && err.contains("requires a client certificate")
            && err.contains("--cert and --tls-key"),
        "missing client cert: {err}"
    );
    println!(
        "SECURITY no client certificate -> exit {code}: {}",
        err.trim()
    );
    // A client certificate from another CA.
    let (code, _, err) = get(&[
        "--cacert".as_ref(),
        pki.path("ca.pem").as_os_str(),
        "--cert".as_ref(),
        pki.path("stranger.pem").as_os_str(),
        "--tls-key".as_ref(),
        pki.path("stranger.key").as_os_str(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("TLS handshake") && err.contains("refused our client certificate"),
        "foreign client cert: {err}"
    );
    println!(
        "SECURITY foreign client certificate -> exit {code}: {}",
        err.trim()
    );
    // Plain http against a TLS port: it says it got no answer, naming the endpoint.
    let plain = etcd.endpoint(0).replace("https://", "http://");
    let mut d = Proc::command("discover");
    d.args([
        "get",
        "/services",
        "--endpoints",
        &plain,
        "--dial-timeout",
        "1s",
        "--command-timeout",
        "2s",
    ]);
    let (code, _, err) = output(d);
    assert_ne!(code, 0);
    assert!(err.contains(&plain), "{err}");
    // The sidekick refuses the same way (exit 2), rather than retrying forever.
    let mut sk = tool("sidekick", &etcd);
    sk.args(["--key", "/services/x/1", "--ip", "10.9.0.1"])
        .arg("--cacert")
        .arg(pki.path("other-ca.pem"))
        .arg("--cert")
        .arg(pki.path("client.pem"))
        .arg("--tls-key")
        .arg(pki.path("client.key"));
    let (code, _, err) = output(sk);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("TLS handshake"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restricted_user_works_and_its_password_shows_nowhere() {
    let mut etcd = EtcdCluster::single().await;
    enable_auth(&etcd);
    etcd.set_raw_user("root", ROOT_PASSWORD);
    let pw_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(pw_file.path(), format!("{SIDEKICK_PASSWORD}\n")).unwrap();

    // sidekick as user sidekick, the password from the environment.
    let mut sk = tool("sidekick", &etcd);
    sk.args(["--key", "/services/api/1", "--ip", "10.9.0.2", "--ttl", "3"])
        .env("ETCDCTL_USER", "sidekick")
        .env("ETCDCTL_PASSWORD", SIDEKICK_PASSWORD)
        .env("RUST_LOG", "trace");
    let sk = Proc::spawn(sk);
    // discover with the password in a file, running a child.
    let dir = tempfile::tempdir().unwrap();
    let env_dump = dir.path().join("env");
    let mut d = tool("discover", &etcd);
    d.args([
        "watch",
        "/services/api",
        "--user",
        "sidekick",
        "--password-file",
    ])
    .arg(pw_file.path())
    .args(["--exec", "sh", "-c"])
    .arg(format!("env > {}; exec sleep 60", env_dump.display()))
    .env("ETCDCTL_PASSWORD", SIDEKICK_PASSWORD)
    .env("ETCDCTL_PASSWORD_FILE", pw_file.path())
    .env("RUST_LOG", "trace");
    let d = Proc::spawn(d);
    let env = eventually(Duration::from_secs(10), "the child's environment", || {
        std::fs::read_to_string(&env_dump)
            .ok()
            .filter(|e| e.contains("SERVICES_API=10.9.0.2"))
    })
    .await;
    let client = etcd
        .connect_options()
        .with_user("sidekick", discovery::Password::new(SIDEKICK_PASSWORD))
        .connect()
        .await
        .unwrap();
    assert_eq!(
        client
            .get("/services/api/1")
            .await
            .unwrap()
            .unwrap()
            .value(),
        b"10.9.0.2"
    );

    // The password is in no command line, no log line, no child environment.
    for p in [&sk, &d] {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", p.pid())).unwrap();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains(SIDEKICK_PASSWORD),
            "password in argv"
        );
        assert!(
            !p.stderr().contains(SIDEKICK_PASSWORD),
            "password in the logs:\n{}",
            p.stderr()
        );
        assert!(
            !p.stderr().contains("PATH="),
            "the logs never dump the environment"
        );
    }
    assert!(
        !env.contains(SIDEKICK_PASSWORD)
            && !env.contains("ETCDCTL_PASSWORD=")
            && !env.contains("ETCDCTL_PASSWORD_FILE="),
        "the password, or where to read it, in the child's env:\n{env}"
    );
    let child = harness::proc::descendants(d.pid())[0];
    let environ = std::fs::read(format!("/proc/{child}/environ")).unwrap();
    assert!(!String::from_utf8_lossy(&environ).contains(SIDEKICK_PASSWORD));

    // Outside the role: refused with a clear error, exit 2.
    let mut outside = tool("sidekick", &etcd);
    outside
        .args(["--key", "/other/api/1", "--ip", "10.9.0.3"])
        .env("ETCDCTL_USER", "sidekick")
        .env("ETCDCTL_PASSWORD", SIDEKICK_PASSWORD);
    let (code, _, err) = output(outside);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("/other/api/1") && err.contains("permission denied") && err.contains("grant"),
        "{err}"
    );
    println!(
        "SECURITY write outside the role -> exit {code}: {}",
        err.lines().last().unwrap_or_default()
    );
    let mut get = tool("discover", &etcd);
    get.args(["get", "/other"])
        .env("ETCDCTL_USER", "sidekick")
        .env("ETCDCTL_PASSWORD", SIDEKICK_PASSWORD);
    let (code, _, err) = output(get);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("permission denied"), "{err}");
    // A wrong password is refused, naming the user and not the password.
    let mut bad = tool("discover", &etcd);
    bad.args(["get", "/services"])
        .env("ETCDCTL_USER", "sidekick")
        .env("ETCDCTL_PASSWORD", "nope-nope");
    let (code, _, err) = output(bad);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("refused the credentials")
            && err.contains("\"sidekick\"")
            && !err.contains("nope-nope"),
        "{err}"
    );
    // etcdctl's user:password form is fine in the environment (never on argv).
    let mut envform = tool("discover", &etcd);
    envform
        .args(["get", "/services/api", "--format", "values"])
        .env("ETCDCTL_USER", format!("sidekick:{SIDEKICK_PASSWORD}"));
    let (code, out, err) = output(envform);
    assert_eq!((code, out.as_str()), (0, "10.9.0.2\n"), "{err}");
    let _ = bin_path("sidekick");
}

/// The simple tokens of `user` that etcd's log (member 0) names in lines
/// with message `msg`: "authenticated a user" (debug level) when it issues
/// one, "deleted a simple token" when its TTL ran out.
fn tokens_logged(etcd: &EtcdCluster, msg: &str, user: &str) -> Vec<String> {
    let log = std::fs::read_to_string(etcd.dir().join(format!("{}.log", etcd.name(0))))
        .unwrap_or_default();
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["msg"] == msg && v["user-name"] == user)
        .filter_map(|v| v["token"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_token_is_renewed() {
    // Debug level: etcd logs each token it issues, so the test can tell
    // when the one our client holds is gone.
    let mut etcd = EtcdCluster::start(
        EtcdConfig::new(1)
            .with_arg("--auth-token-ttl=1")
            .with_arg("--log-level=debug"),
    )
    .await;
    enable_auth(&etcd);
    etcd.set_raw_user("root", ROOT_PASSWORD);
    let client = etcd
        .connect_options()
        .with_user("sidekick", discovery::Password::new(SIDEKICK_PASSWORD))
        .connect()
        .await
        .unwrap();
    client.put("/services/tok/1", "a").await.unwrap();
    // Every token user "sidekick" holds so far is our client's (the
    // sidekick process below has not started yet).
    let ours = tokens_logged(&etcd, "authenticated a user", "sidekick");
    assert!(
        !ours.is_empty(),
        "etcd logged no token for user sidekick\n{}",
        etcd.logs()
    );
    // A sidekick as the same user, whose keep-alives must outlive tokens too.
    let raw = RawWatch::start(&etcd, "/services/tok-sk/").await;
    let mut sk = tool("sidekick", &etcd);
    sk.args([
        "--key",
        "/services/tok-sk/1",
        "--ip",
        "10.9.0.7",
        "--ttl",
        "3",
    ])
    .env("ETCDCTL_USER", "sidekick")
    .env("ETCDCTL_PASSWORD", SIDEKICK_PASSWORD);
    let sk = Proc::spawn(sk);
    raw.wait_for(Duration::from_secs(10), "the sidekick registered", |e| {
        e.put
    })
    .await;
    // etcd deletes an idle simple token after --auth-token-ttl (its keeper
    // ticks every second) and logs it: wait until ours are all gone.
    eventually(
        Duration::from_secs(20),
        "etcd deleting our client's expired token",
        || {
            let deleted = tokens_logged(&etcd, "deleted a simple token", "sidekick");
            ours.iter().all(|t| deleted.contains(t)).then_some(())
        },
    )
    .await;
    client
        .put("/services/tok/1", "b")
        .await
        .expect("re-authenticated");
    assert_eq!(
        client
            .get("/services/tok/1")
            .await
            .unwrap()
            .unwrap()
            .value(),
        b"b"
    );

    // A long-running watch across an etcd restart (which forgets every
    // simple token) resumes by authenticating again.
    let mut w = tool("discover", &etcd);
    w.args(["watch", "/services/tok"])
        .env("ETCDCTL_USER", "sidekick")
        .env("ETCDCTL_PASSWORD", SIDEKICK_PASSWORD);
    let w = Proc::spawn(w);
    w.wait_stdout(Duration::from_secs(10), "get line", |l| {
        l.contains("\"get\"")
    })
    .await;
    etcd.kill(0);
    etcd.restart(0).await;
    // The put below is a live event for a watch that is back (its new
    // stream needed a new token), not one it catches up on.
    w.wait_stderr(
        Duration::from_secs(20),
        "the watch resumed after the restart",
        |l| l.contains("watch resumed"),
    )
    .await;
    client.put("/services/tok/1", "c").await.unwrap();
    w.wait_stdout(
        Duration::from_secs(10),
        "the event after the restart",
        |l| l.contains("\"value\":\"c\""),
    )
    .await;
    // The sidekick kept its lease through expired tokens and the restart:
    // two TTLs later its key was never deleted and is still there.
    // etcd's own history says so (the raw watch above did not outlive the
    // restart): a marker closes the range, and no delete comes before it.
    // A deliberate quiet period of two TTLs: it asserts an absence (no
    // delete), so there is no event to wait for.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut c = etcd.raw_client().await;
    let to = c
        .put("/services/tok-sk/zz-end", "", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let hist = harness::audit::history(&etcd, "/services/tok-sk/", 1, to).await;
    let deletes: Vec<_> = hist.iter().filter(|e| !e.2).collect();
    assert!(deletes.is_empty(), "{hist:?}\n{}", sk.dump());
    let kvs = c.get("/services/tok-sk/1", None).await.unwrap();
    assert_eq!(kvs.kvs().len(), 1, "{}", sk.dump());
    assert!(!sk.stderr().contains("refuses"), "{}", sk.dump());
}
