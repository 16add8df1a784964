#!/usr/bin/env bash
# What a config with many projects costs to load: the time `check-config`
# takes (it compiles everything `run` and a reload compile) and its peak
# RSS, for 1 to 10 000 projects, each with a key, a quota and sampling,
# either sharing the global `[scrub]` or each with a `[projects.scrub]` of
# its own (its own sensitive field, so every project's settings differ).
# Prints the table BENCHMARKS.md records.
#
#   benches/projects.sh
#   COUNTS="1 1000" RELAY_BIN=/tmp/old/edge-relay benches/projects.sh
#
# Settings (environment): COUNTS (1 100 1000 10000), RELAY_BIN (the
# release build of this checkout, built if missing), OUT (a temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."

COUNTS=${COUNTS:-"1 100 1000 10000"}
OUT=${OUT:-$(mktemp -d)}
if [ -z "${RELAY_BIN:-}" ]; then
  cargo build --release --quiet --bin edge-relay
  RELAY_BIN=target/release/edge-relay
fi
source benches/common.sh
[ -x /usr/bin/time ] || need_apt /usr/bin/time time

# A config of $1 projects; with $2 = own, each overrides [scrub].
write_config() {
  python3 - "$1" "$2" <<'EOF'
import sys
n, own = int(sys.argv[1]), sys.argv[2] == "own"
print('[file_sink]\npath = "/dev/null"\n')
for i in range(1, n + 1):
    print(f'[[projects]]\nid = {i}\npublic_keys = ["{i:032x}"]')
    if own:
        print(f'[projects.scrub]\nsensitive_fields = ["order_secret_{i}"]')
    print('[[projects.quotas]]\ncategories = ["error"]\nlimit = 1000\nwindow_secs = 60')
    print('[projects.sampling]\nerror_rate = 1.0\ntransaction_rate = 1.0\n')
EOF
}

echo "| projects | [scrub] | check-config (s) | peak RSS (MiB) |"
echo "|---|---|---|---|"
for n in $COUNTS; do
  for scrub in shared own; do
    config="$OUT/projects-$n-$scrub.toml"
    write_config "$n" "$scrub" >"$config"
    /usr/bin/time -f '%e %M' -o "$OUT/time" "$RELAY_BIN" check-config --config "$config" >/dev/null
    read -r secs kib <"$OUT/time"
    printf '| %s | %s | %s | %s |\n' "$n" "$scrub" "$secs" "$((kib / 1024))"
  done
done
