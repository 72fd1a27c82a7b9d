#!/usr/bin/env bash
# Memory cache hits of imgnode against nginx serving the same bytes as a static file, with wrk.
#
#   bash benches/cache_hits.sh        # uses ./target/release/imgnode (builds it if missing)
#   DURATION=30s CONNS=64 bash benches/cache_hits.sh
#
# Scenarios (each DURATION after a WARMUP, same wrk settings; traffic only to 127.0.0.1):
#   nginx      a private nginx (temp prefix, worker_processes auto) serving one static file
#   imgnode    the same bytes as an imgnode memory hit (X-Cache: HIT-MEMORY), ~TARGET_BYTES
#   hit_idle   the hit at HIT_CONNS connections, idle node (baseline for the next one)
#   underload  the hit at HIT_CONNS connections while COLD_CONNS connections drive cold
#              renders with unique URLs (every request a new w/q/format/image variant)
# Results go to stdout; copy them into benches/RESULTS.md with the date.
#
# Figures (2026-11-29, 2 cores AMD EPYC, Debian 12, nginx 1.22.1, wrk 4.1.0, defaults;
# /i/demo/ladybird.webp?w=900, 21,510 bytes, HIT-MEMORY; 4 runs, range; see RESULTS.md):
#
#   64 conns         req/s            p50              p99            CPU/req
#   nginx static     83,620-89,461    0.191-0.244 ms   7.91-7.93 ms   11.0-11.7 us
#   imgnode hit      65,110-71,705    0.752-0.805 ms   2.75-3.21 ms   14.2-16.0 us
#   ratio imgnode/nginx req/s: 0.78-0.81x (target >= 0.9x: missed); p99 < 5 ms: met
#
#   hit, 16 conns    req/s            p50              p99            cold load
#   idle             57,841-71,836    0.128-0.205 ms   1.78-2.15 ms   -
#   128 cold conns    2,639-3,932     3.88-6.12 ms     12.9-19.9 ms   69-75 renders/s, 134k-169k x 503
#   60 cold conns    24,281           0.419 ms         6.42 ms        162 renders/s, no 503 (1 run)
#   hit p99 under load: 6-11x idle (128), 3x (60): target "unchanged" missed.
#   wrk shares the 2 cores (~1 core), so absolute figures are wrk-bound; compare ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
command -v curl >/dev/null || { echo "needs curl" >&2; exit 1; }
if ! command -v nginx >/dev/null && [[ ! -x /usr/sbin/nginx ]]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null 2>&1 ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null; }
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

DURATION=${DURATION:-15s}
WARMUP=${WARMUP:-3s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
HIT_CONNS=${HIT_CONNS:-16}
COLD_CONNS=${COLD_CONNS:-128}
TARGET_BYTES=${TARGET_BYTES:-20480}
PORT=${PORT:-18080}
OPS_PORT=${OPS_PORT:-19090}
NGINX_PORT=${NGINX_PORT:-18090}
BIN=${BIN:-./target/release/imgnode}
secs=${DURATION%s}
[[ $secs =~ ^[0-9]+$ ]] || { echo "DURATION must be whole seconds (15s)" >&2; exit 2; }

[[ -x $BIN ]] || cargo build --release --locked --quiet --bin imgnode

tmp=$(mktemp -d)
chmod 755 "$tmp" # nginx workers run as an unprivileged user
mkdir -p "$tmp/data" "$tmp/nginx/www" && chmod 755 "$tmp/nginx" "$tmp/nginx/www"
node_pid='' ngx_pid='' cold_pid='' wrk_pid=''
stop() { # pid: TERM, up to 12 s (drain), then KILL
  local pid=$1
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  set +e
  stop "$wrk_pid"; stop "$cold_pid"; stop "$node_pid"; stop "$ngx_pid"
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

IMGNODE_STORAGE__DATA_DIR="$tmp/data" \
IMGNODE_SERVER__PUBLIC_LISTEN="127.0.0.1:$PORT" \
IMGNODE_SERVER__OPS_LISTEN="127.0.0.1:$OPS_PORT" \
IMGNODE_LOG__LEVEL=warn \
  "$BIN" --config benches/bench.toml serve 2>"$tmp/imgnode.log" &
node_pid=$!
for _ in $(seq 1 200); do
  curl -fsS --max-time 1 "http://127.0.0.1:$OPS_PORT/ready" >/dev/null 2>&1 && break
  sleep 0.05
done
curl -fsS --max-time 2 "http://127.0.0.1:$OPS_PORT/ready" >/dev/null

# The candidate closest to TARGET_BYTES (each one renders once here).
# CANDIDATES overrides the list (space-separated paths).
if [[ -n ${CANDIDATES:-} ]]; then
  read -ra cands <<<"$CANDIDATES"
else
  cands=(/i/demo/ladybird.webp?w=400 /i/demo/ladybird.webp?w=500 /i/demo/ladybird.webp?w=600
    /i/demo/ladybird.webp?w=700 /i/demo/ladybird.webp?w=800 /i/demo/ladybird.webp?w=900
    '/i/demo/ladybird.jpg?w=300&q=70' '/i/demo/ladybird.jpg?w=400&q=70' '/i/demo/ladybird.jpg?w=500&q=70')
fi
best='' best_size=0 best_d=0
for path in "${cands[@]}"; do
  size=$(curl -fsS --max-time 30 -o /dev/null -w '%{size_download}' "http://127.0.0.1:$PORT$path")
  d=$((size - TARGET_BYTES)); d=${d#-}
  if [[ -z $best ]] || ((d < ${best_d})); then best=$path best_size=$size best_d=$d; fi
done
HIT="$best"
for i in $(seq 1 10); do # a memory hit, and exactly its bytes for nginx
  curl -fsS --max-time 10 -D "$tmp/hit.headers" -o "$tmp/hit.body" "http://127.0.0.1:$PORT$HIT"
  grep -qi '^x-cache: HIT-MEMORY' "$tmp/hit.headers" && break
  ((i < 10)) || { echo "no HIT-MEMORY for $HIT" >&2; cat "$tmp/hit.headers" >&2; exit 1; }
  sleep 0.1
done
ext=${HIT%%\?*}; ext=${ext##*.}
cp "$tmp/hit.body" "$tmp/nginx/www/hit.$ext" && chmod 644 "$tmp/nginx/www/hit.$ext"
ctype=$(awk -F': ' 'tolower($1)=="content-type"{print $2}' "$tmp/hit.headers" | tr -d '\r')

cat >"$tmp/nginx/nginx.conf" <<EOF
worker_processes auto;
daemon off;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  open_file_cache max=16 inactive=60s;
  open_file_cache_valid 60s;
  client_body_temp_path $tmp/nginx/body;
  proxy_temp_path $tmp/nginx/proxy;
  types { $ctype $ext; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $tmp/nginx/www;
    add_header Cache-Control "public, max-age=31536000";
    add_header X-Content-Type-Options nosniff;
  }
}
EOF
"$NGINX" -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -e "$tmp/nginx/error.log" &
ngx_pid=$!
NGX_PATH="/hit.$ext"
for _ in $(seq 1 100); do
  curl -fsS --max-time 1 -o "$tmp/ngx.body" "http://127.0.0.1:$NGINX_PORT$NGX_PATH" 2>/dev/null && break
  kill -0 "$ngx_pid" 2>/dev/null || { cat "$tmp/nginx/error.log" >&2; exit 1; }
  sleep 0.05
done
cmp "$tmp/hit.body" "$tmp/ngx.body" || { echo "nginx does not serve the same bytes" >&2; exit 1; }

echo "machine: $(nproc) cores, $(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo), $(uname -m), $(. /etc/os-release && echo "$PRETTY_NAME")"
echo "date:    $(date -u '+%F %T UTC')"
echo "versions: $("$NGINX" -v 2>&1), imgnode $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src 2>/dev/null || echo ' (+local changes)'), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
echo "settings: $CONNS conns, $THREADS wrk threads, $DURATION after $WARMUP warm-up; hit $HIT_CONNS conns, cold $COLD_CONNS conns"
echo "hit url:  $HIT ($best_size bytes, $(grep -i '^x-cache' "$tmp/hit.headers" | tr -d '\r')); nginx $NGX_PATH ($(stat -c %s "$tmp/ngx.body") bytes, identical)"

to_ms() { awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
  f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : 1
  printf "%.3f", n * f }'; }
field() { awk -v k="$1" '$1 == k { print $2; exit }' "$2"; }
cpu_ticks() { # utime+stime of the pids and their children (threads included), in clock ticks
  local t=0 p
  for p in "$@" $(pgrep -P "$(echo "$@" | tr ' ' ',')" 2>/dev/null || true); do
    [[ -r /proc/$p/stat ]] && t=$((t + $(awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$p/stat")))
  done
  echo "$t"
}
hz=$(getconf CLK_TCK)
hits_memory() {
  curl -fsS --max-time 5 "http://127.0.0.1:$OPS_PORT/metrics" |
    awk '/^imgnode_http_request_duration_seconds_count/ && /cache="HIT-MEMORY"/ { s += $NF } END { print s + 0 }'
}

# run NAME URL CONNS SERVERPIDS...: warm-up, then a measured wrk; prints one summary line and
# keeps the full wrk output in $tmp/NAME.out.
run() {
  local name=$1 url=$2 conns=$3; shift 3
  timeout -k 5 $((${WARMUP%s} + 30)) wrk -t"$THREADS" -c"$conns" -d"$WARMUP" "$url" >/dev/null
  local t0; t0=$(cpu_ticks "$@")
  timeout -k 5 $((secs + 30)) wrk -t"$THREADS" -c"$conns" -d"$DURATION" --latency "$url" >"$tmp/$name.out" &
  wrk_pid=$!
  if [[ ${PROFILE:-1} == 1 ]] && ((secs >= 8)); then # per-thread CPU over 2 s mid-run
    sleep $((secs / 2 - 1))
    top -H -b -n 2 -d 2 -w 160 | awk '/^top -/ { n++; next } n == 2 && /^%Cpu/ { print "  " $0 }
      n == 2 && /PID +USER/ { h = 1; next } n == 2 && h && c < 7 { print "  " $0; c++ }' >"$tmp/$name.top"
  fi
  wait "$wrk_pid"; wrk_pid=''
  local t1; t1=$(cpu_ticks "$@")
  local out=$tmp/$name.out reqs rps p50 p99 non2xx errs
  reqs=$(awk '/requests in/ { print $1 }' "$out")
  rps=$(awk '/^Requests\/sec/ { print $2 }' "$out")
  p50=$(to_ms "$(field 50% "$out")") p99=$(to_ms "$(field 99% "$out")")
  non2xx=$(awk '/Non-2xx/ { print $NF }' "$out"); errs=$(grep -E '^ *Socket errors' "$out" | sed 's/^ *//' || true)
  printf '%-10s %10s req/s  p50 %7s ms  p99 %7s ms  server CPU %5.1f us/req  non-2xx %s%s\n' \
    "$name" "$rps" "$p50" "$p99" "$(awk -v d=$((t1 - t0)) -v r="$reqs" -v hz="$hz" 'BEGIN { printf "%.1f", d / hz * 1e6 / r }')" \
    "${non2xx:-0}" "${errs:+  ($errs)}"
  [[ ! -s $tmp/$name.top ]] || { echo "  top -H, 2 s mid-run (a thread line with TID = PID shows the whole process):"; cat "$tmp/$name.top"; }
  eval "${name}_rps=$rps ${name}_p50=$p50 ${name}_p99=$p99"
}

IMG_URL="http://127.0.0.1:$PORT$HIT"
echo
echo "== 1. $CONNS connections: nginx static vs imgnode memory hit"
run nginx "http://127.0.0.1:$NGINX_PORT$NGX_PATH" "$CONNS" "$ngx_pid"
h0=$(hits_memory)
run imgnode "$IMG_URL" "$CONNS" "$node_pid"
h1=$(hits_memory)
echo "imgnode HIT-MEMORY answers in warm-up + run: $((h1 - h0)) (metrics)"
echo "ratio imgnode/nginx: rps $(awk "BEGIN { printf \"%.2f\", $imgnode_rps / $nginx_rps }")x," \
  "p50 $(awk "BEGIN { printf \"%.2f\", $imgnode_p50 / $nginx_p50 }")x, p99 $(awk "BEGIN { printf \"%.2f\", $imgnode_p99 / $nginx_p99 }")x"

echo
echo "== 2. cache hits at $HIT_CONNS connections, idle node vs CPU pool saturated by cold renders"
run hit_idle "$IMG_URL" "$HIT_CONNS" "$node_pid"

# Cold renders: every request a distinct variant (image x format x w 100..1100 x q 1..99
# without 80, the default), threads interleaved so they never repeat a URL.
cat >"$tmp/cold.lua" <<'EOF'
local threads = {}
local images = { "ladybird", "dune", "elephants", "arc-colors" }
local formats = { "jpg", "webp" }
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
function init(args)
  nthreads = tonumber(args[1]) or 1
  n, s200, s503, sother = 0, 0, 0, 0
end
function request()
  local u = n * nthreads + tid
  n = n + 1
  local k = math.floor(u / 8)
  local q = 1 + math.floor(k / 1001) % 98
  if q >= 80 then q = q + 1 end
  return wrk.format("GET", string.format("/i/demo/%s.%s?w=%d&q=%d",
    images[u % 4 + 1], formats[math.floor(u / 4) % 2 + 1], 100 + k % 1001, q))
end
function response(status, headers, body)
  if status == 200 then s200 = s200 + 1
  elseif status == 503 then s503 = s503 + 1
  else sother = sother + 1 end
end
function done(summary, latency, requests)
  local a, b, c, m = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    a = a + t:get("s200"); b = b + t:get("s503"); c = c + t:get("sother")
    m = math.max(m, t:get("n") * #threads)
  end
  io.write(string.format("cold statuses: 200 %d, 503 %d, other %d (distinct URLs issued <= %d)\n", a, b, c, m))
end
EOF
m_before=$(curl -fsS --max-time 5 "http://127.0.0.1:$OPS_PORT/metrics")
timeout -k 5 $((secs + 40)) wrk -t"$THREADS" -c"$COLD_CONNS" -d"$((secs + 4))s" --timeout 30s --latency \
  -s "$tmp/cold.lua" "http://127.0.0.1:$PORT" -- "$THREADS" >"$tmp/cold.out" 2>&1 &
cold_pid=$!
sleep 2
depth=$(curl -fsS --max-time 5 "http://127.0.0.1:$OPS_PORT/metrics" | awk '/^imgnode_cpu_(queue_depth|in_flight) / { printf "%s=%s ", $1, $2 }')
timeout -k 5 $((secs + 30)) wrk -t"$THREADS" -c"$HIT_CONNS" -d"$DURATION" --latency "$IMG_URL" >"$tmp/hit_load.out" &
wrk_pid=$!
if [[ ${PROFILE:-1} == 1 ]] && ((secs >= 8)); then
  sleep $((secs / 2 - 1))
  top -H -b -n 2 -d 2 -w 160 | awk '/^top -/ { n++; next } n == 2 && /^%Cpu/ { print "  " $0 }
    n == 2 && /PID +USER/ { h = 1; next } n == 2 && h && c < 10 { print "  " $0; c++ }' >"$tmp/hit_load.top"
fi
wait "$wrk_pid"; wrk_pid=''
wait "$cold_pid" || true
cold_pid=''
m_after=$(curl -fsS --max-time 5 "http://127.0.0.1:$OPS_PORT/metrics")
out=$tmp/hit_load.out
hit_load_rps=$(awk '/^Requests\/sec/ { print $2 }' "$out")
hit_load_p50=$(to_ms "$(field 50% "$out")") hit_load_p99=$(to_ms "$(field 99% "$out")")
printf '%-10s %10s req/s  p50 %7s ms  p99 %7s ms  non-2xx %s\n' underload "$hit_load_rps" \
  "$hit_load_p50" "$hit_load_p99" "$(awk '/Non-2xx/ { print $NF }' "$out" | grep . || echo 0)"
grep -E '^ *Socket errors' "$out" || true
[[ ! -s $tmp/hit_load.top ]] || { echo "  top -H, 2 s mid-run (a thread line with TID = PID shows the whole process):"; cat "$tmp/hit_load.top"; }
echo "pool 2 s into the cold load: $depth"
echo "cold load ($COLD_CONNS conns, $((secs + 4))s): $(awk '/^Requests\/sec/ { print $2 }' "$tmp/cold.out") req/s," \
  "p50 $(to_ms "$(field 50% "$tmp/cold.out")") ms, p99 $(to_ms "$(field 99% "$tmp/cold.out")") ms"
grep -E 'cold statuses|Non-2xx|Socket errors' "$tmp/cold.out" | sed 's/^ */  /'
metric() { awk -v m="$1" 'index($0, m) == 1 { s += $NF } END { print s + 0 }'; }
echo "  renders finished: $(($(metric 'imgnode_render_renders_total{' <<<"$m_after") - $(metric 'imgnode_render_renders_total{' <<<"$m_before"))), rejected (503 OVERLOADED): $(($(metric 'imgnode_cpu_rejected_total ' <<<"$m_after") - $(metric 'imgnode_cpu_rejected_total ' <<<"$m_before")))"
echo "hit p99 under load / idle: $(awk "BEGIN { printf \"%.2f\", $hit_load_p99 / $hit_idle_p99 }")x, rps $(awk "BEGIN { printf \"%.2f\", $hit_load_rps / $hit_idle_rps }")x"
echo "== node RSS: $(ps -o rss= -p "$node_pid") KiB; node log (stderr, level warn): $(wc -l <"$tmp/imgnode.log") lines," \
  "$(wc -c <"$tmp/imgnode.log") bytes, $(grep -c OVERLOADED "$tmp/imgnode.log" || true) of them OVERLOADED"
