#!/usr/bin/env bash
# The robustness soak (issue 7): a release node under a mixed load that saturates its CPU
# pool for DURATION (default 30 minutes), then 10 000 idle keep-alive connections held while
# new requests keep coming. Traffic stays on 127.0.0.1.
#
#   bash benches/soak_mixed.sh                  # 30 minutes
#   DURATION=120 bash benches/soak_mixed.sh     # a short check
#
# Three wrk processes, so each class gets its own latency figures and status counts:
#   cold  15 %: unique URLs (width and quality from a counter): every one is a render; 8
#               connections back to back keep every render thread busy (the pool saturated)
#   hits  80 %: 60 warm URLs (3 photos x 20 widths), cached after the warm-up
#   api    5 %: tenant API reads (list images), with a key on the `unlimited` plan
# Renders set the pace (about 50 a second on 2 cores); hits and API calls are paced (wrk's
# per-request delay, HIT_DELAY_MS and API_DELAY_MS) to about 5.3x and 0.33x that, which is
# the 80/15/5 mix. The printed request counts show the mix actually reached.
# Prints RSS samples ("elapsed_s rss_mib"), then per class: requests, status counts and
# latency percentiles; then the idle-connection phase.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }

DURATION=${DURATION:-1800}
SAMPLE=${SAMPLE:-60}
IDLE=${IDLE:-10000}
PORT=${PORT:-18082}
OPS_PORT=${OPS_PORT:-19092}
HIT_DELAY_MS=${HIT_DELAY_MS:-35}
API_DELAY_MS=${API_DELAY_MS:-35}
# Each side of the idle phase holds IDLE sockets: raise the soft limit to the hard one.
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt $((IDLE + 1000)) ] || { echo "open-file limit $(ulimit -n) too low for $IDLE connections" >&2; exit 1; }

cargo build --release --locked --quiet
data=$(mktemp -d)
work=$(mktemp -d)
cat > "$work/imgnode.toml" <<TOML
[server]
public_listen = "127.0.0.1:$PORT"
ops_listen = "127.0.0.1:$OPS_PORT"
max_connections = 20000
max_connections_per_ip = 0
header_read_timeout = "120s"
[storage]
data_dir = "$data"
[cache]
memory = "128MiB"
disk = "1GiB"
[log]
level = "warn"
[demo]
seed = false
[delivery]
client_renders_per_minute = 0
image_variants_per_hour = 0
TOML
key=$(./target/release/imgnode --config "$work/imgnode.toml" account create soak --plan unlimited |
  sed -n 's/^api key: //p')
./target/release/imgnode --config "$work/imgnode.toml" serve &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data" "$work"' EXIT
for _ in $(seq 1 600); do
  curl -fsS "http://127.0.0.1:$OPS_PORT/ready" >/dev/null 2>&1 && break
  sleep 0.05
done
curl -fsS "http://127.0.0.1:$OPS_PORT/ready" >/dev/null
# The photos go to the `soak` account (plan `unlimited`: no monthly quota cuts the run short).
for image in ladybird dune elephants; do
  curl -fsS -o /dev/null -H "Authorization: Bearer $key" \
    -F "file=@tests/fixtures/photos/$image.jpg" -F "target_path=$image.jpg" \
    "http://127.0.0.1:$PORT/api/v1/images"
  for i in $(seq 1 20); do
    curl -fsS -o /dev/null "http://127.0.0.1:$PORT/i/soak/$image.webp?w=$((100 + i * 10))"
  done
done

# Status counting shared by the three scripts: each thread counts, done() sums.
# `counts` is a global: done() reads each thread's copy with thread:get, which sees globals.
common='
counts = {}
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) counts = {} end
function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local c = t:get("counts") or {}
    for k, v in pairs(c) do total[k] = (total[k] or 0) + v end
  end
  local line = ""
  for k, v in pairs(total) do line = line .. " " .. k .. "=" .. v end
  io.write(string.format("  requests %d, errors %d, statuses:%s\n", summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout, line))
  for _, p in ipairs({50, 90, 99, 99.9}) do
    io.write(string.format("  p%g %.2f ms\n", p, latency:percentile(p) / 1000))
  end
end
'
cat > "$work/hits.lua" <<LUA
$common
local images = {"ladybird", "dune", "elephants"}
function request()
  return wrk.format("GET", "/i/soak/" .. images[math.random(3)] .. ".webp?w=" .. (100 + math.random(20) * 10))
end
function delay() return ${HIT_DELAY_MS} end
LUA
cat > "$work/cold.lua" <<LUA
$common
local images = {"ladybird", "dune", "elephants"}
local n = 0
function init(args) counts = {}; n = math.random(1000000000) end
function request()
  n = n + 1
  local ext = ({"webp", "jpg", "png"})[n % 3 + 1]
  return wrk.format("GET", "/i/soak/" .. images[n % 3 + 1] .. "." .. ext .. "?w=" .. (64 + n % 1800) .. "&q=" .. (30 + math.floor(n / 1800) % 70))
end
LUA
cat > "$work/api.lua" <<LUA
$common
function request()
  return wrk.format("GET", "/api/v1/images?limit=20", {["Authorization"] = "Bearer $key"})
end
function delay() return ${API_DELAY_MS} end
LUA

echo "== mixed load for ${DURATION}s on $(nproc) cores"
wrk -t2 -c16 -d"${DURATION}s" --latency -s "$work/hits.lua" "http://127.0.0.1:$PORT" > "$work/hits.out" &
w1=$!
wrk -t1 -c8 -d"${DURATION}s" -s "$work/cold.lua" "http://127.0.0.1:$PORT" > "$work/cold.out" &
w2=$!
wrk -t1 -c1 -d"${DURATION}s" -s "$work/api.lua" "http://127.0.0.1:$PORT" > "$work/api.out" &
w3=$!
start=$(date +%s)
while kill -0 $w1 2>/dev/null; do
  echo "$(( $(date +%s) - start )) $(( $(awk '/VmRSS/ {print $2}' /proc/$pid/status) / 1024 ))"
  sleep "$SAMPLE"
done
wait $w1 $w2 $w3
for class in hits cold api; do
  echo "== $class"
  cat "$work/$class.out"
done
echo "== server: 5xx by status"
curl -fsS "http://127.0.0.1:$OPS_PORT/metrics" | grep -E '^imgnode_http_requests_total\{.*status="5' || echo "  none"

echo "== $IDLE idle keep-alive connections, and new requests meanwhile"
python3 - "$PORT" "$IDLE" <<'PY' &
import asyncio, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
async def one():
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    await w.drain()
    await r.readuntil(b"\r\n\r\n")
    return r, w
async def main():
    conns = []
    for i in range(0, count, 500):
        conns += await asyncio.gather(*(one() for _ in range(min(500, count - i))))
    print(f"  {len(conns)} idle connections open", flush=True)
    await asyncio.sleep(40)
asyncio.run(main())
PY
idle=$!
until [ "$(curl -fsS "http://127.0.0.1:$OPS_PORT/metrics" | awk '/^imgnode_http_open_connections\{listener="public"\}/ {print $2}')" -ge "$IDLE" ] 2>/dev/null; do sleep 0.5; done
echo "  open connections: $(curl -fsS "http://127.0.0.1:$OPS_PORT/metrics" | awk '/^imgnode_http_open_connections\{listener="public"\}/ {print $2}'), RSS $(( $(awk '/VmRSS/ {print $2}' /proc/$pid/status) / 1024 )) MiB"
wrk -t2 -c16 -d20s --latency -s "$work/hits.lua" "http://127.0.0.1:$PORT" | sed -n '/requests [0-9]*, errors/,$p'
echo "  refused connections: $(curl -fsS "http://127.0.0.1:$OPS_PORT/metrics" | awk '/^imgnode_http_refused_connections_total\{listener="public",/ {n += $2} END {print n + 0}')"
wait $idle
