#!/usr/bin/env bash
# make demo: the main job on a throwaway local etcd and a locally built
# container. A sidekick keeps the container's address in etcd; discover
# watch prints what a consumer sees. Everything started here is removed on
# exit, including on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

TTL=${DEMO_TTL:-4}
IMAGE="discovery-test/busybox:$(cat tests/image/TAG)"
RUN="demo-$$"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sidekick-demo.XXXXXX")
ETCD_PID= WATCH_PID= SIDEKICK_PID= PAUSE_PID=
INTERRUPTED=

if [[ -t 1 ]]; then B=$'\033[1m' N=$'\033[0m'; else B='' N=''; fi
say()  { printf '\n%s==> %s%s\n' "$B" "$*" "$N"; }
note() { printf '    %s\n' "$*"; }

# Background processes run in sessions of their own (setsid): Ctrl-C at the
# terminal reaches only this script and whatever it runs in the foreground,
# and the trap below stops them in order: sidekick first, so that it can
# still revoke its lease, etcd last. Each is stopped as a process group.
stop() {
  [[ -n $1 ]] || return 0
  kill -TERM -- "-$1" 2>/dev/null || kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# The watch is a pipeline (discover | tee | sed): stop discover alone, so
# the printers drain its last lines and end by themselves.
stop_watch() {
  [[ -n $WATCH_PID ]] || return 0
  pkill -TERM -g "$WATCH_PID" -x discover 2>/dev/null || true
  wait "$WATCH_PID" 2>/dev/null || true
}

# Waits run in the background under the `wait` builtin, which a trapped
# signal interrupts at once. A foreground `sleep` would not do: a Ctrl-C that
# lands while bash is starting it reaches the half-started child, not bash,
# and is lost until the sleep ends (seen under load).
pause() {
  sleep "$1" &
  PAUSE_PID=$!
  wait "$PAUSE_PID"
  PAUSE_PID=
}

cleanup() {
  local code=$?
  trap - EXIT INT TERM
  [[ -z $PAUSE_PID ]] || kill "$PAUSE_PID" 2>/dev/null || true
  stop "$SIDEKICK_PID"
  stop_watch
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

# Wait until discover has printed N lines, so each step shows its effect
# before the next begins (no sleep-and-hope).
lines_seen() { local c; c=$(grep -c '"action"' "$WORK/events" 2>/dev/null) || c=0; echo "${c:-0}"; }
expect_lines() {
  local n=$1 what=$2
  for _ in $(seq 150); do
    (( $(lines_seen) >= n )) && return 0
    pause 0.1
  done
  echo "demo: expected $what within 15 s, but discover printed:" >&2
  cat "$WORK/events" >&2 || true
  cat "$WORK/discover.log" >&2 || true
  exit 1
}

if [[ -z ${DEMO_NO_BUILD:-} ]]; then
  say "Building sidekick and discover"
  cargo build -q -p sidekick
fi
BIN=${CARGO_TARGET_DIR:-target}/debug
docker image inspect "$IMAGE" >/dev/null 2>&1 || make -s image

# A free loopback port pair for a throwaway etcd, unless given as
# DEMO_ETCD_PORTS=CLIENT,PEER (the test suite passes ports its harness
# reserved, so that no parallel test takes them first).
port() { local p; while :; do p=$((20000 + RANDOM % 10000)); (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }; done; }
if [[ -n ${DEMO_ETCD_PORTS:-} ]]; then
  IFS=, read -r CLIENT PEER <<<"$DEMO_ETCD_PORTS"
else
  CLIENT=$(port); PEER=$(port)
fi
export ETCDCTL_ENDPOINTS="http://127.0.0.1:$CLIENT"

say "Starting a throwaway etcd on 127.0.0.1:$CLIENT (data in $WORK)"
setsid etcd --name demo --data-dir "$WORK/etcd" \
  --listen-client-urls "$ETCDCTL_ENDPOINTS" --advertise-client-urls "$ETCDCTL_ENDPOINTS" \
  --listen-peer-urls "http://127.0.0.1:$PEER" --initial-advertise-peer-urls "http://127.0.0.1:$PEER" \
  --initial-cluster "demo=http://127.0.0.1:$PEER" --logger=zap --log-outputs="$WORK/etcd.log" 2>"$WORK/etcd.err" &
ETCD_PID=$!
ready=
for _ in $(seq 100); do "$BIN/discover" get /services >/dev/null 2>&1 && { ready=1; break; }; pause 0.1; done
[[ -n $ready ]] || { echo "demo: etcd did not answer within 10 s; its log:" >&2; tail -n 20 "$WORK/etcd.log" "$WORK/etcd.err" >&2; exit 1; }

say "Starting a container ($RUN-web) on network $RUN-a"
docker network create "$RUN-a" >/dev/null
docker network create "$RUN-b" >/dev/null
docker run -d --name "$RUN-web" --label "discovery-test=$PWD" --network "$RUN-a" "$IMAGE" http:8080 >/dev/null
note "its address: $(docker inspect -f "{{(index .NetworkSettings.Networks \"$RUN-a\").IPAddress}}" "$RUN-web")"

say "discover watch /services/web: every line below is what a consumer sees"
setsid bash -c 'exec "$0" watch /services/web 2>"$1" | tee "$2" | sed -u "s/^/    discover | /"' \
  "$BIN/discover" "$WORK/discover.log" "$WORK/events" &
WATCH_PID=$!
expect_lines 1 "the get line"

say "1. sidekick --key /services/web/1 --container $RUN-web --port 8080 --ttl $TTL: one set"
SIDEKICK_LOG=warn setsid "$BIN/sidekick" --key /services/web/1 --container "$RUN-web" --port 8080 --ttl "$TTL" &
SIDEKICK_PID=$!
expect_lines 2 "the set of the registration"

say "2. One TTL ($TTL s) of heartbeats: lease keep-alives, which wake no watcher (no line)"
pause "$TTL"
"$BIN/discover" ls /services/web | sed 's/^/    /'
note "(the chapter's loop would have written the key again every 5 s)"

say "3. The container moves to network $RUN-b: a set, with prevNode"
docker network connect "$RUN-b" "$RUN-web"
note "new address: $(docker inspect -f "{{(index .NetworkSettings.Networks \"$RUN-b\").IPAddress}}" "$RUN-web")"
docker network disconnect "$RUN-a" "$RUN-web"
expect_lines 3 "the set of the move"

say "4. docker stop: a delete, at once (not after the TTL)"
docker stop -t 2 "$RUN-web" >/dev/null
expect_lines 4 "the delete"
