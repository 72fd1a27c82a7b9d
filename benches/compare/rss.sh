#!/usr/bin/env bash
# Peak RSS of a fresh imgnode under one cold scenario, apart from the others run.sh drives
# through the same process (there the memory cache and the allocator carry each scenario's
# memory into the next). Reuses the corpus and the imported node of the last run.sh run.
#
#   bash benches/compare/rss.sh                         # 1200 px JPEG, 8 connections, 15 s
#   W=400 CONC=2 bash benches/compare/rss.sh            # another width / concurrency
#   bash benches/compare/rss.sh MIMALLOC_PURGE_DELAY=0  # extra environment for the node
#
# Prints one line: RSS at start, peak (VmHWM), median / p90 / max of 5 samples a second,
# answers, and server CPU ms per answer (utime + stime / answers).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
WORK=${WORK:-/var/tmp/imgnode-compare}
BIN=${BIN:-$REPO/target/release/imgnode}
W=${W:-1200}
CONC=${CONC:-8}
DURATION=${DURATION:-15}
last=$(ls -td "$WORK"/run-*/imgnode 2>/dev/null | head -1)
[[ -n $last && -f $last/imgnode.toml ]] || { echo "run benches/compare/run.sh once first" >&2; exit 2; }
tmp=$(mktemp -d /tmp/imgnode-rss.XXXXXX)
node=
cleanup() { [[ -n $node ]] && kill "$node" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
cp -r "$last/data" "$tmp/data"
rm -rf "$tmp/data/cache"
sed "s#$last/data#$tmp/data#" "$last/imgnode.toml" >"$tmp/imgnode.toml"
port=$(awk -F'[:"]' '/^public_listen/ { print $(NF-1) }' "$tmp/imgnode.toml")
awk -F'\t' 'NR > 1 && $2 == "jpeg" { print "/i/bench/" $1 "?w='"$W"'&q=80&bg={tok}" }' \
  "$WORK/corpus/manifest.tsv" >"$tmp/urls.txt"
env "$@" "$BIN" --config "$tmp/imgnode.toml" serve >"$tmp/log" 2>&1 &
node=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
start=$(awk '/VmRSS/ { print $2 }' "/proc/$node/status")
(while kill -0 "$node" 2>/dev/null; do awk '/VmRSS/ { print $2 }' "/proc/$node/status"; sleep 0.2; done) \
  >"$tmp/rss.txt" 2>/dev/null &
cpu0=$(awk '{ print $14 + $15 }' "/proc/$node/stat")
wrk -t1 -c"$CONC" -d"${DURATION}s" --timeout 120s -s "$HERE/load.lua" "http://127.0.0.1:$port" -- \
  "$tmp/urls.txt" 1000000 "$RANDOM" 1 >"$tmp/wrk.txt"
cpu1=$(awk '{ print $14 + $15 }' "/proc/$node/stat")
hwm=$(awk '/VmHWM/ { print $2 }' "/proc/$node/status")
answers=$(awk '/requests in/ { print $1 }' "$tmp/wrk.txt")
ticks=$(getconf CLK_TCK)
read -r p50 p90 max < <(sort -n "$tmp/rss.txt" | awk '{ a[NR] = $1 } END { print a[int(NR / 2)], a[int(NR * 0.9)], a[NR] }')
printf 'w=%s c=%s %s: start %d MiB, peak %d MiB, RSS p50/p90/max %d/%d/%d MiB, %s answers, %.1f CPU ms/answer\n' \
  "$W" "$CONC" "${*:-default}" $((start / 1024)) $((hwm / 1024)) $((p50 / 1024)) $((p90 / 1024)) $((max / 1024)) \
  "$answers" "$(echo "($cpu1 - $cpu0) * 1000 / $ticks / $answers" | bc -l)"
