#!/usr/bin/env bash
# Memory under load is bounded by configuration: a node (defaults but THREADS render threads,
# 0 = one per core) renders the largest JPEG of the comparison corpus (5640x3172, 17.9 MP,
# progressive, 16 MB) to unique 1200 px JPEGs from 8 connections for 60 s; prints the peak
# RSS (VmHWM). More connections than render threads only queue (cpu.queue), so the peak
# follows THREADS, not the concurrency.
#   bash benches/compare/run.sh once (for the corpus), then:
#   bash benches/memory_bound.sh; THREADS=1 bash benches/memory_bound.sh
# Figures: benches/RESULTS.md ("Memory bound").
set -euo pipefail
THREADS=${THREADS:-0}
BIN=${BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release/imgnode}
D="${WORK:-/var/tmp/imgnode-membound}/node"; rm -rf "$D"; mkdir -p "$D/data" "$D/src"
cp "${CORPUS:-/var/tmp/imgnode-compare/corpus/files}/elephants18.jpg" "$D/src/"
cat >"$D/imgnode.toml" <<EOC
[server]
public_listen = "127.0.0.1:18991"
ops_listen = "127.0.0.1:18992"
[storage]
data_dir = "$D/data"
[cache]
disk = "1GiB"
[cpu]
threads = $THREADS
[log]
level = "warn"
[demo]
seed = false
[delivery]
client_renders_per_minute = 0
image_variants_per_hour = 0
EOC
$BIN --config $D/imgnode.toml account create bench --plan unlimited >/dev/null
$BIN --config $D/imgnode.toml import --account bench $D/src >/dev/null
$BIN --config $D/imgnode.toml serve 2>$D/log & PID=$!
trap 'kill $PID 2>/dev/null' EXIT
until curl -sf http://127.0.0.1:18991/health >/dev/null; do sleep 0.2; done
echo "idle: $(grep -E 'VmRSS|VmHWM' /proc/$PID/status | tr -s ' ' | tr '\n' ' ')"
curl -s -o /dev/null -w "first: %{http_code} %{size_download} B %{time_total}s\n" "http://127.0.0.1:18991/i/bench/elephants18.jpg?w=1200&q=80"
cat > $D/u.lua <<'EOL'
counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, string.format("/i/bench/elephants18.jpg?w=1200&q=80&bg=%06x", counter))
end
EOL
wrk -t1 -c8 -d60s --timeout 60s -s $D/u.lua http://127.0.0.1:18991/ | grep -E "requests in|Non-2xx|Latency|Socket"
echo "after: $(grep -E 'VmRSS|VmHWM' /proc/$PID/status | tr -s ' ' | tr '\n' ' ')"
curl -s http://127.0.0.1:18992/metrics | grep -E '^imgnode_cpu_queue_depth|^imgnode_http_requests_total.*status="503"' || true
