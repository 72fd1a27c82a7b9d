#!/usr/bin/env bash
# Installs what benches/compare/run.sh needs; idempotent (a second run only checks).
#   Debian: wrk, curl, nginx + its image_filter module, libvips-tools (vipsthumbnail),
#           libjpeg-turbo-progs (jpegtran), webp (cwebp, dwebp), libavif-bin (avifdec),
#           imagemagick (reference resizes), nodejs + npm if node is missing
#   PyPI:   thumbor in a venv under $WORK (Pillow's wheels bring AVIF; pillow-avif-plugin is
#           added only when they do not)
#   npm:    ipx (brings sharp and its libvips) under $WORK/ipx
#   crates: dssim (the CLI) into $TOOLS, built in $WORK/cargo-target (never in the repo)
set -euo pipefail
WORK=${WORK:-/var/tmp/imgnode-compare}
TOOLS=${TOOLS:-/var/tmp/cargo-tools}
THUMBOR_VERSION=${THUMBOR_VERSION:-7.8.0}
IPX_VERSION=${IPX_VERSION:-3.1.1}
DSSIM_VERSION=${DSSIM_VERSION:-3.5.1}
PYTHON=${PYTHON:-python3}
sudo=''
[[ $(id -u) == 0 ]] || sudo=sudo
mkdir -p "$WORK" "$TOOLS"

want=(wrk curl libnginx-mod-http-image-filter libvips-tools libjpeg-turbo-progs webp libavif-bin imagemagick)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || want+=(nginx-light)
command -v node >/dev/null || want+=(nodejs npm)
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install: apt-get install ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

venv=$WORK/venv-thumbor
if [[ ! -x $venv/bin/thumbor ]] || [[ $("$venv/bin/thumbor" --version 2>/dev/null) != *"$THUMBOR_VERSION"* ]]; then
  echo "install: thumbor $THUMBOR_VERSION (PyPI) in $venv" >&2
  "$PYTHON" -m venv "$venv" 2>/dev/null || {
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >/dev/null
    "$PYTHON" -m venv "$venv"
  }
  "$venv/bin/pip" install -q --disable-pip-version-check "thumbor==$THUMBOR_VERSION"
fi
if ! "$venv/bin/python" -c 'from PIL import _avif' 2>/dev/null; then
  "$venv/bin/pip" install -q --disable-pip-version-check pillow-avif-plugin
fi

if [[ ! -f $WORK/ipx/node_modules/ipx/package.json ]] ||
  [[ $(node -p "require('$WORK/ipx/node_modules/ipx/package.json').version") != "$IPX_VERSION" ]]; then
  echo "install: ipx $IPX_VERSION (npm) in $WORK/ipx" >&2
  mkdir -p "$WORK/ipx"
  [[ -f $WORK/ipx/package.json ]] || echo '{"name":"ipx-bench","private":true,"type":"module"}' >"$WORK/ipx/package.json"
  (cd "$WORK/ipx" && npm install --no-audit --no-fund --silent "ipx@$IPX_VERSION")
fi

if [[ ! -x $TOOLS/bin/dssim ]]; then
  echo "install: dssim $DSSIM_VERSION (cargo install, a few minutes on 2 cores) into $TOOLS" >&2
  CARGO_TARGET_DIR=$WORK/cargo-target nice -n 10 \
    cargo install --quiet --locked --version "$DSSIM_VERSION" --root "$TOOLS" dssim
fi
