#!/usr/bin/env bash
# Side-by-side comparison of imgnode with thumbor, ipx (sharp/libvips), nginx image_filter /
# nginx static and the vipsthumbnail CLI, on a corpus of Debian wallpapers. See README.md here.
#
#   bash benches/compare/run.sh                                     # everything, DURATION=20
#   SCENARIOS="jpg400 hit" PEERS="imgnode thumbor" CONCURRENCY=8 DURATION=10 bash benches/compare/run.sh
#   DURATION=3 MAX_REQUESTS=50 CONCURRENCY=2 bash benches/compare/run.sh   # smoke run
#
# Every server listens on 127.0.0.1 only, on ports BASE_PORT+1..+30, with private prefixes
# under $WORK/run-*; all are stopped at exit. Results: a Markdown table on stdout and in
# $WORK/results-<date>.md; raw figures in $WORK/run-<date>/results.jsonl.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)

WORK=${WORK:-/var/tmp/imgnode-compare}
TOOLS=${TOOLS:-/var/tmp/cargo-tools}
BIN=${BIN:-$REPO/target/release/imgnode}
SCENARIOS=${SCENARIOS:-"jpg400 jpg1200 webp800 avif800 hit"}
PEERS=${PEERS:-"imgnode thumbor ipx nginx vips"}
CONCURRENCY=${CONCURRENCY:-"2 8"}
DURATION=${DURATION:-20}                                  # seconds per measured run
MAX_REQUESTS=${MAX_REQUESTS:-2000}                        # answers per cold run (whichever first)
AVIF_MAX_REQUESTS=${AVIF_MAX_REQUESTS:-$(((MAX_REQUESTS + 3) / 4))}
HIT_MAX_REQUESTS=${HIT_MAX_REQUESTS:-2000000}
Q=${Q:-80}                                                # encoder quality, every format
CORPUS=${CORPUS:-all}                                     # all | jpeg (JPEG inputs only)
HIT_TARGET_BYTES=${HIT_TARGET_BYTES:-20480}
WRK_THREADS=${WRK_THREADS:-1}
QUALITY=${QUALITY:-1}                                     # 0: skip the bytes/DSSIM pass
BASE_PORT=${BASE_PORT:-18700}
export DSSIM=$TOOLS/bin/dssim CONVERT=/usr/bin/convert MAGICK_CONFIGURE_PATH=$WORK/impolicy

[[ $DURATION =~ ^[0-9]+$ ]] || { echo "DURATION is whole seconds" >&2; exit 2; }
[[ -x $BIN ]] || { echo "no imgnode binary at $BIN (set BIN=...)" >&2; exit 2; }
stamp=$(date -u +%Y%m%d-%H%M%S)
RUN=$WORK/run-$stamp
mkdir -p "$RUN" "$WORK/impolicy"
chmod 755 "$WORK" "$RUN" # nginx workers run as nobody/www-data
RESULTS=$RUN/results.jsonl
: >"$RESULTS"
CMDLOG=$RUN/commands.txt
: >"$CMDLOG"
log() { echo "[$(date -u +%T)] $*" >&2; }
cmd() { printf '%s\n' "$*" >>"$CMDLOG"; } # the exact commands, for the report
cmd "$(printf '%q ' env SCENARIOS="$SCENARIOS" PEERS="$PEERS" CONCURRENCY="$CONCURRENCY" DURATION="$DURATION" \
  MAX_REQUESTS="$MAX_REQUESTS" AVIF_MAX_REQUESTS="$AVIF_MAX_REQUESTS" HIT_MAX_REQUESTS="$HIT_MAX_REQUESTS" \
  Q="$Q" CORPUS="$CORPUS" WRK_THREADS="$WRK_THREADS" BIN="$BIN" bash "$0")"

# ImageMagick's Debian policy stops at 128 MP of pixel cache; the references need 18 MP sources.
cat >"$WORK/impolicy/policy.xml" <<'EOF'
<policymap>
  <policy domain="resource" name="memory" value="4GiB"/>
  <policy domain="resource" name="map" value="8GiB"/>
  <policy domain="resource" name="width" value="64KP"/>
  <policy domain="resource" name="height" value="64KP"/>
  <policy domain="resource" name="area" value="2GP"/>
  <policy domain="resource" name="disk" value="16GiB"/>
</policymap>
EOF

log "install (idempotent)"
WORK=$WORK TOOLS=$TOOLS bash "$HERE/install.sh"
log "corpus"
python3 "$HERE/corpus.py" "$WORK/corpus"
FILES=$WORK/corpus/files
MANIFEST=$WORK/corpus/manifest.tsv
chmod -R a+rX "$WORK/corpus"

# corpus rows: file format width height mp progressive alpha bytes
# In a fixed shuffled order (the same for every peer and run), so that a run cut short by
# DURATION in the middle of a cycle is not biased towards small or large images.
mapfile -t CORPUS_ROWS < <(tail -n +2 "$MANIFEST" | awk -F'\t' -v c="$CORPUS" 'c != "jpeg" || $2 == "jpeg"' |
  shuf --random-source=<(yes))
((${#CORPUS_ROWS[@]})) || { echo "empty corpus" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# process bookkeeping

PIDS=() # everything started, stopped at exit
stop_all() {
  set +e
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for _ in $(seq 1 100); do
    local alive=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
}
trap stop_all EXIT
trap 'exit 130' INT TERM

tree() { # the pids given and all their descendants
  ps -e -o pid=,ppid= | awk -v roots="$*" '
    BEGIN { n = split(roots, r, " "); for (i = 1; i <= n; i++) keep[r[i]] = 1 }
    { parent[$1] = $2 }
    END { do { more = 0; for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; more = 1 } } while (more)
          for (p in keep) print p }'
}
cpu_ticks() { # utime+stime (all threads) of the process trees, in clock ticks
  local t=0 p
  for p in $(tree "$@"); do
    [[ -r /proc/$p/stat ]] && t=$((t + $(awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}
reset_hwm() { local p; for p in $(tree "$@"); do echo 5 >"/proc/$p/clear_refs" 2>/dev/null || true; done; }
hwm_kib() { # VmHWM summed over the process trees
  local t=0 p
  for p in $(tree "$@"); do
    t=$((t + $(awk '/^VmHWM/ { print $2 }' "/proc/$p/status" 2>/dev/null || echo 0)))
  done
  echo "$t"
}
settle() { # wait (up to 60 s) until the trees use under 5 % of a core
  local a b
  for _ in $(seq 1 120); do
    a=$(cpu_ticks "$@"); sleep 0.5; b=$(cpu_ticks "$@")
    (((b - a) * 100 <= 5 * HZ / 2)) && return 0
  done
  log "  (still busy after 60 s)"
}
HZ=$(getconf CLK_TCK)
wait_http() { # url: up to 30 s
  for _ in $(seq 1 300); do curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "not answering: $1" >&2
  return 1
}

# ---------------------------------------------------------------------------------------------
# peers

has_peer() { [[ " $PEERS " == *" $1 "* ]]; }
P_IMG=$((BASE_PORT + 1)) P_IMG_OPS=$((BASE_PORT + 2))
P_LB_T=$((BASE_PORT + 10)) P_T1=$((BASE_PORT + 11)) P_T2=$((BASE_PORT + 12))
P_LB_TR=$((BASE_PORT + 15)) P_TR1=$((BASE_PORT + 13)) P_TR2=$((BASE_PORT + 14))
P_LB_I=$((BASE_PORT + 20)) P_I1=$((BASE_PORT + 21)) P_I2=$((BASE_PORT + 22))
P_NGX=$((BASE_PORT + 30))
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
IF_MODULE=$(ls /usr/lib/nginx/modules/ngx_http_image_filter_module.so /usr/share/nginx/modules/ngx_http_image_filter_module.so 2>/dev/null | head -1)

start_imgnode() {
  local d=$RUN/imgnode
  mkdir -p "$d/data"
  # Defaults except: own ports, warn logs, no demo account, a 1 GiB disk tier (the default
  # 10 GiB is preallocated), and nice 0 for the render threads (default 10) so that every peer
  # runs at the same priority on this shared machine; no render budgets (one address renders
  # thousands of variants of the corpus, which a public node refuses by design).
  cat >"$d/imgnode.toml" <<EOF
[server]
public_listen = "127.0.0.1:$P_IMG"
ops_listen = "127.0.0.1:$P_IMG_OPS"
header_read_timeout = "120s"
max_connections_per_ip = 0
[storage]
data_dir = "$d/data"
[cache]
memory = "256MiB"
disk = "1GiB"
[cpu]
nice = 0
[log]
level = "warn"
[demo]
seed = false
[delivery]
client_renders_per_minute = 0
image_variants_per_hour = 0
EOF
  cmd "$BIN --config $d/imgnode.toml account create bench --plan unlimited"
  "$BIN" --config "$d/imgnode.toml" account create bench --plan unlimited >/dev/null
  cmd "$BIN --config $d/imgnode.toml import --account bench $FILES"
  "$BIN" --config "$d/imgnode.toml" import --account bench "$FILES" >"$d/import.log" 2>&1
  cmd "$BIN --config $d/imgnode.toml serve"
  "$BIN" --config "$d/imgnode.toml" serve 2>"$d/imgnode.log" &
  IMG_PID=$!
  PIDS+=("$IMG_PID")
  wait_http "http://127.0.0.1:$P_IMG_OPS/ready"
}

thumbor_conf() { # file, result storage dir ('' = off)
  cat >"$1" <<EOF
LOADER = 'thumbor.loaders.file_loader'
FILE_LOADER_ROOT_PATH = '$FILES'
STORAGE = 'thumbor.storages.no_storage'
ALLOW_UNSAFE_URL = True
SECURITY_KEY = 'bench-only'
QUALITY = $Q
EOF
  if [[ -n $2 ]]; then
    cat >>"$1" <<EOF
RESULT_STORAGE = 'thumbor.result_storages.file_storage'
RESULT_STORAGE_FILE_STORAGE_ROOT_PATH = '$2'
RESULT_STORAGE_STORES_UNSAFE = True
RESULT_STORAGE_EXPIRATION_SECONDS = 0
EOF
  else
    echo "RESULT_STORAGE = None" >>"$1"
  fi
}

start_thumbor() { # two processes without result storage, two with (the hit scenario)
  local d=$RUN/thumbor p
  mkdir -p "$d/results"
  thumbor_conf "$d/cold.conf" ''
  thumbor_conf "$d/hit.conf" "$d/results"
  T_PIDS=() TR_PIDS=()
  for p in $P_T1 $P_T2; do
    cmd "$WORK/venv-thumbor/bin/thumbor -i 127.0.0.1 -p $p -c $d/cold.conf -l warning"
    "$WORK/venv-thumbor/bin/thumbor" -i 127.0.0.1 -p "$p" -c "$d/cold.conf" -l warning 2>>"$d/thumbor-$p.log" &
    T_PIDS+=($!) PIDS+=($!)
  done
  for p in $P_TR1 $P_TR2; do
    cmd "$WORK/venv-thumbor/bin/thumbor -i 127.0.0.1 -p $p -c $d/hit.conf -l warning"
    "$WORK/venv-thumbor/bin/thumbor" -i 127.0.0.1 -p "$p" -c "$d/hit.conf" -l warning 2>>"$d/thumbor-$p.log" &
    TR_PIDS+=($!) PIDS+=($!)
  done
  for p in $P_T1 $P_T2 $P_TR1 $P_TR2; do wait_http "http://127.0.0.1:$p/healthcheck"; done
}

start_ipx() {
  local d=$RUN/ipx p
  mkdir -p "$d"
  cp "$HERE/ipx-server.mjs" "$WORK/ipx/ipx-server.mjs" # beside its node_modules
  I_PIDS=()
  for p in $P_I1 $P_I2; do
    cmd "(cd $WORK/ipx && node ipx-server.mjs $p $FILES)"
    (cd "$WORK/ipx" && exec node ipx-server.mjs "$p" "$FILES") 2>>"$d/ipx-$p.log" &
    I_PIDS+=($!) PIDS+=($!)
  done
  for p in $P_I1 $P_I2; do wait_http "http://127.0.0.1:$p/w_16/greenmeadow.jpg" || true; done
}

nginx_common() { # prefix: the top of a private nginx.conf
  mkdir -p "$1/tmp"
  cat <<EOF
worker_processes 2;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $1/tmp/body;
  proxy_temp_path $1/tmp/proxy;
  fastcgi_temp_path $1/tmp/fastcgi;
  uwsgi_temp_path $1/tmp/uwsgi;
  scgi_temp_path $1/tmp/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
EOF
}

run_nginx() { # prefix: start a private nginx on $prefix/nginx.conf; its pid is the last of PIDS
  cmd "$NGINX -p $1 -c $1/nginx.conf -g 'daemon off;'"
  "$NGINX" -p "$1" -c "$1/nginx.conf" -g 'daemon off;' 2>>"$1/stderr.log" &
  PIDS+=("$!")
}

start_balancer() { # one nginx in front of the thumbor and ipx processes
  local d=$RUN/balancer
  mkdir -p "$d"
  {
    nginx_common "$d"
    cat <<EOF
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_read_timeout 300s;
  proxy_buffers 16 64k;
  upstream thumbor { least_conn; server 127.0.0.1:$P_T1; server 127.0.0.1:$P_T2; keepalive 16; }
  upstream thumbor_rs { least_conn; server 127.0.0.1:$P_TR1; server 127.0.0.1:$P_TR2; keepalive 16; }
  upstream ipx { least_conn; server 127.0.0.1:$P_I1; server 127.0.0.1:$P_I2; keepalive 16; }
  server { listen 127.0.0.1:$P_LB_T; location / { proxy_pass http://thumbor; } }
  server { listen 127.0.0.1:$P_LB_TR; location / { proxy_pass http://thumbor_rs; } }
  server { listen 127.0.0.1:$P_LB_I; location / { proxy_pass http://ipx; } }
}
EOF
  } >"$d/nginx.conf"
  run_nginx "$d"
  LB_PID=${PIDS[-1]}
}

start_nginx() { # the nginx peer: image_filter over the corpus, and static files for the hit
  local d=$RUN/nginx
  mkdir -p "$d/static"
  chmod 755 "$d" "$d/static"
  [[ -n $IF_MODULE ]] || { echo "no ngx_http_image_filter_module.so" >&2; exit 1; }
  {
    echo "load_module $IF_MODULE;"
    nginx_common "$d"
    cat <<EOF
  sendfile on;
  tcp_nopush on;
  open_file_cache max=1000 inactive=60s;
  types { image/jpeg jpg; image/png png; image/webp webp; }
  server {
    listen 127.0.0.1:$P_NGX;
    location ~ ^/r/(?<w>[0-9]+)/(?<file>[^/]+)\$ {
      alias $FILES/\$file;
      image_filter resize \$w -;
      image_filter_jpeg_quality $Q;
      image_filter_webp_quality $Q;
      image_filter_buffer 64M;
    }
    location /static/ {
      alias $d/static/;
      add_header Cache-Control "public, max-age=31536000";
    }
  }
}
EOF
  } >"$d/nginx.conf"
  run_nginx "$d"
  NGX_PID=${PIDS[-1]}
  wait_http "http://127.0.0.1:$P_NGX/r/16/greenmeadow.jpg"
}

log "start peers: $PEERS"
has_peer imgnode && start_imgnode
has_peer thumbor && start_thumbor
has_peer ipx && start_ipx
{ has_peer thumbor || has_peer ipx; } && start_balancer
has_peer nginx && start_nginx
has_peer thumbor && wait_http "http://127.0.0.1:$P_LB_T/healthcheck"
has_peer ipx && { wait_http "http://127.0.0.1:$P_LB_I/w_16/greenmeadow.jpg" || true; }

# ---------------------------------------------------------------------------------------------
# scenarios

scenario_params() { # scenario -> W FMT EXT MAX
  case $1 in
    jpg400) echo "400 jpeg jpg $MAX_REQUESTS" ;;
    jpg1200) echo "1200 jpeg jpg $MAX_REQUESTS" ;;
    webp800) echo "800 webp webp $MAX_REQUESTS" ;;
    avif800) echo "800 avif avif $AVIF_MAX_REQUESTS" ;;
    hit) echo "400 jpeg jpg $HIT_MAX_REQUESTS" ;;
    *) echo "unknown scenario $1" >&2; exit 2 ;;
  esac
}

# url PEER FILE ALPHA W FMT EXT TOKEN: the path (and query) of one transform; TOKEN (a "{tok}"
# placeholder or empty) makes it unique without changing the work:
#   imgnode  bg=TOKEN: the flatten colour is part of the cache key (src/delivery/url.rs,
#            canonical), but only used when an alpha image becomes a JPEG (same cost any colour)
#   thumbor, ipx, nginx  ?n=TOKEN: ignored by the server (thumbor routes on the path, ipx-server
#            drops it, nginx matches the location on the path); none of them caches results here
url() {
  local peer=$1 file=$2 alpha=$3 w=$4 fmt=$5 ext=$6 tok=$7 stem=${2%.*} flat=''
  [[ $alpha == yes && $fmt == jpeg ]] && flat=1
  case $peer in
    imgnode) echo "/i/bench/$stem.$ext?w=$w&q=$Q${tok:+&bg=$tok}" ;;
    thumbor) echo "/unsafe/${w}x0/filters:quality($Q):format($fmt)${flat:+:background_color(ffffff)}/$file${tok:+?n=$tok}" ;;
    ipx) echo "/w_$w,q_$Q,f_$fmt${flat:+,b_ffffff,flatten}/$file${tok:+?n=$tok}" ;;
    nginx) echo "/r/$w/$file${tok:+?n=$tok}" ;;
  esac
}
vips_cmd() { # FILE ALPHA W FMT EXT -> vipsthumbnail command with {out}
  # background=255: alpha sources flattened on white, like the others are asked to (an opaque
  # source ignores it); {in} stays a placeholder for vips_bench.py
  local opts="Q=$Q,strip" in=$1
  [[ $in == '{in}' ]] || in=$FILES/$1
  [[ $4 == jpeg ]] && opts+=",background=255"
  [[ $4 == avif ]] && opts+=",compression=av1"
  echo "vipsthumbnail $in -s ${3}x -o {out}.$5[$opts]"
}
peer_port() {
  case $1 in imgnode) echo "$P_IMG" ;; thumbor) echo "$P_LB_T" ;; ipx) echo "$P_LB_I" ;; nginx) echo "$P_NGX" ;; esac
}
peer_roots() { # the processes whose CPU and memory count for the peer
  case $1 in
    imgnode) echo "$IMG_PID" ;;
    thumbor) echo "$LB_PID ${T_PIDS[*]}" ;;
    thumbor_rs) echo "$LB_PID ${TR_PIDS[*]}" ;;
    ipx) echo "$LB_PID ${I_PIDS[*]}" ;;
    nginx) echo "$NGX_PID" ;;
  esac
}
# Which corpus rows a peer takes in a scenario ("" = not applicable): nginx image_filter only
# resizes in the source's own format, so it takes the JPEG scenarios with JPEG sources.
peer_rows() { # peer scenario fmt
  case $1/$2 in
    nginx/jpg400 | nginx/jpg1200) printf '%s\n' "${CORPUS_ROWS[@]}" | awk -F'\t' '$2 == "jpeg"' ;;
    nginx/*) ;;
    *) printf '%s\n' "${CORPUS_ROWS[@]}" ;;
  esac
}

record() { echo "$1" >>"$RESULTS"; }
RUN_NO=0

# measure PEER SCENARIO CONC URLFILE MAX PORT ROOTS...: one bounded wrk run
measure() {
  local peer=$1 sc=$2 conc=$3 urls=$4 max=$5 port=$6
  shift 6
  RUN_NO=$((RUN_NO + 1))
  local lines
  lines=$(wc -l <"$urls")
  max=$(((max + lines - 1) / lines * lines)) # whole cycles over the corpus
  local out=$RUN/wrk-$sc-$peer-c$conc.txt t0 t1 rss
  settle "$@"
  reset_hwm "$@"
  local wrkcmd="wrk -t$WRK_THREADS -c$conc -d${DURATION}s --timeout 120s -s $HERE/load.lua http://127.0.0.1:$port -- $urls $max $((RUN_NO * 100000)) $WRK_THREADS"
  cmd "$wrkcmd"
  local c0='' c1=''
  [[ $peer == imgnode ]] && c0=$(imgnode_cache_counts)
  t0=$(cpu_ticks "$@")
  $wrkcmd >"$out" 2>&1 || log "  wrk exited $? (see $out)"
  t1=$(cpu_ticks "$@")
  rss=$(hwm_kib "$@")
  [[ $peer == imgnode ]] && c1=$(imgnode_cache_counts)
  local line
  line=$(grep '^RESULT' "$out" || echo "RESULT requests=0 duration_us=1 p50_us=0 p99_us=0 non200=0 errors=0")
  record "$(python3 -c '
import json, sys
kv = dict(x.split("=") for x in sys.argv[1].split()[1:])
n = int(kv["requests"]); d = int(kv["duration_us"]) / 1e6
print(json.dumps({"kind": "load", "scenario": sys.argv[2], "peer": sys.argv[3], "conc": int(sys.argv[4]),
  "requests": n, "seconds": round(d, 2), "rps": n / d if d else 0,
  "p50_ms": int(kv["p50_us"]) / 1000, "p99_ms": int(kv["p99_us"]) / 1000,
  "non200": int(kv["non200"]), "errors": int(kv["errors"]),
  "cpu_ms": (int(sys.argv[5]) / int(sys.argv[6]) * 1000 / n) if n else None,
  "rss_mib": int(sys.argv[7]) / 1024, "cache": sys.argv[8]}))' "$line" "$sc" "$peer" "$conc" "$((t1 - t0))" "$HZ" "$rss" \
    "$(cache_delta "$c0" "$c1")")"
  log "  $peer c=$conc: $(summary "$(tail -1 "$RESULTS")")"
}

# imgnode's answers by X-Cache status (its metrics), to show that cold runs are all MISS
imgnode_cache_counts() {
  curl -fsS --max-time 5 "http://127.0.0.1:$P_IMG_OPS/metrics" |
    awk -F'cache="' '/^imgnode_http_request_duration_seconds_count/ && /route="image"/ {
      split($2, a, "\""); v = $0; sub(/.* /, "", v); n[a[1]] += v }
      END { for (k in n) printf "%s=%d ", k, n[k] }'
}
cache_delta() { # before after -> "MISS=40 HIT-MEMORY=0 ..." (counts during the run)
  [[ -n $2 ]] || return 0
  python3 -c 'import sys
b = dict(x.split("=") for x in sys.argv[1].split()); a = dict(x.split("=") for x in sys.argv[2].split())
print(" ".join(f"{k}={int(v) - int(b.get(k, 0))}" for k, v in sorted(a.items()) if int(v) - int(b.get(k, 0))))' "$1" "$2"
}

summary() { # one results.jsonl load line, for the progress log
  python3 -c 'import json, sys; r = json.loads(sys.argv[1])
print("%.1f req/s, p50 %.2f ms, p99 %.2f ms, CPU %.2f ms/img, RSS %.0f MiB, %d answers, non-200 %d, errors %d %s" % (
  r["rps"], r["p50_ms"], r["p99_ms"], r["cpu_ms"] or 0, r["rss_mib"], r["requests"], r["non200"], r["errors"], r.get("cache", "")))' "$1"
}

measure_vips() { # SCENARIO CONC MAX W FMT EXT
  local sc=$1 conc=$2 max=$3 w=$4 fmt=$5 ext=$6 file ins=()
  local tmpl
  tmpl=$(vips_cmd '{in}' no "$w" "$fmt" "$ext")
  while IFS=$'\t' read -r file _; do ins+=("$FILES/$file"); done < <(peer_rows vips "$sc")
  max=$(((max + ${#ins[@]} - 1) / ${#ins[@]} * ${#ins[@]})) # whole cycles over the corpus
  mkdir -p "$RUN/vips"
  cmd "python3 $HERE/vips_bench.py $conc $DURATION $max $RUN/vips '$tmpl' <the corpus files>"
  local line
  line=$(python3 "$HERE/vips_bench.py" "$conc" "$DURATION" "$max" "$RUN/vips" "$tmpl" "${ins[@]}")
  record "$(python3 -c '
import json, sys
kv = dict(x.split("=") for x in sys.argv[1].split()[1:])
n = int(kv["requests"]); d = int(kv["duration_us"]) / 1e6
print(json.dumps({"kind": "load", "scenario": sys.argv[2], "peer": "vips", "conc": int(sys.argv[3]),
  "requests": n, "seconds": round(d, 2), "rps": n / d if d else 0,
  "p50_ms": int(kv["p50_us"]) / 1000, "p99_ms": int(kv["p99_us"]) / 1000,
  "non200": int(kv["non200"]), "errors": 0, "cpu_ms": float(kv["cpu_ms"]) / n if n else None,
  "rss_mib": int(kv["rss_kib"]) / 1024}))' "$line" "$sc" "$conc")"
  log "  vips c=$conc: $(summary "$(tail -1 "$RESULTS")")"
}

quality_pass() { # PEER SCENARIO W FMT EXT: every corpus image once, bytes + DSSIM (also a warm-up)
  local peer=$1 sc=$2 w=$3 fmt=$4 ext=$5 jobs=$RUN/jobs-$sc-$peer.tsv file alpha
  : >"$jobs"
  while IFS=$'\t' read -r file _ _ _ _ _ alpha _; do
    if [[ $peer == vips ]]; then
      printf '%s\tcmd:%s\n' "$file" "$(vips_cmd "$file" "$alpha" "$w" "$fmt" "$ext")" >>"$jobs"
    else
      printf '%s\thttp://127.0.0.1:%s%s\n' "$file" "$(peer_port "$peer")" "$(url "$peer" "$file" "$alpha" "$w" "$fmt" "$ext" '')" >>"$jobs"
    fi
  done < <(peer_rows "$peer" "$sc")
  cmd "python3 $HERE/quality.py $jobs $RUN/out/$sc/$peer $WORK/refs $w $MANIFEST $FILES"
  local q
  q=$(python3 "$HERE/quality.py" "$jobs" "$RUN/out/$sc/$peer" "$WORK/refs" "$w" "$MANIFEST" "$FILES")
  record "$(python3 -c 'import json,sys; q=json.loads(sys.argv[1]); q.update(kind="quality", scenario=sys.argv[2], peer=sys.argv[3]); print(json.dumps(q))' "$q" "$sc" "$peer")"
  log "  $peer quality: $q"
}

hit_scenario() {
  local conc peer file alpha best='' bestd=999999999 size
  # The image: the corpus JPEG whose vipsthumbnail 400 px q80 output is closest to
  # HIT_TARGET_BYTES (independent of the peers); every peer serves its own 400 px JPEG of it,
  # nginx static the imgnode bytes (or the vipsthumbnail bytes without imgnode).
  mkdir -p "$RUN/hit"
  while IFS=$'\t' read -r file _ _ _ _ _ alpha _; do
    [[ $alpha == no ]] || continue
    vipsthumbnail "$FILES/$file" -s 400x -o "$RUN/hit/${file%.*}.jpg[Q=$Q,strip]" 2>/dev/null
    size=$(stat -c %s "$RUN/hit/${file%.*}.jpg")
    local d=$((size > HIT_TARGET_BYTES ? size - HIT_TARGET_BYTES : HIT_TARGET_BYTES - size))
    ((d < bestd)) && { best=$file; bestd=$d; }
  done < <(printf '%s\n' "${CORPUS_ROWS[@]}" | awk -F'\t' '$2 == "jpeg"')
  log "hit: ${best} at 400 px"
  cp "$RUN/hit/${best%.*}.jpg" "$RUN/hit/static.jpg"
  for peer in imgnode thumbor nginx; do
    has_peer "$peer" || continue
    local path port roots
    case $peer in
      imgnode) path=$(url imgnode "$best" no 400 jpeg jpg ''); port=$P_IMG; roots=$(peer_roots imgnode) ;;
      thumbor) path=$(url thumbor "$best" no 400 jpeg jpg ''); port=$P_LB_TR; roots=$(peer_roots thumbor_rs) ;;
      nginx) path=/static/hit.jpg; port=$P_NGX; roots=$(peer_roots nginx) ;;
    esac
    if [[ $peer == nginx ]]; then
      cp "$RUN/hit/static.jpg" "$RUN/nginx/static/hit.jpg"
      chmod 644 "$RUN/nginx/static/hit.jpg"
    fi
    # two fetches: the first renders and stores, the second must be a hit
    curl -fsS -o "$RUN/hit/$peer.body" "http://127.0.0.1:$port$path"
    curl -fsS -D "$RUN/hit/$peer.headers" -o "$RUN/hit/$peer.body" "http://127.0.0.1:$port$path"
    if [[ $peer == imgnode ]]; then
      grep -qi '^x-cache: HIT-MEMORY' "$RUN/hit/imgnode.headers" || log "  imgnode: second fetch not HIT-MEMORY"
      cp "$RUN/hit/imgnode.body" "$RUN/hit/static.jpg"
    fi
    if [[ $peer == nginx ]]; then
      cmp -s "$RUN/hit/nginx.body" "$RUN/hit/static.jpg" || log "  nginx static: bytes differ from the file"
      has_peer imgnode && ! cmp -s "$RUN/hit/nginx.body" "$RUN/hit/imgnode.body" && log "  nginx static: not imgnode's bytes"
    fi
    if [[ $peer == thumbor ]]; then
      [[ -n $(find "$RUN/thumbor/results" -type f | head -1) ]] || log "  thumbor: result storage is empty"
    fi
    size=$(stat -c %s "$RUN/hit/$peer.body")
    record "{\"kind\": \"quality\", \"scenario\": \"hit\", \"peer\": \"$peer\", \"n\": 1, \"bytes\": $size, \"failed\": [], \"wrong_width\": [], \"image\": \"$best\"}"
    echo "$path" >"$RUN/urls-hit-$peer.txt"
    for conc in $CONCURRENCY; do
      # shellcheck disable=SC2086
      measure "$peer" hit "$conc" "$RUN/urls-hit-$peer.txt" "$HIT_MAX_REQUESTS" "$port" $roots
    done
  done
}

for sc in $SCENARIOS; do
  log "scenario $sc"
  if [[ $sc == hit ]]; then hit_scenario; continue; fi
  read -r W FMT EXT MAX <<<"$(scenario_params "$sc")"
  for peer in $PEERS; do
    [[ -n $(peer_rows "$peer" "$sc") ]] || { log "  $peer: not applicable"; continue; }
    ((QUALITY)) && quality_pass "$peer" "$sc" "$W" "$FMT" "$EXT"
    if [[ $peer == vips ]]; then
      for conc in $CONCURRENCY; do measure_vips "$sc" "$conc" "$MAX" "$W" "$FMT" "$EXT"; done
      continue
    fi
    urls=$RUN/urls-$sc-$peer.txt
    peer_rows "$peer" "$sc" | while IFS=$'\t' read -r file _ _ _ _ _ alpha _; do
      url "$peer" "$file" "$alpha" "$W" "$FMT" "$EXT" '{tok}'
    done >"$urls"
    for conc in $CONCURRENCY; do
      # shellcheck disable=SC2046
      measure "$peer" "$sc" "$conc" "$urls" "$MAX" "$(peer_port "$peer")" $(peer_roots "$peer")
    done
  done
done

# ---------------------------------------------------------------------------------------------
# report

versions() {
  echo "imgnode: $("$BIN" --version 2>&1 | head -1), $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO" diff --quiet HEAD -- src 2>/dev/null || echo ' (+local changes in src)'), binary built $(date -u -r "$BIN" '+%F %T UTC')"
  echo "thumbor: $("$WORK/venv-thumbor/bin/pip" list 2>/dev/null | awk '$1 == "thumbor" || $1 == "pillow" || $1 == "tornado" { printf "%s %s, ", $1, $2 }')python $("$WORK/venv-thumbor/bin/python" -c 'import platform; print(platform.python_version())')"
  echo "ipx: $(node -p "require('$WORK/ipx/node_modules/ipx/package.json').version"), sharp $(node -p "require('$WORK/ipx/node_modules/sharp/package.json').version") (libvips $(cd "$WORK/ipx" && node -p "require('sharp').versions.vips")), node $(node --version)"
  echo "nginx: $("$NGINX" -v 2>&1 | sed 's/.*: //') + image_filter (libgd $(dpkg-query -W -f='${Version}' libgd3 2>/dev/null))"
  echo "vipsthumbnail: $(vips --version)"
  echo "wrk: $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2); dssim: $("$DSSIM" 2>&1 | awk '/^Version/ { print $2 }'); ImageMagick: $("$CONVERT" -version | head -1 | cut -d' ' -f3)"
}
{
  echo "date: $(date -u '+%F %T UTC')"
  echo "machine: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(free -g | awk '/^Mem/ { print $2 }') GiB, $(. /etc/os-release && echo "$PRETTY_NAME"), load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  versions
} >"$RUN/meta.txt"
OUT=$WORK/results-$(date -u +%F).md
[[ -e $OUT ]] && OUT=$WORK/results-$(date -u +%F)-$(date -u +%H%M%S).md
python3 "$HERE/report.py" "$RUN" "$MANIFEST" | tee "$OUT"
log "report: $OUT (raw: $RESULTS)"
