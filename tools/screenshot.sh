#!/usr/bin/env bash
# Starts the real app under Xvfb (wgpu on lavapipe where there is no GPU), waits until it has
# loaded the built-in model and the sample photo, checks it is still running, and saves a
# screenshot of the screen to docs/screenshot.png (or the path given as the first argument).
#
#   tools/screenshot.sh [out.png [app arguments]]   # WAIT=seconds to wait (default 45)
#
# Needs: xvfb, imagemagick (`import`), mesa-vulkan-drivers. Uses a fresh session, so the sample
# photo opens as for a new user. FAE_STUDIO_MODEL=path.safetensors uses another checkpoint than
# the built-in model; FAE_STUDIO_BIN picks the binary.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-docs/screenshot.png}
shift || true
WAIT=${WAIT:-45}
BIN=${FAE_STUDIO_BIN:-${CARGO_TARGET_DIR:-target}/release/fae-studio}
if [ ! -x "$BIN" ]; then
    cargo build --release
fi
command -v Xvfb >/dev/null || { echo "install xvfb" >&2; exit 1; }
command -v import >/dev/null || { echo "install imagemagick" >&2; exit 1; }
mkdir -p "$(dirname "$OUT")"

NUM=${DISPLAY_NUM:-97}
Xvfb ":$NUM" -screen 0 1400x860x24 -nolisten tcp &
XVFB=$!
APP=
cleanup() {
    [ -n "$APP" ] && kill "$APP" 2>/dev/null || true
    kill "$XVFB" 2>/dev/null || true
}
trap cleanup EXIT
sleep 1
export DISPLAY=":$NUM"
FRESH=$(mktemp -d)
mkdir -p "$FRESH/run" && chmod 700 "$FRESH/run"
export XDG_DATA_HOME="$FRESH/data" XDG_CONFIG_HOME="$FRESH/config" XDG_RUNTIME_DIR="$FRESH/run"
"$BIN" "$@" &
APP=$!
sleep "$WAIT"
if ! kill -0 "$APP" 2>/dev/null; then
    echo "the app exited early" >&2
    exit 1
fi
import -window root "$OUT"
echo "saved $OUT (the app was still running after ${WAIT} s)"
