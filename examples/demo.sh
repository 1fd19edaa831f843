#!/usr/bin/env bash
# make demo: the main job on a throwaway local etcd and a locally built
# container. A sidekick keeps the container's address in etcd; discover
# watch prints what a consumer sees. Everything started here is removed on
# exit, including on Ctrl-C.
set -euo pipefail
# Background jobs in process groups of their own: Ctrl-C reaches only this
# script, whose trap then stops them in order (sidekick first, so that it
# can still revoke its lease, etcd last).
set -m
cd "$(dirname "$0")/.."

TTL=${DEMO_TTL:-4}
IMAGE="discovery-test/busybox:$(cat tests/image/TAG)"
RUN="demo-$$"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sidekick-demo.XXXXXX")
ETCD_PID= WATCH_PID= SIDEKICK_PID=
INTERRUPTED=

if [[ -t 1 ]]; then B=$'\033[1m' N=$'\033[0m'; else B='' N=''; fi
say()  { printf '\n%s==> %s%s\n' "$B" "$*" "$N"; }
note() { printf '    %s\n' "$*"; }

stop() { [[ -n $1 ]] && { kill -TERM "$1" 2>/dev/null; wait "$1" 2>/dev/null; } || true; }

cleanup() {
  local code=$?
  trap - EXIT INT TERM
  stop "$SIDEKICK_PID"
  stop "$WATCH_PID"
  stop "$ETCD_PID"
  docker rm -f "$RUN-web" >/dev/null 2>&1 || true
  docker network rm "$RUN-a" "$RUN-b" >/dev/null 2>&1 || true
  rm -rf "$WORK"
  echo
  if [[ -n $INTERRUPTED ]]; then
    echo "demo: interrupted; sidekick, discover, etcd, container, networks and $WORK removed"
    exit 0
  fi
  if [[ $code -eq 0 ]]; then echo "demo: done; sidekick, discover, etcd, container, networks and $WORK removed"; else echo "demo: failed ($code); everything removed"; fi
  exit "$code"
}
trap cleanup EXIT
trap 'INTERRUPTED=1; exit 0' INT TERM

if [[ -z ${DEMO_NO_BUILD:-} ]]; then
  say "Building sidekick and discover"
  cargo build -q -p sidekick
fi
BIN=target/debug
docker image inspect "$IMAGE" >/dev/null 2>&1 || make -s image

# A free loopback port pair for a throwaway etcd.
port() { local p; while :; do p=$((20000 + RANDOM % 10000)); (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }; done; }
CLIENT=$(port); PEER=$(port)
export ETCDCTL_ENDPOINTS="http://127.0.0.1:$CLIENT"

say "Starting a throwaway etcd on 127.0.0.1:$CLIENT (data in $WORK)"
etcd --name demo --data-dir "$WORK/etcd" \
  --listen-client-urls "$ETCDCTL_ENDPOINTS" --advertise-client-urls "$ETCDCTL_ENDPOINTS" \
  --listen-peer-urls "http://127.0.0.1:$PEER" --initial-advertise-peer-urls "http://127.0.0.1:$PEER" \
  --initial-cluster "demo=http://127.0.0.1:$PEER" --logger=zap --log-outputs="$WORK/etcd.log" &
ETCD_PID=$!
for _ in $(seq 100); do "$BIN/discover" get /services >/dev/null 2>&1 && break; sleep 0.1; done

say "Starting a container ($RUN-web) on network $RUN-a"
docker network create "$RUN-a" >/dev/null
docker network create "$RUN-b" >/dev/null
docker run -d --name "$RUN-web" --label discovery-test=1 --network "$RUN-a" "$IMAGE" http:8080 >/dev/null
note "its address: $(docker inspect -f "{{(index .NetworkSettings.Networks \"$RUN-a\").IPAddress}}" "$RUN-web")"

say "discover watch /services/web: every line below is what a consumer sees"
"$BIN/discover" watch /services/web 2>"$WORK/discover.log" | sed -u 's/^/    discover | /' &
WATCH_PID=$!
sleep 0.5

say "1. sidekick --key /services/web/1 --container $RUN-web --port 8080 --ttl $TTL: one set"
SIDEKICK_LOG=warn "$BIN/sidekick" --key /services/web/1 --container "$RUN-web" --port 8080 --ttl "$TTL" &
SIDEKICK_PID=$!
sleep 1.5

say "2. One TTL ($TTL s) of heartbeats: lease keep-alives, which wake no watcher (no line)"
sleep "$TTL"
"$BIN/discover" ls /services/web | sed 's/^/    /'
note "(the chapter's loop would have written the key again every 5 s)"

say "3. The container moves to network $RUN-b: a set, with prevNode"
docker network connect "$RUN-b" "$RUN-web"
docker network disconnect "$RUN-a" "$RUN-web"
note "new address: $(docker inspect -f "{{(index .NetworkSettings.Networks \"$RUN-b\").IPAddress}}" "$RUN-web")"
sleep 1.5

say "4. docker stop: a delete, at once (not after the TTL)"
docker stop -t 2 "$RUN-web" >/dev/null
sleep 1.5
