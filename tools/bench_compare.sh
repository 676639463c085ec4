#!/usr/bin/env bash
# DINOv2-S encoder speed on this CPU, in one run: FAE Studio (burn's CPU backend) against ONNX
# Runtime and PyTorch on the same weights. Prints the JSON rows, then a table.
#
#   bash tools/setup_python.sh        # once (the reference environment, see tools/requirements.txt)
#   tools/bench_compare.sh [--quick]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-/work/pyenv/bin/python}
cargo build --release --manifest-path "$root/Cargo.toml" >&2
rows=$(mktemp)
"$root/target/release/fae-studio" bench --json --backend cpu --stage encoder --sizes 224,448 --batches 1,8 --runs 10 | tee "$rows"
(cd "$root/tools" && "$python" bench_reference.py "$@") | tee -a "$rows"
python3 - "$rows" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print("\n| backend | size | batch | median ms |\n|---|---|---|---|")
for r in sorted(rows, key=lambda r: (r["size"], r["batch"], r["median_ms"])):
    print(f"| {r['backend']} | {r['size']} | {r['batch']} | {r['median_ms']:.1f} |")
PY
