#!/usr/bin/env bash
# Starts the real app under Xvfb (wgpu on lavapipe where there is no GPU) with `--screenshot`: it
# waits until the built-in model and the sample photo are drawn, saves the window to
# docs/screenshot.png (or the path given as the first argument), prints what drew it, and exits.
#
#   tools/screenshot.sh [out.png [app arguments]]
#
# Needs: xvfb, mesa-vulkan-drivers (or any GPU driver). Uses a fresh session, so the sample photo
# opens as for a new user. FAE_STUDIO_MODEL=path.safetensors uses another checkpoint than the
# built-in model; FAE_STUDIO_BIN picks the binary; VK_ICD_FILENAMES=/nonexistent.json shows the
# OpenGL path.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-docs/screenshot.png}
shift || true
BIN=${FAE_STUDIO_BIN:-${CARGO_TARGET_DIR:-target}/release/fae-studio}
if [ ! -x "$BIN" ]; then
    cargo build --release
fi
command -v Xvfb >/dev/null || { echo "install xvfb" >&2; exit 1; }
mkdir -p "$(dirname "$OUT")"

NUM=${DISPLAY_NUM:-97}
Xvfb ":$NUM" -screen 0 1400x860x24 -nolisten tcp &
XVFB=$!
trap 'kill "$XVFB" 2>/dev/null || true' EXIT
sleep 1
export DISPLAY=":$NUM"
FRESH=$(mktemp -d)
mkdir -p "$FRESH/run" && chmod 700 "$FRESH/run"
export XDG_DATA_HOME="$FRESH/data" XDG_CONFIG_HOME="$FRESH/config" XDG_RUNTIME_DIR="$FRESH/run"
"$BIN" --screenshot "$OUT" "$@"
