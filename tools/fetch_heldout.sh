#!/usr/bin/env bash
# Rebuild the held-out evaluation folder listed in assets/heldout.tsv: openly licensed photos
# from Debian packages that the built-in model never saw (none is in
# assets/fae-default.training-photos.tsv; the packages are not among tools/fetch_photos.sh's).
#
#   tools/fetch_heldout.sh [OUT_DIR]      (default: .work/heldout in the repository)
#   fae-studio evaluate --reconstruct OUT_DIR --json
#
# How the 48 files were chosen (once, recorded in the TSV):
#   tuxpaint-stamps  every photographic stamp of animals/, food/, plants/ (not cartoon/) whose
#                    sides are both >= 224 px; three drawings among them left out (26 photos,
#                    cut out: the program composites them over white)
#   lomiri           the two photographs of lomiri-wallpapers-20.04 (the other two are art)
#   stellarium       deep-sky photographs (nebulae/default), colour, sides >= 224 px: the 20 with
#                    the lowest sha256 of the file bytes
#
# Packages are fetched with `apt-get download` and unpacked with `dpkg-deb -x` into
# OUT_DIR.cache; nothing is installed. Every file is checked against its sha256.
# Exit status: 0 ok; 1 a package could not be fetched or a file is missing or differs.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LIST=$HERE/../assets/heldout.tsv
OUT=${1:-$HERE/../.work/heldout}
OUT=${OUT%/}
CACHE=$OUT.cache

die() { printf 'fetch_heldout: error: %s\n' "$*" >&2; exit 1; }
for tool in apt-get dpkg-deb sha256sum; do
    command -v "$tool" >/dev/null || die "'$tool' not found"
done
[ -f "$LIST" ] || die "$LIST not found"
mkdir -p "$OUT" "$CACHE/debs" "$CACHE/x"

# package=version pairs the list needs
mapfile -t packages < <(tail -n +2 "$LIST" | cut -f2,3 | sort -u)
for pv in "${packages[@]}"; do
    p=${pv%%$'\t'*}
    v=${pv#*$'\t'}
    if [ ! -d "$CACHE/x/$p" ]; then
        if ! apt-cache show "$p=$v" >/dev/null 2>&1; then
            [ "$(id -u)" -eq 0 ] || die "apt does not know $p $v; run 'sudo apt-get update' and retry"
            apt-get update -qq || die "apt-get update failed"
        fi
        echo "fetch_heldout: $p $v" >&2
        (cd "$CACHE/debs" && apt-get download -q -o APT::Sandbox::User=root "$p=$v" >/dev/null) \
            || die "could not download $p $v"
        dpkg-deb -x "$CACHE/debs/${p}_"*.deb "$CACHE/x/$p.part" || die "could not unpack $p"
        mv "$CACHE/x/$p.part" "$CACHE/x/$p"
    fi
done

n=0
while IFS=$'\t' read -r path package _version original _license _copyright _w _h _bytes sha; do
    src=$CACHE/x/$package/$original
    [ -f "$src" ] || die "$package has no $original"
    mkdir -p "$OUT/$(dirname "$path")"
    cp "$src" "$OUT/$path"
    echo "$sha  $OUT/$path" | sha256sum --check --quiet - || die "$path differs from the list"
    n=$((n + 1))
done < <(tail -n +2 "$LIST")
echo "fetch_heldout: $n images in $OUT" >&2
