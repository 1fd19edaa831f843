//! sidekick against a Docker daemon reached over TLS, configured with the
//! Docker CLI's variables (DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH,
//! DOCKER_API_VERSION): a TLS-terminating proxy in front of the local
//! socket, with certificates the harness makes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use harness::docker::{ContainerSpec, unique_name};
use harness::docker_tls::{TlsDockerProxy, cert_path};
use harness::pki::Pki;
use harness::proc::{Proc, sidekick};
use harness::{Docker, Etcd, RawWatch, unique_prefix};

#[tokio::test(flavor = "multi_thread")]
async fn registers_and_follows_events_over_tls_with_the_clis_variables() {
    let etcd = Etcd::single().await;
    let docker = Docker::connect().await;
    let pki = Pki::new();
    let proxy = TlsDockerProxy::start(&pki).await;
    let certs = tempfile::tempdir().unwrap();
    let dir = cert_path(&pki, certs.path(), "ca.pem", Some("client"));
    let c = docker
        .run(ContainerSpec::new(unique_name("tls")).tcp(11211))
        .await;
    let ip = c.bridge_ip().await.unwrap();

    let key = format!("{}/1", unique_prefix("docker-tls"));
    let raw = RawWatch::start(&etcd, &key).await;
    let mut cmd = sidekick(
        &etcd,
        &["--key", &key, "--container", c.name(), "--ttl", "3"],
    );
    cmd.env("DOCKER_HOST", proxy.docker_host())
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", &dir);
    let p = Proc::spawn(cmd);
    let put = raw
        .wait_for(Duration::from_secs(15), "the registration over TLS", |e| {
            e.put
        })
        .await;
    assert_eq!(put.value_str(), ip, "{}", p.dump());
    // The event stream runs over TLS too: a stop takes the key at once.
    c.stop().await;
    raw.wait_for(
        Duration::from_secs(10),
        "the key removed on docker stop",
        |e| !e.put,
    )
    .await;
    assert!(
        !proxy.versions().is_empty(),
        "requests went through the TLS proxy"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_api_version_is_spoken_instead_of_negotiated() {
    let etcd = Etcd::single().await;
    let docker = Docker::connect().await;
    let pki = Pki::new();
    let proxy = TlsDockerProxy::start(&pki).await;
    let certs = tempfile::tempdir().unwrap();
    let dir = cert_path(&pki, certs.path(), "ca.pem", Some("client"));
    let c = docker
        .run(ContainerSpec::new(unique_name("tls-ver")).tcp(11211))
        .await;
    let ip = c.bridge_ip().await.unwrap();
    let key = format!("{}/1", unique_prefix("docker-api-version"));
    let raw = RawWatch::start(&etcd, &key).await;
    let mut cmd = sidekick(
        &etcd,
        &["--key", &key, "--container", c.name(), "--ttl", "3"],
    );
    cmd.env("DOCKER_HOST", proxy.docker_host())
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", &dir)
        .env("DOCKER_API_VERSION", "1.40");
    let p = Proc::spawn(cmd);
    let put = raw
        .wait_for(Duration::from_secs(15), "the registration", |e| e.put)
        .await;
    assert_eq!(put.value_str(), ip, "{}", p.dump());
    let versions = proxy.versions();
    assert_eq!(
        versions.into_iter().collect::<Vec<_>>(),
        ["1.40"],
        "every request asked for DOCKER_API_VERSION, none negotiated\n{}",
        p.dump()
    );
}

/// Each of these is a configuration to fix, not a daemon that is down:
/// a clear message and exit 2, within seconds, instead of retrying forever.
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_ca_a_missing_client_certificate_or_plain_http_exit_2_with_what_to_fix() {
    let etcd = Etcd::single().await;
    Docker::connect().await;
    let pki = Pki::new();
    let proxy = TlsDockerProxy::start(&pki).await;
    let certs = tempfile::tempdir().unwrap();
    let wrong_ca = cert_path(
        &pki,
        &certs.path().join("wrong-ca"),
        "other-ca.pem",
        Some("client"),
    );
    let no_cert = cert_path(&pki, &certs.path().join("no-cert"), "ca.pem", None);
    let stranger = cert_path(
        &pki,
        &certs.path().join("stranger"),
        "ca.pem",
        Some("stranger"),
    );
    let empty = certs.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let host = proxy.docker_host();
    // (what, the environment, what the message must say)
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "a CA that did not sign the daemon's certificate",
            vec![
                ("DOCKER_TLS_VERIFY", "1".into()),
                ("DOCKER_CERT_PATH", wrong_ca.display().to_string()),
            ],
            "ca.pem must be the CA",
        ),
        (
            "no client certificate",
            vec![
                ("DOCKER_TLS_VERIFY", "1".into()),
                ("DOCKER_CERT_PATH", no_cert.display().to_string()),
            ],
            "client certificate",
        ),
        (
            "a client certificate of another CA",
            vec![
                ("DOCKER_TLS_VERIFY", "1".into()),
                ("DOCKER_CERT_PATH", stranger.display().to_string()),
            ],
            "client certificate",
        ),
        (
            "no ca.pem at all",
            vec![
                ("DOCKER_TLS_VERIFY", "1".into()),
                ("DOCKER_CERT_PATH", empty.display().to_string()),
            ],
            "ca.pem",
        ),
        ("plain HTTP to the TLS port", vec![], "DOCKER_TLS_VERIFY=1"),
        (
            "a malformed DOCKER_API_VERSION",
            vec![("DOCKER_API_VERSION", "latest".into())],
            "MAJOR.MINOR",
        ),
    ];
    for (what, env, says) in cases {
        let key = format!("{}/1", unique_prefix("docker-tls-bad"));
        let mut cmd = sidekick(
            &etcd,
            &["--key", &key, "--container", "dt-none", "--ttl", "3"],
        );
        cmd.env("DOCKER_HOST", &host);
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let mut p = Proc::spawn(cmd);
        let status = p.wait_exit(Duration::from_secs(30)).await;
        let stderr = p.stderr();
        assert_eq!(status.code(), Some(2), "{what}: exit 2\n{}", p.dump());
        eprintln!(
            "{what}: {}",
            stderr
                .lines()
                .rfind(|l| l.contains("sidekick: "))
                .unwrap_or("")
        );
        assert!(
            stderr.contains(says) && stderr.contains("sidekick: "),
            "{what}: the message says {says:?}\n{}",
            p.dump()
        );
    }
}
