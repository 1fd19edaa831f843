//! The floor for `make bench` P4: the same two operations as a sidekick
//! (a lease keep-alive and a `docker inspect` every interval) with the same
//! crates (etcd-client, bollard) on the same single-threaded runtime, and
//! no logic at all. What the stack itself costs at that cadence.
//!
//! `idle` does neither: a process that only wakes up every interval, with
//! tokio's timer, which is what any design at that cadence pays for its
//! wake-ups before it does anything.
//!
//! ```text
//! bare-sidekick ENDPOINT CONTAINER [INTERVAL_MS] [both|keepalive|inspect|list|idle]
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage =
        "usage: bare-sidekick ENDPOINT CONTAINER [INTERVAL_MS] [both|keepalive|inspect|list|idle]";
    let endpoint = args.get(1).expect(usage).clone();
    let container = args.get(2).expect(usage).clone();
    let every = Duration::from_millis(args.get(3).and_then(|s| s.parse().ok()).unwrap_or(2667));
    let mode = args.get(4).cloned().unwrap_or_else(|| "both".into());
    let (keepalive, inspect) = (
        mode != "inspect" && mode != "list",
        mode != "keepalive" && mode != "list",
    );
    let list = mode == "list";
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        if mode == "idle" {
            loop {
                tokio::time::sleep(every).await;
            }
        }
        let mut etcd = etcd_client::Client::connect([endpoint], None)
            .await
            .expect("etcd");
        let lease = etcd.lease_grant(8, None).await.expect("grant").id();
        etcd.put(
            format!("/bench/floor/{mode}"),
            "x",
            Some(etcd_client::PutOptions::new().with_lease(lease)),
        )
        .await
        .expect("put");
        let (mut keeper, mut responses) = etcd.lease_keep_alive(lease).await.expect("keep alive");
        let docker = bollard::Docker::connect_with_unix_defaults()
            .expect("docker")
            .negotiate_version()
            .await
            .expect("version");
        loop {
            tokio::time::sleep(every).await;
            if keepalive {
                keeper.keep_alive().await.expect("keep alive");
                responses.message().await.expect("keep alive response");
            }
            if list {
                let filters = std::collections::HashMap::from([("name", vec![container.as_str()])]);
                let opts = bollard::query_parameters::ListContainersOptionsBuilder::new()
                    .all(true)
                    .filters(&filters)
                    .build();
                let _ = docker.list_containers(Some(opts)).await.expect("list");
            }
            if inspect {
                let _ = docker
                    .inspect_container(&container, None)
                    .await
                    .expect("inspect");
            }
        }
    });
}
