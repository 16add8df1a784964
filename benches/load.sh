#!/usr/bin/env bash
# The relay against the yardstick (`../shared/tools/floor`) on the same load,
# in the same run, in alternating rounds, producing into the same broker
# (librdkafka's mock cluster, run by `floor mock`). Prints the tables that
# BENCHMARKS.md records.
#
#   benches/load.sh                      # everything (about 15 minutes)
#   MODES=kafka CONNS=32 ROUNDS=2 benches/load.sh
#   PARTS=pair MODES=spool ROUNDS=5 DURATION=6s \
#     PAIR_A="EDGE_RELAY_KAFKA__LINGER=2ms" PAIR_B="EDGE_RELAY_KAFKA__LINGER=20ms" benches/load.sh
#   PARTS=pair MODES=spool CONNS=256 PAIR_A="RELAY_BIN=/tmp/old/edge-relay" PAIR_B="" benches/load.sh
#   PARTS=instructions MODES="memory spool" benches/load.sh   # per request, under callgrind
#
# Settings (environment): MODES (kafka spool memory), CONNS (32 256),
# ROUNDS (3), DURATION (10s), LAT_ROUNDS (3), LAT_CONNS (32, the latency
# part's connections), LAT_HOG (0: off; a fraction of one core, such as
# 0.4, that a busy process takes throughout the latency part, in 10 ms
# periods: a slower machine on demand, for the floor and the relay
# alike), WARMUP (2s), RATE (the
# latency part's rate is half of it when the throughput part does not run),
# PARTS (throughput latency overload; and
# pair and instructions, not run by default), CG_RATE (20), CG_SECONDS (20)
# and CG_CONNS (4) for the instructions part, PAIR_A and PAIR_B (settings for the relay, as
# VAR=value words; RELAY_BIN=PATH runs another build, to compare two
# commits), SHARED (../shared/tools), OUT (a temp dir).
#
# `pair` compares two settings of the relay: each round runs the floor, then
# the relay with PAIR_A and with PAIR_B back to back (A first in odd rounds,
# B first in even ones: the second run of a round has an edge), and the
# table gives the mean of the rounds' differences in relay / floor. On a shared
# machine the relay's figure moves by some 10% from round to round, but two
# runs in the same round move together: a difference of a few percent shows
# this way and is lost between unpaired runs.
#
# Per mode and connection count: requests/s of the floor and of the relay
# (median of the rounds) and their ratio, and the CPU each server used per
# 2xx answer (from /proc/PID/stat: steadier than requests/s on a shared
# machine, where other tenants move the absolute figures), and the system
# (kernel) part of it apart; and the broker's CPU per answer (the mock
# cluster is a process of its own on the same cores: a server that
# produces makes it work, one under FLOOR_NO_KAFKA does not). `kafka` is
# compared with `floor pipeline` producing to the broker; `spool` and `memory` with
# `floor pipeline` under FLOOR_NO_KAFKA=1, as the issue asks. Then the p99
# latency of both at half the relay's own best rate, the relay's peak RSS,
# and a 10x overload (ten times the connections) with its 503s and RSS.
#
# The latency runs LAT_ROUNDS alternating rounds, each server fresh, and
# measures after WARMUP at the same rate (`loadgen --warmup`): the servers
# warm, as they are after running a while. The warm-up's own p99 is printed
# too: a fresh relay's first burst (every connection's first request at once,
# cold caches) costs it tens of milliseconds that the floor does not pay.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED:-$ROOT/../shared/tools}
MODES=${MODES:-"kafka spool memory"}
CONNS=${CONNS:-"32 256"}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
LAT_ROUNDS=${LAT_ROUNDS:-3}
LAT_CONNS=${LAT_CONNS:-32}
LAT_HOG=${LAT_HOG:-0}
WARMUP=${WARMUP:-2s}
PARTS=${PARTS:-"throughput latency overload"}
OUT=${OUT:-$(mktemp -d /tmp/edge-relay-load.XXXXXX)}
mkdir -p "$OUT"
KEY=a1b2c3d4e5f60718293a4b5c6d7e8f90
PROJECT=42
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

log() { echo "load: $*" >&2; }

# --- what the run needs -------------------------------------------------------
# need_apt, free_port
source "$ROOT/benches/common.sh"
need_apt wrk wrk
need_apt python3 python3
need_apt curl curl
[ -d "$SHARED/floor" ] || { echo "load: no floor at $SHARED/floor (set SHARED)" >&2; exit 1; }

log "building the floor and the relay (release)"
FLOOR_TARGET=${FLOOR_TARGET:-$HOME/.cache/floor-target}
CARGO_TARGET_DIR=$FLOOR_TARGET cargo build -q --release --manifest-path "$SHARED/floor/Cargo.toml"
FLOOR=$FLOOR_TARGET/release/floor
(cd "$ROOT" && cargo build -q --release --locked --bin edge-relay --example loadgen)
RELAY=$ROOT/target/release/edge-relay
LOADGEN=$ROOT/target/release/examples/loadgen

# Enough descriptors for the overload round's connections.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# UNDER: a command the servers run under (the instructions part's
# callgrind), which also makes them start some 30 times slower.
UNDER=()
wait_http() { # URL
    local tries=300
    [ "${#UNDER[@]}" -gt 0 ] && tries=3000
    for _ in $(seq 1 "$tries"); do
        curl -s -o /dev/null "$1" && return 0
        sleep 0.1
    done
    echo "load: $1 never answered" >&2
    exit 1
}

# --- the broker and the body ----------------------------------------------------
"$FLOOR" mock >"$OUT/mock.addr" 2>"$OUT/mock.log" &
MOCK_PID=$!
PIDS+=("$MOCK_PID")
for _ in $(seq 1 100); do [ -s "$OUT/mock.addr" ] && break; sleep 0.1; done
BROKERS=$(head -1 "$OUT/mock.addr")
log "mock broker at $BROKERS"
python3 "$SHARED/perf_body.py" "$OUT" "$KEY" "$PROJECT" >"$OUT/body.size"
log "body: $(cat "$OUT/body.size") (event JSON bytes, gzip'd bytes)"

# The yardstick's request at a constant rate (examples/loadgen.rs), after a
# warm-up at that rate when WARMUP_SECONDS is given; prints loadgen's line.
paced() { # PORT RATE CONNS SECONDS [WARMUP_SECONDS]
    "$LOADGEN" ${5:+--warmup "$5"} "http://127.0.0.1:$1/api/$PROJECT/envelope/" \
        "$OUT/envelope.gz" "$2" "$3" \
        "$4" "Content-Encoding: gzip" "Content-Type: application/x-sentry-envelope" \
        "X-Sentry-Auth: Sentry sentry_version=7, sentry_client=perf/1.0, sentry_key=$KEY"
}

# paced for DURATION after WARMUP, as "rate p50 p99 errors warmup_p99 warmup_errors".
run_paced() { # PORT RATE CONNS
    local out
    out=$(paced "$1" "$2" "$3" "${DURATION%s}" "${WARMUP%s}")
    echo "$out" >>"$OUT/loadgen.log"
    echo "$out" | tr ' ' '\n' | awk -F= '{ v[$1] = $2 }
        END { print v["rate"], v["p50"], v["p99"], v["errors"],
            (v["warmup_p99"] == "" ? "-" : v["warmup_p99"]),
            (v["warmup_errors"] == "" ? "-" : v["warmup_errors"]) }'
}

# --- the servers --------------------------------------------------------------
SERVER_PID=""
start_relay() { # MODE PORT
    local mode=$1 port=$2 admin
    admin=$(free_port)
    rm -rf "$OUT/spool-$mode"
    cat >"$OUT/relay-$mode.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
max_connections = 4096
[admin]
listen = "127.0.0.1:$admin"
[kafka]
brokers = "$BROKERS"
[delivery]
ack = "$mode"
[spool]
path = "$OUT/spool-$mode"
[log]
level = "warn"
[[projects]]
id = $PROJECT
public_keys = ["$KEY"]
# Configured, not limiting: the work of a check, without its drops.
[[projects.quotas]]
limit = 1000000000
window_secs = 60
[projects.sampling]
error_rate = 1.0
EOF
    # RELAY_ENV: settings for this relay only (the pair part's); a word
    # RELAY_BIN=PATH runs that build instead of this checkout's.
    local bin=$RELAY word
    local settings=()
    for word in ${RELAY_ENV:-}; do
        case $word in
            RELAY_BIN=*) bin=${word#RELAY_BIN=} ;;
            *) settings+=("$word") ;;
        esac
    done
    env "${settings[@]}" ${UNDER[@]+"${UNDER[@]}"} "$bin" run --config "$OUT/relay-$mode.toml" 2>>"$OUT/relay-$mode.log" &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    RELAY_ADMIN=$admin
    wait_http "http://127.0.0.1:$admin/readyz"
    for _ in $(seq 1 "$(( ${#UNDER[@]} > 0 ? 1000 : 100 ))"); do
        curl -s "http://127.0.0.1:$admin/readyz" | grep -q "kafka: up" && return 0
        sleep 0.1
    done
    echo "load: the relay never saw Kafka up" >&2
    exit 1
}

start_floor() { # NO_KAFKA(0|1) PORT
    if [ "$1" = 1 ]; then
        FLOOR_NO_KAFKA=1 ${UNDER[@]+"${UNDER[@]}"} "$FLOOR" pipeline "$2" "$BROKERS" 2>>"$OUT/floor.log" &
    else
        FLOOR_COMPRESSION=lz4 ${UNDER[@]+"${UNDER[@]}"} "$FLOOR" pipeline "$2" "$BROKERS" 2>>"$OUT/floor.log" &
    fi
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    sleep 0.5
}

stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
}

# CPU time a process has used, in clock ticks, as "total system" (user +
# system, and the kernel's part of it), from one read of /proc.
cpu_ticks() { # PID
    awk '{ print $14 + $15, $15 }' "/proc/$1/stat"
}

# A wrk run against the server just started (SERVER_PID), kept as NAME:
# appends its req/s, CPU µs per request and the system part of that to
# $OUT/NAME.rps, .cpu and .sys, and the broker's CPU µs per request
# (MOCK_PID: the work a server's produce gives the broker, on the same
# cores) to .broker; wrk's summary stays in $OUT/NAME.last.
measure() { # NAME PORT CONNS
    local t0 s0 t1 s1 b0 b1 ok
    read -r b0 _ < <(cpu_ticks "$MOCK_PID")
    read -r t0 s0 < <(cpu_ticks "$SERVER_PID")
    run_wrk "$2" "$3" >"$OUT/$1.last"
    read -r t1 s1 < <(cpu_ticks "$SERVER_PID")
    read -r b1 _ < <(cpu_ticks "$MOCK_PID")
    ok=$(awk '{ print $5 }' "$OUT/$1.last")
    awk '{ print $1 }' "$OUT/$1.last" >>"$OUT/$1.rps"
    cpu_per_request "$t0" "$t1" "$ok" >>"$OUT/$1.cpu"
    cpu_per_request "$s0" "$s1" "$ok" >>"$OUT/$1.sys"
    cpu_per_request "$b0" "$b1" "$ok" >>"$OUT/$1.broker"
}

# CPU µs per 2xx request between two cpu_ticks readings.
cpu_per_request() { # TICKS_BEFORE TICKS_AFTER REQUESTS
    awk -v a="$1" -v b="$2" -v n="$3" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { if (n > 0) printf "%.0f\n", (b - a) / hz * 1e6 / n; else print "-" }'
}

peak_rss_mib() { # PID
    awk '/VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"
}

# wrk's summary as "req/s p50_ms p99_ms non2xx ok": req/s counts 2xx answers
# only (a 503 that sheds load is not a request served); ok is their number.
run_wrk() { # PORT CONNS [SCRIPT] [DURATION]
    local threads=1 script=${3:-$OUT/post.lua} out
    [ "$2" -ge 256 ] && threads=2
    out=$(wrk -t"$threads" -c"$2" -d"${4:-$DURATION}" --latency -s "$script" \
        "http://127.0.0.1:$1/api/$PROJECT/envelope/")
    echo "$out" >>"$OUT/wrk.log"
    echo "$out" | awk '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
        /requests in/ { total = $1 }
        /Requests\/sec/ { rps = $2 }
        /^ +50%/ { p50 = ms($2) }
        /^ +99%/ { p99 = ms($2) }
        /Non-2xx/ { bad = $5 }
        END { if (total > 0) rps = rps * (total - bad) / total
              printf "%.0f %.2f %.2f %d %d\n", rps, p50, p99, bad, total - bad }'
}

# The bucket bound (ms) under which a share Q of a histogram's observations
# fall, from a /metrics scrape on stdin; SERIES is the bucket series' name
# with its labels up to `le` (a regular expression). "-" when it observed none.
histogram_bound() { # SERIES Q
    awk -v series="$1" -v q="$2" '
        $0 ~ "^" series "le=" {
            le = $1; sub(/.*le="/, "", le); sub(/".*/, "", le)
            n++; bound[n] = le; cum[n] = $2
        }
        END {
            total = cum[n]
            if (total == 0) { print "-"; exit }
            for (i = 1; i <= n; i++) if (cum[i] >= q * total) {
                if (bound[i] == "+Inf") print "inf"; else printf "%g\n", bound[i] * 1000
                exit
            }
        }'
}

# The mean in ms of histogram NAME with LABELS (as written in /metrics,
# such as '{endpoint="envelope"}', or '' for none), from its _sum and
# _count in a /metrics scrape on stdin; "-" without samples.
histogram_mean() { # NAME LABELS
    awk -v sum="$1_sum$2" -v count="$1_count$2" '
        index($0, sum " ") == 1 { s = $2 }
        index($0, count " ") == 1 { c = $2 }
        END { if (c > 0) printf "%.2f\n", s / c * 1000; else print "-" }'
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

part() { [[ " $PARTS " == *" $1 "* ]]; }

# The floor a mode is held to: 1 (FLOOR_NO_KAFKA) for spool and memory, as the issue asks.
floor_skips_kafka() { if [ "$1" = kafka ]; then echo 0; else echo 1; fi; }

# --- throughput -------------------------------------------------------------------
declare -A BEST
if part throughput; then
echo
echo "| ack mode | connections | floor req/s | relay req/s | relay / floor | relay peak RSS | relay non-2xx | CPU µs/request floor / relay | of which system (kernel) floor / relay | the broker's CPU µs/request floor / relay |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for mode in $MODES; do
    no_kafka=$(floor_skips_kafka "$mode")
    for c in $CONNS; do
        for kept in "$OUT"/{floor,relay}.{rps,cpu,sys,broker}; do : >"$kept"; done
        rss=0
        bad=0
        for round in $(seq 1 "$ROUNDS"); do
            port=$(free_port)
            start_floor "$no_kafka" "$port"
            measure floor "$port" "$c"
            stop_server
            port=$(free_port)
            start_relay "$mode" "$port"
            measure relay "$port" "$c"
            bad=$(( bad + $(awk '{ print $4 }' "$OUT/relay.last") ))
            r=$(peak_rss_mib "$SERVER_PID")
            [ "$r" -gt "$rss" ] && rss=$r
            stop_server
            log "$mode c=$c round $round: floor $(tail -1 "$OUT/floor.rps"), relay $(tail -1 "$OUT/relay.rps") req/s; CPU µs/request floor $(tail -1 "$OUT/floor.cpu") (system $(tail -1 "$OUT/floor.sys")), relay $(tail -1 "$OUT/relay.cpu") (system $(tail -1 "$OUT/relay.sys")); broker floor $(tail -1 "$OUT/floor.broker"), relay $(tail -1 "$OUT/relay.broker")"
        done
        f=$(median <"$OUT/floor.rps")
        r=$(median <"$OUT/relay.rps")
        fc=$(median <"$OUT/floor.cpu")
        rc=$(median <"$OUT/relay.cpu")
        fs=$(median <"$OUT/floor.sys")
        rs=$(median <"$OUT/relay.sys")
        fb=$(median <"$OUT/floor.broker")
        rb=$(median <"$OUT/relay.broker")
        BEST[$mode]=$(( r > ${BEST[$mode]:-0} ? r : ${BEST[$mode]:-0} ))
        echo "| $mode | $c | $f | $r | $(awk -v r="$r" -v f="$f" 'BEGIN { printf "%.2f", r / f }') | $rss MiB | $bad | $fc / $rc | $fs / $rs | $fb / $rb |"
    done
done
fi

# --- latency at half the relay's best rate -------------------------------------------
if part latency; then
hog=""
if [ "$LAT_HOG" != 0 ]; then
    python3 -c 'import sys, time
busy = float(sys.argv[1]) * 0.01
while True:
    t = time.perf_counter()
    while time.perf_counter() - t < busy:
        pass
    time.sleep(max(0.0, 0.01 - (time.perf_counter() - t)))' "$LAT_HOG" &
    hog=$!
    PIDS+=("$hog")
    log "latency part under a busy process taking $LAT_HOG of a core (LAT_HOG)"
fi
echo
echo "| ack mode | rate (req/s) | floor p50 / p99 (ms, medians) | relay p50 / p99 (ms, medians) | relay p99 - floor p99, median (rounds) | warm-up p99 floor / relay (ms, medians) | relay's own p99 / slowest (ms, its histogram's bucket bounds, worst round) | relay peak RSS |"
echo "|---|---|---|---|---|---|---|---|"
for mode in $MODES; do
    no_kafka=$(floor_skips_kafka "$mode")
    rate=$(( ${BEST[$mode]:-${RATE:-0}} / 2 ))
    [ "$rate" -gt 0 ] || { log "no best rate for $mode: run the throughput part, or set RATE"; continue; }
    : >"$OUT/lat.rounds"
    rss=0
    for round in $(seq 1 "$LAT_ROUNDS"); do
        port=$(free_port)
        start_floor "$no_kafka" "$port"
        read -r _ fp50 fp99 _ fwarm _ < <(run_paced "$port" "$rate" "$LAT_CONNS")
        stop_server
        port=$(free_port)
        start_relay "$mode" "$port"
        read -r _ rp50 rp99 rerr rwarm rwerr < <(run_paced "$port" "$rate" "$LAT_CONNS")
        # The relay's own request times (arrival to answer, warm-up included)
        # and, in spool mode, its flushes: a client-side p99 far above them
        # was spent outside the relay's handling (see BENCHMARKS.md).
        curl -s "http://127.0.0.1:$RELAY_ADMIN/metrics" >"$OUT/lat.metrics"
        own='edge_relay_request_duration_seconds_bucket[{]endpoint="envelope",'
        flush='edge_relay_spool_flush_duration_seconds_bucket[{]'
        own99=$(histogram_bound "$own" 0.99 <"$OUT/lat.metrics")
        own100=$(histogram_bound "$own" 1 <"$OUT/lat.metrics")
        flush99=$(histogram_bound "$flush" 0.99 <"$OUT/lat.metrics")
        own_mean=$(histogram_mean edge_relay_request_duration_seconds '{endpoint="envelope"}' <"$OUT/lat.metrics")
        flush_mean=$(histogram_mean edge_relay_spool_flush_duration_seconds '' <"$OUT/lat.metrics")
        r=$(peak_rss_mib "$SERVER_PID")
        [ "$r" -gt "$rss" ] && rss=$r
        stop_server
        diff=$(awk -v a="$rp99" -v b="$fp99" 'BEGIN { printf "%.2f", a - b }')
        echo "$fp50 $fp99 $rp50 $rp99 $diff $fwarm $rwarm $own99 $own100" >>"$OUT/lat.rounds"
        log "$mode latency round $round at $rate req/s: p99 floor $fp99, relay $rp99 ms (difference $diff); warm-up p99 floor $fwarm, relay $rwarm; relay errors $rerr (warm-up $rwerr); the relay's own mean $own_mean ms, p99 <= $own99 ms, slowest <= $own100 ms; flush mean $flush_mean ms, p99 <= $flush99 ms"
    done
    col() { awk -v c="$1" '{ print $c }' "$OUT/lat.rounds" | median; }
    rounds=$(awk '{ printf "%s%+.2f", sep, $5; sep = ", " }' "$OUT/lat.rounds")
    worst() { awk -v c="$1" '{ print $c }' "$OUT/lat.rounds" | sort -g | tail -1; }
    echo "| $mode | $rate | $(col 1) / $(col 2) | $(col 3) / $(col 4) | $(col 5 | awk '{ printf "%+.2f", $1 }') ms ($rounds) | $(col 6) / $(col 7) | $(worst 8) / $(worst 9) | $rss MiB |"
done
if [ -n "$hog" ]; then kill "$hog" 2>/dev/null || true; fi
fi

# --- two settings of the relay, paired ------------------------------------------------
if part pair; then
echo
echo "| ack mode | connections | rounds | relay / floor with PAIR_A (median) | with PAIR_B (median) | B - A (mean of the rounds) | rounds B ahead |"
echo "|---|---|---|---|---|---|---|"
log "pair: A is '${PAIR_A:-}', B is '${PAIR_B:-}'"
for mode in $MODES; do
    no_kafka=$(floor_skips_kafka "$mode")
    for c in $CONNS; do
        : >"$OUT/pair.ratios"
        for round in $(seq 1 "$ROUNDS"); do
            port=$(free_port)
            start_floor "$no_kafka" "$port"
            f=$(run_wrk "$port" "$c" | awk '{ print $1 }')
            stop_server
            # A first in odd rounds, B first in even ones: the second run
            # of a round has an edge (+0.02 to +0.05 in relay / floor,
            # measured with two builds swapped), which the order cancels.
            declare -A ratio=()
            sides="A B"
            [ $((round % 2)) = 0 ] && sides="B A"
            for side in $sides; do
                settings=$PAIR_A
                [ "$side" = B ] && settings=$PAIR_B
                port=$(free_port)
                RELAY_ENV=${settings:-} start_relay "$mode" "$port"
                r=$(run_wrk "$port" "$c" | awk '{ print $1 }')
                stop_server
                ratio[$side]=$(awk -v r="$r" -v f="$f" 'BEGIN { printf "%.3f", r / f }')
            done
            ratios=" ${ratio[A]} ${ratio[B]}"
            echo "$ratios" >>"$OUT/pair.ratios"
            log "pair $mode c=$c round $round: floor $f req/s; relay / floor A, B:$ratios"
        done
        a=$(awk '{ print $1 }' "$OUT/pair.ratios" | median)
        b=$(awk '{ print $2 }' "$OUT/pair.ratios" | median)
        read -r diff ahead < <(awk '{ d += $2 - $1; n++; if ($2 > $1) k++ }
            END { printf "%+.3f %d\n", d / n, k }' "$OUT/pair.ratios")
        echo "| $mode | $c | $ROUNDS | $a | $b | $diff | $ahead of $ROUNDS |"
    done
done
fi

# --- instructions per request (callgrind) ---------------------------------------
# Each server runs twice under callgrind: once with CG_RATE req/s for
# CG_SECONDS after a 2 s warm-up, once with the same warm-up and then as long
# idle; the difference over the requests is the user-space instructions of
# one request, all threads counted (librdkafka's too), start-up and idle
# timers cancelled out. Unlike requests/s, the figure stays put when other
# tenants take the CPU (it leaves out the kernel, waits and cache misses).
if part instructions; then
need_apt valgrind valgrind
CG_RATE=${CG_RATE:-20}
CG_SECONDS=${CG_SECONDS:-20}
CG_CONNS=${CG_CONNS:-4}
# The callgrind run of one server (START... PORT starts it); CG_TOTAL is
# its instructions. Not in a subshell: the exit trap stops what it started.
cg_run() { # NAME LOADED(0|1) START...
    local name=$1 loaded=$2 port out
    shift 2
    port=$(free_port)
    out="$OUT/cg-$name-$loaded.out"
    UNDER=(valgrind --tool=callgrind --callgrind-out-file="$out")
    "$@" "$port"
    UNDER=()
    wait_http "http://127.0.0.1:$port/"
    local result
    if [ "$loaded" = 1 ]; then
        result=$(paced "$port" "$CG_RATE" "$CG_CONNS" "$CG_SECONDS" 2)
    else
        result=$(paced "$port" "$CG_RATE" "$CG_CONNS" 2)
        sleep "$CG_SECONDS"
    fi
    echo "$name $loaded: $result" >>"$OUT/loadgen.log"
    case $result in
        *" errors=0"*) ;;
        *) echo "load: $name answered with errors under callgrind: $result" >&2; exit 1 ;;
    esac
    stop_server
    CG_TOTAL=$(awk '/^totals:/ { print $2 }' "$out")
    [ -n "$CG_TOTAL" ] || { echo "load: no callgrind totals in $out" >&2; exit 1; }
}
echo
echo "| ack mode | floor instructions per request | relay instructions per request | relay / floor |"
echo "|---|---|---|---|"
for mode in $MODES; do
    no_kafka=$(floor_skips_kafka "$mode")
    requests=$(( CG_RATE * CG_SECONDS ))
    cg_run "floor-$mode" 1 start_floor "$no_kafka"; fa=$CG_TOTAL
    cg_run "floor-$mode" 0 start_floor "$no_kafka"; fb=$CG_TOTAL
    cg_run "relay-$mode" 1 start_relay "$mode"; ra=$CG_TOTAL
    cg_run "relay-$mode" 0 start_relay "$mode"; rb=$CG_TOTAL
    read -r f r ratio < <(awk -v fa="$fa" -v fb="$fb" -v ra="$ra" -v rb="$rb" -v n="$requests" \
        'BEGIN { f = (fa - fb) / n; r = (ra - rb) / n; printf "%.0fk %.0fk %.2f\n", f / 1000, r / 1000, r / f }')
    log "instructions $mode: floor $fa - $fb, relay $ra - $rb, over $requests requests"
    echo "| $mode | $f | $r | $ratio |"
done
fi

# --- 10x overload ---------------------------------------------------------------------
if part overload; then
echo
echo "| ack mode | connections | 2xx req/s | non-2xx (503 shed) | relay peak RSS |"
echo "|---|---|---|---|---|"
for mode in $MODES; do
    max_c=0
    for c in $CONNS; do [ "$c" -gt "$max_c" ] && max_c=$c; done
    c=$(( max_c * 10 ))
    port=$(free_port)
    start_relay "$mode" "$port"
    read -r rps _ _ bad _ < <(run_wrk "$port" "$c")
    rss=$(peak_rss_mib "$SERVER_PID")
    stop_server
    echo "| $mode | $c | $rps | $bad | $rss MiB |"
done
fi
echo
log "raw wrk output and logs: $OUT"
