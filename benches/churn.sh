#!/usr/bin/env bash
# What a new connection per request costs with and without the lingering
# close (`server.lingering_time`): `wrk` sends the shared yardstick's event
# with `Connection: close`, so every request opens and closes a connection,
# against a relay writing to a file sink (/dev/null), in alternating rounds.
# Prints requests/s and the relay's CPU per request (from /proc) per round.
#
#   benches/churn.sh
#   ROUNDS=5 CONNS=64 DURATION=10s benches/churn.sh
#
# Settings (environment): ROUNDS (3), CONNS (32), DURATION (8s),
# LINGER ("0s 2s": the values compared), RELAY_BIN (the release build of
# this checkout, built if missing), OUT (a temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-32}
DURATION=${DURATION:-8s}
LINGER=${LINGER:-"0s 2s"}
OUT=${OUT:-$(mktemp -d)}
SHARED=$(cd .. && pwd)/shared/tools
KEY=0123456789abcdef0123456789abcdef
PROJECT=42
if [ -z "${RELAY_BIN:-}" ]; then
  cargo build --release --quiet --bin edge-relay
  RELAY_BIN=target/release/edge-relay
fi
source benches/common.sh
need_apt wrk wrk

python3 "$SHARED/perf_body.py" "$OUT" "$KEY" "$PROJECT" >/dev/null
{ cat "$OUT/post.lua"; echo 'wrk.headers["Connection"] = "close"'; } >"$OUT/close.lua"

echo "| round | lingering_time | req/s | relay CPU µs/request |"
echo "|---|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do
  for linger in $LINGER; do
    port=$(free_port)
    admin=$(free_port)
    cat >"$OUT/relay.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
max_connections = 4096
lingering_time = "$linger"
[admin]
listen = "127.0.0.1:$admin"
[file_sink]
path = "/dev/null"
[log]
level = "warn"
[[projects]]
id = $PROJECT
public_keys = ["$KEY"]
TOML
    "$RELAY_BIN" run --config "$OUT/relay.toml" 2>>"$OUT/relay.log" &
    pid=$!
    for _ in $(seq 1 100); do
      python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
        "http://127.0.0.1:$admin/readyz" 2>/dev/null && break
      sleep 0.1
    done
    before=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
    out=$(wrk -t1 -c"$CONNS" -d"$DURATION" -s "$OUT/close.lua" \
      "http://127.0.0.1:$port/api/$PROJECT/envelope/")
    after=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
    kill -TERM "$pid"
    wait "$pid" || true
    echo "$out" >>"$OUT/wrk.log"
    total=$(echo "$out" | awk '/requests in/ { print $1 }')
    bad=$(echo "$out" | awk '/Non-2xx/ { print $5 }')
    [ -z "$bad" ] || { echo "non-2xx answers ($bad): see $OUT/wrk.log" >&2; exit 1; }
    rps=$(echo "$out" | awk '/Requests\/sec/ { printf "%.0f", $2 }')
    cpu=$(awk -v a="$before" -v b="$after" -v n="$total" -v hz="$(getconf CLK_TCK)" \
      'BEGIN { printf "%.0f", (b - a) / hz * 1e6 / n }')
    printf '| %s | %s | %s | %s |\n' "$round" "$linger" "$rps" "$cpu"
  done
done
