#!/usr/bin/env bash
# Installs what building and testing imgnode needs on Debian 12 / Ubuntu, then exits.
# Idempotent; run as root or with sudo available. Used by .ci/run and by the README.
#   bash tests/setup.sh         build and test prerequisites
#   bash tests/setup.sh build   only what building (cargo run) needs
#   nasm            rav1e's (AVIF encoder) assembly
#   libdav1d-dev    the AV1 decoder behind AVIF input
#   libaom-dev      the default AV1 encoder of AVIF output (libheif-dev needs it too); then
#   libaom 3.12.1   built from Debian 13's source package (pinned by hash, encoder only, a
#                   static library under /usr/local, which pkg-config finds first): its
#                   image-quality tuning (AOM_TUNE_IQ) is what libavif gives still pictures,
#                   and Debian 12's 3.6 lacks it (cmake and curl to build and fetch it)
#   libheif-dev     HEIC decoding (libheif 1.15; Debian 12's libheif1 has libde265 built in)
#   libclang-dev    for bindgen: libaom's and libjxl's bindings, from the installed headers
#   libjxl-dev      libjxl 0.7, the JPEG XL encoder of `.jxl` output (found through pkg-config)
#   libjxl-tools    djxl, the independent decoder the JPEG XL output tests check against
#   imagemagick, webp   identify/convert and webpmux: the independent readers the animated
#                   GIF and WebP output tests check frames, delays and loop counts with
#   moto[server]    a real S3-compatible server the S3 tests start on 127.0.0.1
#   prometheus      for `promtool check metrics` on the scraped /metrics text
#   systemd         for `systemd-analyze verify/security` on the shipped unit
#   postgresql      started on 127.0.0.1:55432 by tests/pg.sh (multi-node tests, PostgreSQL pass)
#   varnish, varnish-modules   a real edge (xkey purges) the edge tests start on 127.0.0.1
#   chromium, chromium-driver, firefox-esr   the real browsers (headless, through WebDriver)
#                   the console's browser tests drive
#   geckodriver     Firefox's WebDriver server (not packaged by Debian: built from crates.io
#                   with cargo, pinned)
set -euo pipefail

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

packages=()
command -v nasm >/dev/null 2>&1 || packages+=(nasm)
command -v pkg-config >/dev/null 2>&1 || packages+=(pkg-config)
command -v python3 >/dev/null 2>&1 || packages+=(python3 python3-pip)
dpkg -s libdav1d-dev >/dev/null 2>&1 || packages+=(libdav1d-dev)
dpkg -s libaom-dev >/dev/null 2>&1 || packages+=(libaom-dev)
dpkg -s libheif-dev >/dev/null 2>&1 || packages+=(libheif-dev)
dpkg -s libclang-dev >/dev/null 2>&1 || packages+=(libclang-dev)
dpkg -s libjxl-dev >/dev/null 2>&1 || packages+=(libjxl-dev)
if [ ${#packages[@]} -gt 0 ]; then
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${packages[@]}" >/dev/null
fi

aom_version=3.12.1
aom_sha256=40c929a41b2a59c24319a699c358351422829b3ae646de31b18cbabed0191962
if ! pkg-config --atleast-version=3.12 aom; then
  aom_tools=()
  command -v cmake >/dev/null 2>&1 || aom_tools+=(cmake)
  command -v curl >/dev/null 2>&1 || aom_tools+=(curl ca-certificates)
  if [ ${#aom_tools[@]} -gt 0 ]; then
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${aom_tools[@]}" >/dev/null
  fi
  aom_src="$(mktemp -d)"
  curl -fsSL -o "$aom_src/aom.tar.gz" \
    "https://deb.debian.org/debian/pool/main/a/aom/aom_${aom_version}.orig.tar.gz"
  echo "$aom_sha256  $aom_src/aom.tar.gz" | sha256sum -c --quiet
  tar -xzf "$aom_src/aom.tar.gz" -C "$aom_src"
  # Encoder only (no decoder, tools, tests, docs), position-independent for the Rust link.
  cmake -S "$aom_src/aom-$aom_version" -B "$aom_src/build" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX=/usr/local -DBUILD_SHARED_LIBS=0 -DCMAKE_POSITION_INDEPENDENT_CODE=1 \
    -DCONFIG_AV1_DECODER=0 -DENABLE_TESTS=0 -DENABLE_EXAMPLES=0 -DENABLE_DOCS=0 \
    -DENABLE_TOOLS=0 -DCONFIG_TUNE_VMAF=0 -DCONFIG_TUNE_BUTTERAUGLI=0 >/dev/null
  cmake --build "$aom_src/build" -j"$(nproc)" >/dev/null
  $sudo cmake --install "$aom_src/build" >/dev/null
  rm -rf "$aom_src"
  pkg-config --atleast-version=3.12 aom || { echo "libaom $aom_version not found by pkg-config after install" >&2; exit 1; }
fi

if [ "${1:-}" = "build" ]; then
  echo "build prerequisites ready"
  exit 0
fi

test_packages=()
command -v promtool >/dev/null 2>&1 || test_packages+=(prometheus)
command -v systemd-analyze >/dev/null 2>&1 || test_packages+=(systemd)
command -v djxl >/dev/null 2>&1 || test_packages+=(libjxl-tools)
command -v identify >/dev/null 2>&1 || test_packages+=(imagemagick)
command -v webpmux >/dev/null 2>&1 || test_packages+=(webp)
dpkg -s varnish >/dev/null 2>&1 || test_packages+=(varnish)
dpkg -s varnish-modules >/dev/null 2>&1 || test_packages+=(varnish-modules)
command -v chromium >/dev/null 2>&1 || test_packages+=(chromium)
command -v chromedriver >/dev/null 2>&1 || test_packages+=(chromium-driver)
command -v firefox-esr >/dev/null 2>&1 || test_packages+=(firefox-esr)
if [ ${#test_packages[@]} -gt 0 ]; then
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${test_packages[@]}" >/dev/null
fi

if ! command -v moto_server >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check 'moto[server]>=5,<6'
  command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
fi
command -v moto_server >/dev/null 2>&1 || { echo "moto_server not on PATH after install" >&2; exit 1; }
if ! command -v geckodriver >/dev/null 2>&1; then
  # In a target folder of its own, removed after: nothing of it lands in the project's.
  gecko_target="$(mktemp -d)"
  CARGO_TARGET_DIR="$gecko_target" cargo install --quiet --locked geckodriver@0.37.1
  rm -rf "$gecko_target"
fi
command -v geckodriver >/dev/null 2>&1 || { echo "geckodriver not on PATH after install (is ~/.cargo/bin on PATH?)" >&2; exit 1; }
# PostgreSQL on 127.0.0.1:55432 for the multi-node tests and the suite's PostgreSQL pass.
bash "$(dirname "$0")/pg.sh"
echo "test prerequisites ready"
