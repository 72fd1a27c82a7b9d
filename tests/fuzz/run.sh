#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60: the smoke run; the long runs recorded in
# the README used 1800). Not part of CI: fuzzing needs the nightly toolchain and CPU time.
#   bash tests/fuzz/run.sh            60 s per target, one after another
#   bash tests/fuzz/run.sh 1800 url   30 min of one target
# Needs: rustup's nightly toolchain and `cargo install cargo-fuzz` (the script installs it).
# New inputs go to tests/fuzz/target/corpus/<target> (not committed); crashes to
# tests/fuzz/artifacts/<target>/. A finding, once fixed, is kept as a regression test run by
# `cargo test` (decoder inputs go to tests/fixtures/hostile/, which hostile.rs covers).
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then targets=(url decode multipart signature config); fi

command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
rustup toolchain list | grep -q '^nightly' || { echo "needs the nightly toolchain" >&2; exit 1; }

for target in "${targets[@]}"; do
  work="tests/fuzz/target/corpus/$target"
  mkdir -p "$work"
  echo "== $target: ${seconds}s"
  # -malloc_limit_mb: any single allocation above the decode budget is a finding.
  # -rss_limit_mb: the whole process stays bounded.
  cargo +nightly fuzz run --fuzz-dir tests/fuzz "$target" "$work" "tests/fuzz/corpus/$target" -- \
    -dict="tests/fuzz/dict/$target.dict" -max_total_time="$seconds" \
    -malloc_limit_mb=96 -rss_limit_mb=1024 -max_len=262144 -timeout=60 -print_final_stats=1
done
