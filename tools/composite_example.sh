#!/usr/bin/env bash
# One real edit shown three ways (README, "Keeping the photo"): the plain decode, the edit
# composited into the photo at the photo's resolution, and detail transfer. Writes
# docs/composite-decode.png, docs/composite-mask.png and docs/composite-detail.png from
# assets/samples/chelsea.png (451 x 300, under 512 px wide, so written as they come).
#
#   tools/composite_example.sh        # FAE_STUDIO_BIN picks the binary
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${FAE_STUDIO_BIN:-${CARGO_TARGET_DIR:-target}/release/fae-studio}
if [ ! -x "$BIN" ]; then
    cargo build --release --locked
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp assets/samples/chelsea.png "$work/"
# Push the cat's face (the left half of the crop) towards the coffee photo's colours.
cp assets/samples/coffee.png "$work/"
cat > "$work/recipe.json" <<'JSON'
{"version": 1, "edits": [
  {"op": "blend", "source": "coffee.png", "strength": 0.6, "mask": {"rect": [0.1, 0.15, 0.6, 0.85], "feather": 0.03}}
]}
JSON
edit() {
    "$BIN" --backend cpu edit --image "$work/chelsea.png" --recipe "$work/recipe.json" "$@"
}
edit --out docs/composite-decode.png
edit --composite mask --feather 24 --color-match --out docs/composite-mask.png
edit --composite detail --feather 24 --out docs/composite-detail.png
ls -l docs/composite-*.png
