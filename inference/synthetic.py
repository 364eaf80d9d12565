"""Tiny image models built with `onnx.helper`: fixtures for the `filter` and `upscale` pipelines and
for benchmarks (a 3x3 convolution, a 2x resize). Their outputs are easy to compute with numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from inference.manifest import ModelManifest, manifest_for_onnx, manifest_toml

OPSET = 17
SHARPEN = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], np.float32)


def conv3x3_model(
    kernel: np.ndarray = SHARPEN,
    *,
    dtype: str = "float32",
    size: tuple[int, int] | None = None,
    batch: int | None = None,
) -> bytes:
    """Applies `kernel` to each RGB channel (zero padding). float32: values in 0..1, clipped;
    uint8: 0..255, rounded and clipped. `size`/`batch` fix the input shape when given."""
    weights = np.zeros((3, 3, 3, 3), np.float32)
    for c in range(3):
        weights[c, c] = kernel
    h, w = size if size is not None else ("height", "width")
    n = batch if batch is not None else "batch"
    elem = TensorProto.UINT8 if dtype == "uint8" else TensorProto.FLOAT
    top = 255.0 if dtype == "uint8" else 1.0
    nodes = []
    inits = [numpy_helper.from_array(weights, "weights")]
    inits += [
        numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("low", 0), ("high", top))
    ]
    first = "image"
    if dtype == "uint8":
        nodes.append(helper.make_node("Cast", ["image"], ["image_f"], to=TensorProto.FLOAT))
        first = "image_f"
    nodes.append(helper.make_node("Conv", [first, "weights"], ["conv"], pads=[1, 1, 1, 1]))
    last = "clipped"
    nodes.append(helper.make_node("Clip", ["conv", "low", "high"], [last]))
    if dtype == "uint8":
        nodes.append(helper.make_node("Round", ["clipped"], ["rounded"]))
        nodes.append(helper.make_node("Cast", ["rounded"], ["filtered"], to=TensorProto.UINT8))
    else:
        nodes.append(helper.make_node("Identity", ["clipped"], ["filtered"]))
    graph = helper.make_graph(
        nodes,
        "conv3x3",
        [helper.make_tensor_value_info("image", elem, [n, 3, h, w])],
        [helper.make_tensor_value_info("filtered", elem, [n, 3, h, w])],
        inits,
    )
    return _serialize(graph)


def resize2x_model(mode: str = "nearest") -> bytes:
    """Doubles height and width of an NCHW float image (`nearest` or `linear`)."""
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    node = helper.make_node("Resize", ["image", "", "scales"], ["upscaled"], mode=mode)
    graph = helper.make_graph(
        [node],
        "resize2x",
        [
            helper.make_tensor_value_info(
                "image", TensorProto.FLOAT, ["batch", 3, "height", "width"]
            )
        ],
        [helper.make_tensor_value_info("upscaled", TensorProto.FLOAT, ["batch", 3, "h2", "w2"])],
        [scales],
    )
    return _serialize(graph)


def write_model(
    folder: Path, name: str, kind: str, model: bytes, **fields: object
) -> ModelManifest:
    """Write `name.onnx` and its pinned `name.toml` manifest into `folder`; return the manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.onnx"
    path.write_bytes(model)
    manifest = manifest_for_onnx(path, kind, name, **fields)
    (folder / f"{name}.toml").write_text(manifest_toml(manifest))
    return manifest


def _serialize(graph: onnx.GraphProto) -> bytes:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # readable by every onnxruntime castnet supports
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())
