#!/usr/bin/env bash
# Install what `make test` needs from Debian, only what is missing.
# Idempotent: a second run installs nothing.
set -euo pipefail

need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# package: the command (or file) that proves it is there
check() {
  local pkg=$1 probe=$2
  if [[ $probe == /* ]]; then [[ -e $probe ]] && have_pkg "$pkg" && return 0
  else command -v "$probe" >/dev/null 2>&1 && return 0
  fi
  need+=("$pkg")
}

check protobuf-compiler protoc      # etcd-client's build needs protoc
# ...and the well-known types it imports (google/protobuf/descriptor.proto),
# which protobuf-compiler only recommends: --no-install-recommends skips them.
check libprotobuf-dev /usr/include/google/protobuf/descriptor.proto
check etcd-server etcd              # the real etcd the tests start
check etcd-client etcdctl           # peers in benchmarks, demo narration
check busybox-static /bin/busybox   # the static binary in the test image
check jq jq                         # the chapter's sidekick loop (benchmarks)
check systemd systemd-analyze       # `systemd-analyze verify` of units/
check openssl openssl               # certificates for the TLS tests
check memcached /usr/bin/memcached  # node-web against a real memcached
check nginx /usr/sbin/nginx         # discover render's end-to-end test: a real load balancer
check curl curl                     # requests through that nginx

if ((${#need[@]})); then
  echo "deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The test image needs a static busybox: the dynamic one would not run FROM scratch.
if ! file -L /bin/busybox 2>/dev/null | grep -q 'statically linked'; then
  if ! ldd /bin/busybox 2>&1 | grep -q 'not a dynamic executable'; then
    echo "deps: /bin/busybox is not static; install busybox-static (apt-get install busybox-static)" >&2
    exit 1
  fi
fi

if ! docker info >/dev/null 2>&1; then
  echo "deps: the Docker engine does not answer (is dockerd running, and may this user use /var/run/docker.sock?)" >&2
  exit 1
fi
