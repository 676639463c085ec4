#!/usr/bin/env python3
"""Plain-numpy statement of the two bicubic resizes transformers applies to position
tables, checked against torch. A readable spec for the Rust port.

How to run (a second; one CPU thread):

    /work/pyenv/bin/python tools/check_interpolation.py

1. `F.interpolate(x, size=(oh, ow), mode="bicubic", align_corners=False)`
   (Dinov2Model, SiglipVisionModel): separable; per output index i,
   src = (i + 0.5) * in / out - 0.5, i0 = floor(src), t = src - i0, taps i0-1..i0+2
   with Keys' cubic, a = -0.75, and indices clamped to [0, in-1] (edge replicate).
   Weights always sum to 1; no antialiasing, also when shrinking.

2. The same with `antialias=True` (Dinov2WithRegistersModel): PIL-style separable
   resampling. scale = in / out, support = 2 * max(scale, 1),
   center = (i + 0.5) * scale, taps j in [max(int(center - support + 0.5), 0),
   min(int(center + support + 0.5), in)), weight = cubic((j - center + 0.5) / max(scale, 1))
   with a = -0.5 (NOT -0.75), normalised to sum 1; no clamping, taps outside are dropped.
   This differs from (1) even when upsampling (different a, border handling).

Both are computed in float32 by transformers for DINOv2 (the table is cast to f32 first),
and torch computes scale and source coordinates in float32 too (doing them in f64
shifts results by up to ~1e-5 on a 37 -> 48 resize); this spec mirrors that and agrees
with torch to ~2e-6 on unit-variance data.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(1)


def cubic(x: float, a: float) -> float:
    x = abs(x)
    if x < 1:
        return ((a + 2) * x - (a + 3)) * x * x + 1
    if x < 2:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


F32 = np.float32


def weights_plain(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] matrix of method 1 (align_corners=False, a=-0.75, clamped taps).

    The source coordinate is computed in float32 as torch does; in float64 the result
    moves by up to ~1e-5 for a 37 -> 48 resize.
    """
    w = np.zeros((n_out, n_in), np.float64)
    scale = F32(n_in) / F32(n_out)
    for i in range(n_out):
        src = F32(scale * F32(i + 0.5)) - F32(0.5)
        i0 = math.floor(src)
        t = float(F32(src - F32(i0)))
        for k in range(-1, 3):
            j = min(max(i0 + k, 0), n_in - 1)
            w[i, j] += cubic(k - t, -0.75)
    return w


def weights_antialias(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] matrix of method 2 (antialias=True, a=-0.5, PIL-style); float32 coordinates."""
    w = np.zeros((n_out, n_in), np.float64)
    scale = F32(n_in) / F32(n_out)
    support = F32(2.0) * max(scale, F32(1.0))
    inv = F32(1.0) / max(scale, F32(1.0))
    for i in range(n_out):
        center = F32(scale * F32(i + 0.5))
        lo = max(int(center - support + F32(0.5)), 0)
        hi = min(int(center + support + F32(0.5)), n_in)
        ws = [cubic(float(F32(F32(F32(j) - center + F32(0.5)) * inv)), -0.5) for j in range(lo, hi)]
        total = sum(ws)
        for j, v in zip(range(lo, hi), ws):
            w[i, j] = v / total
    return w


def resize(grid: np.ndarray, oh: int, ow: int, antialias: bool) -> np.ndarray:
    """grid [C, H, W] -> [C, oh, ow], rows then columns."""
    f = weights_antialias if antialias else weights_plain
    wh, ww = f(grid.shape[1], oh), f(grid.shape[2], ow)
    return np.einsum("oh,chw,pw->cop", wh, grid.astype(np.float64), ww)


def main() -> None:
    rng = np.random.default_rng(0)
    cases = [(4, 4, 3, 5), (4, 4, 5, 3), (7, 7, 4, 8), (37, 37, 16, 16), (37, 37, 32, 48), (37, 37, 64, 40)]
    worst = 0.0
    for ih, iw, oh, ow in cases:
        x = rng.standard_normal((8, ih, iw)).astype(np.float32)
        for aa in (False, True):
            ref = F.interpolate(torch.from_numpy(x)[None], size=(oh, ow), mode="bicubic",
                                align_corners=False, antialias=aa)[0].numpy()
            mine = resize(x, oh, ow, aa)
            d = float(np.abs(ref - mine).max())
            worst = max(worst, d)
            print(f"{ih}x{iw} -> {oh}x{ow} antialias={aa!s:5}: max |torch - numpy spec| = {d:.2e}")
        plain = F.interpolate(torch.from_numpy(x)[None], size=(oh, ow), mode="bicubic", align_corners=False)
        aa_ = F.interpolate(torch.from_numpy(x)[None], size=(oh, ow), mode="bicubic", align_corners=False,
                            antialias=True)
        print(f"{'':18} antialias on vs off differ by up to {float((plain - aa_).abs().max()):.3f}")
    if worst > 5e-6:
        raise SystemExit(f"spec does not match torch: {worst}")
    print("ok")


if __name__ == "__main__":
    main()
