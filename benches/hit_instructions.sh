#!/usr/bin/env bash
# Instructions per memory cache hit, counted by callgrind: deterministic (the same binary gives
# the same count within 0.1 %, whatever else the machine does), so a hit-path regression of a
# few percent shows where wall-clock runs on a shared 2-core machine cannot.
#
#   bash benches/hit_instructions.sh                 # ./target/release/imgnode, benches/bench.toml
#   BIN=/path/to/imgnode CONFIG= bash benches/hit_instructions.sh   # an older binary, no config
#   KEEP=/tmp/hit.cg bash benches/hit_instructions.sh   # keep the dump: callgrind_annotate it
#
# Starts the node under valgrind (one render thread), warms /i/demo/ladybird.webp?w=900 until
# it is a memory hit, zeroes the counters, sends N keep-alive GETs (each asserted HIT-MEMORY),
# dumps, and prints the total divided by N. Traffic only to 127.0.0.1.
#
# Figures (2026-12-06, 2 cores AMD EPYC, Debian 12, valgrind 3.19, N=1000):
#   9e43674 (before the abuse-resistance round)   48,844-48,873 instructions per hit
#   de2c7ef (render budgets, client addresses,     50,007 (+2.4 %)
#            HTTP/2 idle tracking, per-account keys)
#   69ba8bc (hit-path work of issue 16)              40,946
#   99b79ab (issue 17 restructure, 2026-12-07)       41,751-41,825 (+2.0 %; see RESULTS.md)
#   ae6f719 (issue 17 step 6: pub(crate) items)      41,726 (libaom AVIF merged too)
#   f66b558 (issue 20: cache tags, built per hit)     46,766 (+12 %)
#   0638a48 (tag headers reused per thread)          42,265 (+1.3 % over ae6f719)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
BIN=${BIN:-./target/release/imgnode}
CONFIG=${CONFIG-benches/bench.toml}
N=${N:-1000}
PORT=${PORT:-18080}
OPS_PORT=${OPS_PORT:-19090}
[[ -x $BIN ]] || cargo build --release --locked --quiet --bin imgnode
tmp=$(mktemp -d)
pid=''
cleanup() { [[ -z $pid ]] || { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; }; rm -rf "$tmp"; }
trap cleanup EXIT
args=()
[[ -z $CONFIG ]] || args=(--config "$CONFIG")
IMGNODE_STORAGE__DATA_DIR="$tmp/data" IMGNODE_SERVER__PUBLIC_LISTEN="127.0.0.1:$PORT" \
IMGNODE_SERVER__OPS_LISTEN="127.0.0.1:$OPS_PORT" IMGNODE_LOG__LEVEL=warn IMGNODE_CPU__THREADS=1 \
  valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.%p" "$BIN" "${args[@]}" serve \
  2>"$tmp/valgrind.log" &
pid=$!
for _ in $(seq 1 1200); do
  curl -fsS --max-time 1 "http://127.0.0.1:$OPS_PORT/ready" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { cat "$tmp/valgrind.log" >&2; exit 1; }
  sleep 0.5
done
hits() { # N: keep-alive GETs of the hit URL, each must be a memory hit
  python3 - "$1" "$PORT" <<'PY'
import http.client, sys
n, port = int(sys.argv[1]), int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
for i in range(n):
    c.request("GET", "/i/demo/ladybird.webp?w=900")
    r = c.getresponse(); r.read()
    # The warm-up's first answer renders; from then on every one must be a memory hit.
    if (n > 20 or i > 0) and r.getheader("x-cache") != "HIT-MEMORY":
        sys.exit(f"answer {i} was {r.status} {r.getheader('x-cache')}, not HIT-MEMORY")
PY
}
hits 20
callgrind_control -z "$pid" >/dev/null
hits "$N"
callgrind_control -d "$pid" >/dev/null
dump=$(ls "$tmp"/cg.*.1)
total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
echo "binary:  $BIN ($(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
echo "hits:    $N keep-alive GETs of /i/demo/ladybird.webp?w=900 (HIT-MEMORY)"
echo "result:  $((total / N)) instructions per hit"
# KEEP=file keeps the callgrind dump for callgrind_annotate (--inclusive=yes shows where).
[[ -z ${KEEP:-} ]] || cp "$dump" "$KEEP"
