#!/usr/bin/env bash
# Memory under a long mixed load: does RSS level off? Runs a release node on a temp dir and
# drives it with wrk for DURATION (default 10 minutes) with a mix of cache hits (80 %), renders
# of many sizes (15 %, WebP and JPEG) and untouched originals (5 %), sampling the
# node's RSS every SAMPLE seconds. Traffic stays on 127.0.0.1.
#
#   bash benches/soak_rss.sh                    # 10 minutes, 32 connections
#   DURATION=600 CONNS=32 SAMPLE=30 bash benches/soak_rss.sh
#
# Prints "elapsed_s rss_mib" lines, then wrk's summary; copy them into benches/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }

DURATION=${DURATION:-600}
CONNS=${CONNS:-32}
SAMPLE=${SAMPLE:-30}
PORT=${PORT:-18081}
OPS_PORT=${OPS_PORT:-19091}

cargo build --release --locked --quiet
data=$(mktemp -d)
script=$(mktemp --suffix=.lua)
IMGNODE_STORAGE__DATA_DIR="$data" \
IMGNODE_SERVER__PUBLIC_LISTEN="127.0.0.1:$PORT" \
IMGNODE_SERVER__OPS_LISTEN="127.0.0.1:$OPS_PORT" \
IMGNODE_CACHE__MEMORY=128MiB \
IMGNODE_CACHE__DISK=1GiB \
IMGNODE_LOG__LEVEL=warn \
  ./target/release/imgnode --config benches/bench.toml serve &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data" "$script"' EXIT
for _ in $(seq 1 400); do
  curl -fsS "http://127.0.0.1:$OPS_PORT/ready" >/dev/null 2>&1 && break
  sleep 0.05
done
curl -fsS "http://127.0.0.1:$OPS_PORT/ready" >/dev/null

# 80 % hits over 60 warm URLs (3 photos x 20 widths), 15 % renders over 9 600 variants
# (3 photos x 1 600 widths x 2 formats; `v=` is ignored by the cache key, so they turn into
# hits as the run goes on), 5 % originals.
cat > "$script" <<'LUA'
local images = {"ladybird", "dune", "elephants"}
local counter = 0
request = function()
  counter = counter + 1
  local roll = math.random(100)
  local image = images[math.random(#images)]
  if roll <= 80 then
    return wrk.format("GET", "/i/demo/" .. image .. ".webp?w=" .. (100 + math.random(20) * 10))
  elseif roll <= 95 then
    local ext = (counter % 2 == 0) and "webp" or "jpg"
    local w = 200 + ((counter * 7919 + math.random(1000000)) % 1600)
    return wrk.format("GET", "/i/demo/" .. image .. "." .. ext .. "?w=" .. w .. "&v=" .. counter)
  else
    return wrk.format("GET", "/i/demo/" .. image .. ".jpg")
  end
end
LUA

echo "machine: $(nproc) cores, $(uname -m), $(date -u +%F); node pid $pid"
wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency -s "$script" "http://127.0.0.1:$PORT" > "$data/wrk.txt" &
wrk_pid=$!
start=$(date +%s)
while kill -0 "$wrk_pid" 2>/dev/null; do
  now=$(date +%s)
  rss=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$pid/status")
  echo "$((now - start)) $rss"
  sleep "$SAMPLE"
done
wait "$wrk_pid" || true
grep -E 'Requests/sec|Latency|50%|99%|Non-2xx|requests in' "$data/wrk.txt"
echo "5xx: $(curl -fsS "http://127.0.0.1:$OPS_PORT/metrics" | awk '/^imgnode_http_requests_total/ && /status="5/ {s+=$2} END {print s+0}')"
