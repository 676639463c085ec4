#!/usr/bin/env bash
# Retrains FAE Studio's built-in model, assets/fae-default.safetensors, on the openly licensed
# pictures listed by tools/fetch_photos.sh, at 224 px on the built-in DINOv2-S encoder.
#
# The data: 3,650 distinct pictures from 32 Debian packages and the scikit-image wheel, one class
# folder per source (21): 448 photos (gcompris 258, tuxpaint-stamps 89, stellarium landscapes 36,
# tuxpaint 19, lomiri 14, mate 12, plasma 10, skimage 6, ukui 4), 1,257 paintings and illustrations
# (0ad 722, mostly 128 px portraits; wesnoth 367; tuxpaint-stamps 78; stellarium sky cultures 21;
# wallpapers 69) and 1,945 textures (0ad 664, supertuxkart 660, flightgear 617, mypaint papers 4);
# 2.1 GB on disk, from 4.3 GB of downloads (14 GB of cache with the unpacked packages); a fresh
# fetch took about 45 minutes on the 2 shared cores, a rerun with the cache about 10. Every
# file's licence and category is in LICENSES.tsv (copied to
# assets/fae-default.training-photos.tsv); the held-out images of assets/heldout.tsv are never
# among them (fetch_photos.sh checks). Views (--views, 8 by default): view 0 the centre crop, then
# in turn a downscaled random resized crop and squares of 1/2, 1/4 of the shorter side and of the
# working size itself (native pixels, never upsampled), so large wallpapers and textures give
# crops at several scales.
#
#   tools/train_default.sh            # fetch photos, train (or resume), export the asset
#   STEPS=4000 BATCH=16 tools/train_default.sh
#   STAGE=pixel FROM=assets/fae-default.safetensors STEPS=600 RUN=.work/pixel-run \
#     tools/train_default.sh          # retrain only the pixel decoder of the built-in model
#   STAGE=pixel FROM=assets/fae-default.safetensors PIXEL_HEAD=conv RUN=.work/conv-run \
#     tools/train_default.sh          # the same with a fresh conv head (no patch grid)
#   STAGE=fae FROM=assets/fae-default.safetensors STEPS=800 RUN=.work/fae-run \
#     tools/train_default.sh          # retrain only the FAE encoder and feature decoder (cheap
#                                     # steps on cached features; the latents change, so then
#                                     # retrain the generator and finish with a short pixel run)
#   BALANCE=1 VIEWS=2 LR=4e-4 WARMUP=50 BETA2=0.95 NOISE=0.19 ...
#                                     # the PyTorch baseline's optimiser, every folder alike
#   SIZE=112 ...                      # train at 112 px (8 x 8 tokens, a third of the cost of a
#                                     # step); finish with a short run at 224 px
#   STAGE=pixel FROM=... STEPS=2400 BALANCE=1 VIEWS=2 BETA2=0.95 LR=2e-4 WARMUP=50 NOISE=0.19 \
#     tools/train_default.sh          # a long pixel run, as the built-in model's last one
#                                     # (37 minutes alone on the 2-core machine)
#
# Runs resume: interrupting it (Ctrl-C) and starting it again continues where it stopped.
# After a pixel-only run the latents are unchanged, so the built-in generator is moved to the new
# model (`export --fae`, which checks that); after any other run, retrain the generator with
# tools/train_generator_default.sh.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
photos=${PHOTOS:-$root/.work/photos}
run=${RUN:-$root/.work/default-run}
steps=${STEPS:-1800}
batch=${BATCH:-8}
backend=${BACKEND:-auto}
stage=${STAGE:-all}

"$root/tools/fetch_photos.sh" "$photos"
cargo build --release --manifest-path "$root/Cargo.toml"
bin=$root/target/release/fae-studio
resume=()
[[ -f $run/latest.safetensors ]] && resume=(--resume)
from=()
[[ -n ${FROM:-} && ${#resume[@]} -eq 0 ]] && from=(--from "$FROM")
[[ -n ${PIXEL_HEAD:-} && ${#resume[@]} -eq 0 ]] && from+=(--pixel-head "$PIXEL_HEAD")
# Optional recipe flags: unset means train's own default.
recipe=()
[[ -n ${BALANCE:-} ]] && recipe+=(--balance)
[[ -n ${VIEWS:-} ]] && recipe+=(--views "$VIEWS")
[[ -n ${LR:-} ]] && recipe+=(--lr "$LR")
[[ -n ${WARMUP:-} ]] && recipe+=(--warmup "$WARMUP")
[[ -n ${BETA2:-} ]] && recipe+=(--beta2 "$BETA2")
"$bin" train --backend "$backend" --data "$photos" --out "$run" --size "${SIZE:-224}" --batch "$batch" \
  --steps "$steps" --stage "$stage" --perceptual "${PERCEPTUAL:-0}" --noise "${NOISE:-0.4}" \
  --gradient "${GRADIENT:-0}" --spectrum "${SPECTRUM:-0}" --ssim "${SSIM:-0}" --checkpoint-every 25 \
  --val-every 200 "${recipe[@]}" "${from[@]}" "${resume[@]}"
"$bin" export --model "$run/latest.safetensors" --out "$run/export-f16.safetensors" --f16
assets=$root/assets
if [[ $stage == pixel ]]; then
  # Checked against the current built-in model while it is still in place, then re-pointed at
  # the built-in file once the new model is there.
  "$bin" export --model "$assets/generator-default.safetensors" --fae "$run/export-f16.safetensors" \
    --out "$run/generator-moved.safetensors" --f16
fi
cp "$run/export-f16.safetensors" "$assets/fae-default.safetensors"
(cd "$assets" && sha256sum fae-default.safetensors > fae-default.sha256)
if [[ $stage == pixel ]]; then
  "$bin" export --model "$run/generator-moved.safetensors" --fae "$assets/fae-default.safetensors" \
    --out "$assets/generator-default.safetensors" --f16
  (cd "$assets" && sha256sum generator-default.safetensors > generator-default.sha256)
fi
cp "$photos/LICENSES.tsv" "$assets/fae-default.training-photos.tsv"
echo "exported assets/fae-default.safetensors from $run (metrics in $run/metrics.jsonl)"
