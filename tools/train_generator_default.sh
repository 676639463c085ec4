#!/usr/bin/env bash
# Retrains FAE Studio's built-in generator, assets/generator-default.safetensors: a flow
# transformer on the built-in FAE model's latents of the openly licensed photos listed by
# tools/fetch_photos.sh (their source packages are the classes).
#
#   tools/train_generator_default.sh
#   STEPS=20000 ARCH=s BACKEND=wgpu tools/train_generator_default.sh
#
# Runs resume: interrupting it (Ctrl-C) and starting it again continues where it stopped.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
photos=${PHOTOS:-$root/.work/photos}
run=${RUN:-$root/.work/generator-run}
steps=${STEPS:-3000}
batch=${BATCH:-32}
arch=${ARCH:-tiny}
patch=${PATCH:-2}
backend=${BACKEND:-auto}

"$root/tools/fetch_photos.sh" "$photos"
cargo build --release --manifest-path "$root/Cargo.toml"
bin=$root/target/release/fae-studio
resume=()
[[ -f $run/latest.safetensors ]] && resume=(--resume)
"$bin" train-generator --backend "$backend" --data "$photos" --out "$run" --arch "$arch" --patch "$patch" \
  --batch "$batch" --steps "$steps" --views 4 --checkpoint-every 250 --cache "${CACHE:-$root/.work/cache}" \
  "${resume[@]}"
"$bin" export --model "$run/latest.safetensors" --out "$root/assets/generator-default.safetensors" --f16
(cd "$root/assets" && sha256sum generator-default.safetensors > generator-default.sha256)
echo "exported assets/generator-default.safetensors from $run (metrics in $run/metrics.jsonl)"
