#!/usr/bin/env bash
# Load test against a running release build of imgnode on loopback, with wrk.
#
#   bash benches/load.sh            # builds --release, starts a node on a temp dir, runs wrk
#   DURATION=30s CONNS=64 bash benches/load.sh
#
# Scenarios (each DURATION, bounded; traffic only to 127.0.0.1):
#   original   the stored JPEG, untouched (no CPU pool)
#   render     /i/demo/ladybird.jpg?w=400 (every request renders until the cache lands)
#   webp       /i/demo/ladybird.webp?w=800
# Results go to stdout; copy them into the table in benches/RESULTS.md with the date.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }

DURATION=${DURATION:-15s}
CONNS=${CONNS:-16}
THREADS=${THREADS:-2}
PORT=${PORT:-18080}
OPS_PORT=${OPS_PORT:-19090}

cargo build --release --locked --quiet
data=$(mktemp -d)
IMGNODE_STORAGE__DATA_DIR="$data" \
IMGNODE_SERVER__PUBLIC_LISTEN="127.0.0.1:$PORT" \
IMGNODE_SERVER__OPS_LISTEN="127.0.0.1:$OPS_PORT" \
IMGNODE_LOG__LEVEL=warn \
  ./target/release/imgnode --config benches/bench.toml serve &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data"' EXIT

for _ in $(seq 1 200); do
  curl -fsS "http://127.0.0.1:$OPS_PORT/ready" >/dev/null 2>&1 && break
  sleep 0.05
done
curl -fsS "http://127.0.0.1:$OPS_PORT/ready" >/dev/null

run() {
  local name=$1 path=$2
  echo "== $name: $path ($CONNS connections, $DURATION)"
  wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "http://127.0.0.1:$PORT$path" \
    | grep -E 'Requests/sec|Transfer/sec|Latency|50%|99%|Non-2xx'
}

echo "machine: $(nproc) cores, $(uname -m), $(date -u +%F)"
run original "/i/demo/ladybird.jpg"
run render   "/i/demo/ladybird.jpg?w=400"
run webp     "/i/demo/ladybird.webp?w=800"
echo "== node RSS: $(ps -o rss= -p $pid) KiB"
