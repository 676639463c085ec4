#!/usr/bin/env bash
# Writes dist/fae-studio-VERSION-TARGET.zip (Windows) or .tar.gz (others): the release binary,
# assets/ (built-in models and sample photos), both licence files and a short readme, plus
# dist/SHA256SUMS. The binary finds assets/ beside itself, so the unpacked folder runs from
# anywhere.
#
#   tools/package.sh [TARGET...]     (default: this machine's target)
#
# Cross targets are built as tools/cross_check.sh builds them (CROSS_TARGET_DIR, default
# target/cross); the native one in target/. Needs zip for Windows archives.
set -euo pipefail
cd "$(dirname "$0")/.."
CROSS_DIR=${CROSS_TARGET_DIR:-target/cross}
HOST=$(rustc -vV | sed -n 's/^host: //p')
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER:-aarch64-linux-gnu-gcc}
targets=("$@")
((${#targets[@]})) || targets=("$HOST")
mkdir -p dist

for target in "${targets[@]}"; do
    exe=fae-studio
    [[ $target == *windows* ]] && exe=fae-studio.exe
    if [ "$target" = "$HOST" ]; then
        cargo build --release --locked
        bin=target/release/$exe
    else
        CARGO_TARGET_DIR=$CROSS_DIR cargo build --release --locked --target "$target"
        bin=$CROSS_DIR/$target/release/$exe
    fi
    name=fae-studio-$VERSION-$target
    stage=$(mktemp -d)
    trap 'rm -rf "$stage"' EXIT
    mkdir "$stage/$name"
    cp "$bin" LICENSE-MIT LICENSE-APACHE "$stage/$name/"
    # Symbols are of no use to a user (a third of the binary); the target's own strip if present.
    case $target in
    "$HOST") strip_tool=strip ;;
    x86_64-pc-windows-gnu) strip_tool=x86_64-w64-mingw32-strip ;;
    *) strip_tool=${target%%-unknown-*}-linux-gnu-strip ;;
    esac
    command -v "$strip_tool" >/dev/null && "$strip_tool" "$stage/$name/$exe"
    cp -r assets "$stage/$name/assets"
    cat >"$stage/$name/README.txt" <<EOF
FAE Studio $VERSION for $target

Feature Auto-Encoder studio: frozen encoders, one-layer latent compression, editing and
regeneration. Run $exe without arguments for the app (it opens the sample photo on the built-in
model), or with --help for the command line, e.g.

  $exe features --image assets/samples/chelsea.png --out tokens.safetensors
  $exe reconstruct --image assets/samples/chelsea.png --out recon.png

assets/ must stay beside $exe (or set FAE_STUDIO_ASSETS to its path). The app needs a Vulkan,
DirectX 12, Metal or OpenGL driver; the command line runs on the CPU without any.

Licence: MIT or Apache-2.0, at your option (LICENSE-MIT, LICENSE-APACHE); the built-in DINOv2-S
weights are Apache-2.0 (assets/dinov2-small.LICENSE.md), the sample photos as in
assets/samples/LICENSES.md. Source and documentation: the project's README.md.
EOF
    rm -f "dist/$name.zip" "dist/$name.tar.gz"
    if [[ $target == *windows* ]]; then
        archive=$name.zip
        (cd "$stage" && zip -qr -X "$OLDPWD/dist/$archive" "$name")
    else
        archive=$name.tar.gz
        tar -C "$stage" --owner=0 --group=0 -czf "dist/$archive" "$name"
    fi
    rm -rf "$stage"
    trap - EXIT
    (cd dist && { grep -v "  $archive\$" SHA256SUMS 2>/dev/null || true; sha256sum "$archive"; } \
        >SHA256SUMS.new && mv SHA256SUMS.new SHA256SUMS)
    echo "dist/$archive ($(du -h "dist/$archive" | cut -f1))"
done
cat dist/SHA256SUMS
