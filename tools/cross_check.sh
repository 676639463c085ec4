#!/usr/bin/env bash
# Builds the release binary for Windows (x86_64-pc-windows-gnu) and Linux ARM
# (aarch64-unknown-linux-gnu), runs each on the built-in models (Wine; qemu-user with the cross
# sysroot), compares every output with the native Linux run and prints a table. Then runs the CPU
# fast paths' tests on aarch64 under qemu-user, and starts the Windows app under Wine and a
# virtual X display on each backend, reporting whether the window opens and on what.
#
#   tools/cross_check.sh            (as root on Debian: installs what is missing)
#
# Environment: CROSS_TARGET_DIR (default target/cross: both targets' builds, kept between runs;
# WIN_TARGET_DIR and ARM_TARGET_DIR override it per target), SKIP_BUILD=1 (use the binaries that
# are there),
# CROSS_OUT (default target/cross-check: run folders, logs, table.md), SKIP_APP=1 (no window
# runs), SKIP_ARM_TESTS=1, APP_TIMEOUT (seconds per window run, default 900).
#
# Tolerances: tokens within 1e-4 relative (largest difference over the tensor's largest
# magnitude), images within one grey level. Everything runs on the CPU backend, so the three
# builds compute the same thing; bench is run for speed and success only.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CROSS_DIR=${CROSS_TARGET_DIR:-target/cross}
WIN_DIR=${WIN_TARGET_DIR:-$CROSS_DIR}
ARM_DIR=${ARM_TARGET_DIR:-$CROSS_DIR}
OUT=${CROSS_OUT:-target/cross-check}
APP_TIMEOUT=${APP_TIMEOUT:-900}
WIN=x86_64-pc-windows-gnu
ARM=aarch64-unknown-linux-gnu
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
log() { echo "cross_check: $*" >&2; }

# --- what it needs ----------------------------------------------------------------------------
packages=(gcc-mingw-w64-x86-64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross wine64 wine qemu-user
    xvfb mesa-vulkan-drivers libvulkan1)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null || {
        log "apt-get failed (run as root)"
        exit 1
    }
fi
rustup target add "$WIN" "$ARM" >/dev/null 2>&1 || { log "rustup target add failed"; exit 1; }
WINE=$(command -v wine64 || command -v wine)

# --- builds -----------------------------------------------------------------------------------
declare -A BUILD_S BUILD_RC
build() { # name, cargo arguments...
    local name=$1 start
    shift
    if [ -n "${SKIP_BUILD:-}" ]; then
        BUILD_RC[$name]="skipped"
        BUILD_S[$name]="-"
        return
    fi
    start=$(date +%s)
    log "building $name"
    nice -n 5 cargo build --release --locked "$@" >"$OUT/build-$name.log" 2>&1
    BUILD_RC[$name]=$?
    BUILD_S[$name]=$(($(date +%s) - start))
    log "$name: rc ${BUILD_RC[$name]} in ${BUILD_S[$name]} s"
}
build native
CARGO_TARGET_DIR=$WIN_DIR build windows --target "$WIN"
CARGO_TARGET_DIR=$ARM_DIR build aarch64 --target "$ARM"

# Wine 8's bcryptprimitives.dll lacks ProcessPrng, which Rust's standard library calls for random
# bytes: a stub beside the exe provides it through RtlGenRandom (advapi32's SystemFunction036).
mkdir -p "$OUT/stub"
cat >"$OUT/stub/bcryptprimitives.c" <<'C'
#include <windows.h>
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);
__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length) {
    while (length > 0) {
        ULONG n = length > 0x40000000 ? 0x40000000 : (ULONG)length;
        if (!SystemFunction036(data, n)) return FALSE;
        data += n;
        length -= n;
    }
    return TRUE;
}
C
x86_64-w64-mingw32-gcc -O2 -shared -o "$OUT/stub/bcryptprimitives.dll" \
    "$OUT/stub/bcryptprimitives.c" -ladvapi32 || log "the ProcessPrng stub did not build"

# Each platform's binary in a folder of its own with assets/ beside it (as a package has it).
declare -A RUN
install_bin() { # platform, binary
    local dir="$OUT/$1/bin"
    rm -rf "$dir" && mkdir -p "$dir"
    [ -f "$2" ] || return 1
    cp "$2" "$dir/"
    ln -s "$ROOT/assets" "$dir/assets"
}
install_bin native target/release/fae-studio && RUN[native]="$OUT/native/bin/fae-studio"
if install_bin windows "$WIN_DIR/$WIN/release/fae-studio.exe"; then
    cp "$OUT/stub/bcryptprimitives.dll" "$OUT/windows/bin/" 2>/dev/null
    RUN[windows]="$WINE $OUT/windows/bin/fae-studio.exe"
fi
install_bin aarch64 "$ARM_DIR/$ARM/release/fae-studio" &&
    RUN[aarch64]="qemu-aarch64 -L /usr/aarch64-linux-gnu $OUT/aarch64/bin/fae-studio"
export WINEPREFIX="$OUT/wineprefix" WINEDEBUG=-all WINEDLLOVERRIDES="bcryptprimitives=n,b"
if [ -n "${RUN[windows]:-}" ] && [ ! -f "$WINEPREFIX/system.reg" ]; then
    log "creating the Wine prefix"
    "$WINE" wineboot --init >"$OUT/wineboot.log" 2>&1
fi

# --- the commands -----------------------------------------------------------------------------
COMMANDS=(features reconstruct edit bench)
declare -A RC SECS
run_commands() { # platform
    local p=$1 dir="$OUT/$1" c start
    cp assets/samples/astronaut.png assets/samples/chelsea.png "$dir/"
    cat >"$dir/recipe.json" <<'JSON'
{
  "version": 1,
  "edits": [
    {"op": "blend", "source": "chelsea.png", "strength": 0.3},
    {"op": "scale_channels", "channels": [0, 3], "factor": 1.5, "mask": {"rect": [0.0, 0.0, 0.5, 0.5], "feather": 0.05}},
    {"op": "noise", "seed": 42, "sigma": 0.1, "mask": {"all": true}},
    {"op": "smooth", "sigma": 0.8}
  ]
}
JSON
    for c in "${COMMANDS[@]}"; do
        local args
        case $c in
        features) args="features --image astronaut.png --out features.safetensors" ;;
        reconstruct) args="reconstruct --image astronaut.png --out reconstruct.png" ;;
        edit) args="edit --image astronaut.png --recipe recipe.json --out edit.png" ;;
        bench) args="bench --stage encoder --sizes 224 --batches 1 --runs 3 --json" ;;
        esac
        start=$(date +%s%N)
        # Relative paths: Wine maps the working folder, so the same arguments serve every platform.
        (cd "$dir" && eval "${RUN[$p]} --backend cpu $args" >"$c.out" 2>"$c.err")
        RC[$p.$c]=$?
        SECS[$p.$c]=$(awk -v a="$start" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
        log "$p $c: rc ${RC[$p.$c]} in ${SECS[$p.$c]} s"
    done
}
for p in native windows aarch64; do
    [ -n "${RUN[$p]:-}" ] && run_commands "$p"
done

compare() { # platform, command -> one cell
    local p=$1 c=$2
    [ -z "${RUN[$p]:-}" ] && { echo "not built"; return; }
    [ "${RC[$p.$c]}" = 0 ] || { echo "FAILED: $(tail -1 "$OUT/$p/$c.err" | cut -c1-80)"; return; }
    [ "${RC[native.$c]:-1}" = 0 ] || { echo "ran (no native output)"; return; }
    case $c in
    features) python3 tools/compare_outputs.py tokens "$OUT/native/features.safetensors" "$OUT/$p/features.safetensors" ;;
    reconstruct | edit) python3 tools/compare_outputs.py image "$OUT/native/$c.png" "$OUT/$p/$c.png" ;;
    bench) echo "ran: median $(sed -n 's/.*"median_ms":\([0-9.]*\).*/\1/p' "$OUT/$p/bench.out" | head -1 | xargs printf '%.0f') ms" ;;
    esac
}

# --- the library's tests on aarch64 (the CPU fast paths among them) -------------------------------------------------------
ARM_TESTS="skipped"
if [ -z "${SKIP_ARM_TESTS:-}" ]; then
    log "the library's tests on aarch64 under qemu-user"
    start=$(date +%s)
    CARGO_TARGET_DIR=$ARM_DIR nice -n 5 cargo test --release --locked --target "$ARM" --lib \
        -- --nocapture >"$OUT/arm-tests.log" 2>&1
    rc=$?
    ARM_TESTS="$(grep -E '^test result' "$OUT/arm-tests.log" | tail -1 | cut -d. -f1-2) (rc $rc, $(($(date +%s) - start)) s)"
    isa=$(grep -o 'instruction sets on this CPU: .*' "$OUT/arm-tests.log" | head -1)
    [ -n "$isa" ] && ARM_TESTS="$ARM_TESTS; $isa"
fi

# --- the Windows app under Wine and a virtual display -----------------------------------------
declare -A APP
APP_RAN=
if [ -z "${SKIP_APP:-}" ] && [ -n "${RUN[windows]:-}" ]; then
    for b in default dx12 vulkan gl; do
        dir="$OUT/windows/app-$b"
        rm -rf "$dir" && mkdir -p "$dir"
        log "the Windows app under Wine, WGPU_BACKEND=$b"
        env_b=()
        [ "$b" != default ] && env_b=(WGPU_BACKEND=$b)
        (cd "$dir" && env "${env_b[@]}" timeout "$APP_TIMEOUT" xvfb-run -a -s "-screen 0 1400x900x24" \
            $WINE "$OUT/windows/bin/fae-studio.exe" --screenshot window.png >out.log 2>err.log)
        rc=$?
        line=$(grep -m1 '^screenshot ' "$dir/out.log" | sed 's/^screenshot [^ ]* //')
        note=$(grep -m1 '^window: fell back' "$dir/err.log" | sed 's/^window: //')
        if [ $rc = 0 ] && [ -n "$line" ]; then
            APP[$b]="opens: $line${note:+ ($note)}"
        elif [ $rc = 124 ]; then
            APP[$b]="no screenshot in $APP_TIMEOUT s${note:+ ($note)}"
        else
            APP[$b]="does not open (rc $rc): $(grep -v '^$' "$dir/err.log" | tail -1 | cut -c1-200)"
        fi
        log "  ${APP[$b]}"
        APP_RAN=1
    done
fi

# --- the table ---------------------------------------------------------------------------------
{
    echo "| target | built (release) | run under | features (tokens) | reconstruct | edit | bench encoder 224 |"
    echo "|---|---|---|---|---|---|---|"
    for p in native windows aarch64; do
        case $p in
        native) t="x86_64-unknown-linux-gnu"; under="native" ;;
        windows) t=$WIN; under="Wine $($WINE --version 2>/dev/null | sed 's/^wine-//')" ;;
        aarch64) t=$ARM; under="qemu-aarch64 $(qemu-aarch64 --version | head -1 | awk '{print $3}')" ;;
        esac
        if [ "${BUILD_RC[$p]}" = skipped ]; then
            built=$([ -n "${RUN[$p]:-}" ] && echo "prebuilt" || echo "not built")
        else
            built="rc ${BUILD_RC[$p]}, ${BUILD_S[$p]} s"
        fi
        row="| $t | $built | $under"
        for c in "${COMMANDS[@]}"; do
            if [ "$p" = native ]; then
                cell=$([ "${RC[native.$c]:-1}" = 0 ] && echo "reference (${SECS[native.$c]} s)" || echo "FAILED")
                [ "$c" = bench ] && cell="$(compare native bench)"
            else
                cell="$(compare "$p" "$c")"
                [ -n "${SECS[$p.$c]:-}" ] && cell="$cell (${SECS[$p.$c]} s)"
            fi
            row="$row | $cell"
        done
        echo "$row |"
    done
    echo
    echo "aarch64 cpu_fast tests under qemu-user: $ARM_TESTS"
    if [ -n "$APP_RAN" ]; then
        echo
        echo "| Windows app under Wine + Xvfb, WGPU_BACKEND | result |"
        echo "|---|---|"
        for b in default dx12 vulkan gl; do
            [ -n "${APP[$b]:-}" ] && echo "| $b | ${APP[$b]} |"
        done
    fi
} | tee "$OUT/table.md"
