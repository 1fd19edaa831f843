//! The chapter's sidekick, listing 6.4, as a bash loop. Only the names are
//! parameters; the jq path may be adapted for a user-defined network (on
//! one, Docker leaves the top-level IPAddress empty).

use std::path::Path;
use std::process::Command;

use harness::proc::Proc;

/// Write the loop to `dir/sidekick.sh`. `jq_path` is the chapter's
/// `.[].NetworkSettings.IPAddress` unless a network is named.
pub fn script(dir: &Path, network: Option<&str>) -> std::path::PathBuf {
    let jq = match network {
        None => ".[].NetworkSettings.IPAddress".to_owned(),
        Some(n) => format!(".[].NetworkSettings.Networks[\\\"{n}\\\"].IPAddress"),
    };
    let path = dir.join(format!("sidekick-{}.sh", network.unwrap_or("bridge")));
    std::fs::write(
        &path,
        format!(
            "#!/bin/bash\n\
             # Listing 6.4 of CoreOS in Action: $1 is %i, $2 the container, $3 the service.\n\
             while true; do\n\
             \x20   sleep 5;\n\
             \x20   FLANNELIP=`docker inspect $2 | jq -r {jq}`;\n\
             \x20   etcdctl update --ttl 8 /services/$3/$1 $FLANNELIP || \\\n\
             \x20   etcdctl set --ttl 8 /services/$3/$1 $FLANNELIP;\n\
             done\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Run the loop for instance `i` of `service` following `container`,
/// against `v2_endpoint` with etcdctl's v2 API.
pub fn spawn(script: &Path, v2_endpoint: &str, service: &str, i: usize, container: &str) -> Proc {
    let mut c = Command::new("bash");
    c.arg(script)
        .arg(i.to_string())
        .arg(container)
        .arg(service)
        .env("ETCDCTL_API", "2")
        .env("ETCDCTL_ENDPOINTS", v2_endpoint)
        .env_remove("DOCKER_HOST");
    Proc::spawn(c)
}
