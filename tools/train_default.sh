#!/usr/bin/env bash
# Retrains FAE Studio's built-in model, assets/fae-default.safetensors, on the openly licensed
# photos listed by tools/fetch_photos.sh, at 224 px on the built-in DINOv2-S encoder.
#
#   tools/train_default.sh            # fetch photos, train (or resume), export the asset
#   STEPS=4000 BATCH=16 tools/train_default.sh
#
# Runs resume: interrupting it (Ctrl-C) and starting it again continues where it stopped.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
photos=${PHOTOS:-$root/.work/photos}
run=${RUN:-$root/.work/default-run}
steps=${STEPS:-1800}
batch=${BATCH:-8}
backend=${BACKEND:-auto}

"$root/tools/fetch_photos.sh" "$photos"
cargo build --release --manifest-path "$root/Cargo.toml"
bin=$root/target/release/fae-studio
resume=()
[[ -f $run/latest.safetensors ]] && resume=(--resume)
"$bin" train --backend "$backend" --data "$photos" --out "$run" --size 224 --batch "$batch" \
  --steps "$steps" --stage all --perceptual "${PERCEPTUAL:-0}" --checkpoint-every 100 \
  --val-every 300 "${resume[@]}"
"$bin" export --model "$run/latest.safetensors" --out "$root/assets/fae-default.safetensors" --f16
(cd "$root/assets" && sha256sum fae-default.safetensors > fae-default.sha256)
cp "$photos/LICENSES.tsv" "$root/assets/fae-default.training-photos.tsv"
echo "exported assets/fae-default.safetensors from $run (metrics in $run/metrics.jsonl)"
