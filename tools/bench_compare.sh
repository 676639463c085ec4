#!/usr/bin/env bash
# FAE Studio against the references on this CPU, in one run, printing the JSON rows, then a table.
#
#   bash tools/setup_python.sh        # once (the reference environment, see tools/requirements.txt)
#   tools/bench_compare.sh [--quick] [--rounds R]
#                                     # the DINOv2-S encoder: burn's CPU backend against ONNX
#                                     # Runtime and PyTorch on the same weights, R rounds (default
#                                     # 1) with the side that goes first alternating
#   tools/bench_compare.sh --train [--rounds 3] [--runs 3] [--threads N] [--size 224] [--batch 8]
#                          [--stages train_fae,train_pixel,train_pixel_decoded,train_generator]
#                                     # training steps: `fae-studio bench --stage train_*` against
#                                     # the PyTorch eager replicas (tools/bench_train_reference.py)
#
# Training: each round runs every stage once on each side, one process per stage and side, the
# two sides interleaved (the side that goes first alternates between rounds), each taking one
# warm-up step and --runs timed steps on --threads threads. The table gives, per stage and side,
# the fastest step over all rounds (on a shared machine the minimum is the least disturbed
# figure), images/s at that step, and the highest peak RSS of the rounds.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-/work/pyenv/bin/python}
train=0 rounds= runs=3 threads=$(nproc) size=224 batch=8
stages=train_fae,train_pixel,train_pixel_decoded,train_generator
encoder_args=()
while [ $# -gt 0 ]; do
    case $1 in
        --train) train=1 ;;
        --rounds) rounds=$2; shift ;;
        --runs) runs=$2; shift ;;
        --threads) threads=$2; shift ;;
        --size) size=$2; shift ;;
        --batch) batch=$2; shift ;;
        --stages) stages=$2; shift ;;
        *) encoder_args+=("$1") ;;
    esac
    shift
done
cargo build --release --locked --manifest-path "$root/Cargo.toml" >&2
bin="$root/target/release/fae-studio"
rows=$(mktemp)

if [ "$train" = 0 ]; then
    rust_encoder() {
        "$bin" bench --json --backend cpu --stage encoder --sizes 224,448 --batches 1,8 --runs 10
    }
    references() { (cd "$root/tools" && "$python" bench_reference.py "${encoder_args[@]}"); }
    for round in $(seq 1 "${rounds:-1}"); do
        if [ $((round % 2)) = 1 ]; then
            rust_encoder | tee -a "$rows"; references | tee -a "$rows"
        else
            references | tee -a "$rows"; rust_encoder | tee -a "$rows"
        fi
    done
    python3 - "$rows" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
groups = {}
for r in rows:
    groups.setdefault((r["size"], r["batch"], r["backend"]), []).append(r)
print("\nmedian of the rounds' medians; minimum of all runs\n")
print("| backend | size | batch | rounds | median ms | minimum ms |\n|---|---|---|---|---|---|")
for (size, batch, backend), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1],
        statistics.median(r["median_ms"] for r in kv[1]))):
    med = statistics.median(r["median_ms"] for r in rs)
    low = min(r.get("min_ms", r["median_ms"]) for r in rs)
    print(f"| {backend} | {size} | {batch} | {len(rs)} | {med:.1f} | {low:.1f} |")
PY
    exit 0
fi
rounds=${rounds:-3}

rust() {
    RAYON_NUM_THREADS=$threads "$bin" bench --json --backend cpu --stage "$1" --runs "$runs" \
        --train-size "$size" --train-batch "$batch"
}
torch() {
    (cd "$root/tools" && "$python" bench_train_reference.py --stage "$1" --runs "$runs" \
        --threads "$threads" --size "$size" --batch "$batch")
}
for round in $(seq 1 "$rounds"); do
    for stage in ${stages//,/ }; do
        if [ $((round % 2)) = 1 ]; then
            rust "$stage" | tee -a "$rows"; torch "$stage" | tee -a "$rows"
        else
            torch "$stage" | tee -a "$rows"; rust "$stage" | tee -a "$rows"
        fi
    done
done
python3 - "$rows" "$rounds" "$runs" "$threads" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
rounds, runs, threads = sys.argv[2:5]
best = {}
for r in rows:
    key = (r["stage"], "pytorch" if r["backend"].startswith("pytorch") else "rust")
    b = best.setdefault(key, {"min_ms": float("inf"), "peak": 0.0, "batch": r["batch"], "size": r["size"]})
    b["min_ms"] = min(b["min_ms"], r["min_ms"])
    b["peak"] = max(b["peak"], r.get("peak_mem_mib") or 0.0)
print(f"\nfastest step of {rounds} interleaved rounds x {runs} steps, {threads} threads; peak RSS: highest of the rounds")
print("\n| stage | size | batch | FAE Studio images/s | PyTorch images/s | ratio | FAE Studio peak MiB | PyTorch peak MiB |")
print("|---|---|---|---|---|---|---|---|")
for stage in dict.fromkeys(s for s, _ in best):
    r, t = best.get((stage, "rust")), best.get((stage, "pytorch"))
    if not r or not t:
        continue
    ips = lambda b: b["batch"] * 1e3 / b["min_ms"]
    print(f"| {stage} | {r['size']} | {r['batch']} | {ips(r):.2f} ({r['min_ms']:.0f} ms) | "
          f"{ips(t):.2f} ({t['min_ms']:.0f} ms) | {ips(r) / ips(t):.2f}x | {r['peak']:.0f} | {t['peak']:.0f} |")
PY
