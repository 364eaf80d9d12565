"""Loading a fully convolutional model so that it takes height-major images (NHWC) where it was
trained on width-major ones (NWHC), with no transpose of the input.

Convolution and pooling commute with swapping an image's two spatial axes, once each kernel's
(and stride's, dilation's, padding's) two spatial axes are swapped too: feeding the transposed
graph an image gives the transposed maps the original graph gives for the image's transpose. The
rewrite follows every tensor's axes from the input (N, two spatial, C) through transposes and
refuses any node that could mix the spatial axes with each other or with the others (a flatten,
a matrix product, a softmax over a spatial axis): then the answer would not be a transpose.
MTCNN's P-Net, born in Caffe, takes width-major images; its pyramid is made height-major by
FFmpeg, and swapping the axes of every level of every frame cost ~3 ms of a 720p frame's CPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from inference.errors import ModelUnreadable
from inference.folding import node_attribute

N, C, S = "N", "C", "S"  # a tensor axis: batch, channel, or one of the two spatial axes
# ops whose every input is the image or a constant that broadcasts along the spatial axes
ELEMENTWISE = frozenset(
    {"Add", "Cast", "Clip", "LeakyRelu", "Mul", "PRelu", "Relu", "Sigmoid", "Sub", "Tanh"}
)
WINDOWED = frozenset({"Conv", "MaxPool", "AveragePool"})  # take (N, C, spatial, spatial)
SPATIAL_PAIRS = ("kernel_shape", "strides", "dilations")


def height_major(data: bytes, name: str) -> bytes:
    """The ONNX graph `data`, which takes (N, W, H, C) images, rewritten to take (N, H, W, C)
    and to return every map with its spatial axes swapped the same way; `ModelUnreadable`
    when the graph is not fully convolutional."""
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # onnx raises DecodeError and friends for bytes that are no model
        raise ModelUnreadable(f"model {name!r}: not an ONNX model: {exc}") from exc
    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    feeds = [i for i in graph.input if i.name not in weights]
    if len(feeds) != 1 or len(feeds[0].type.tensor_type.shape.dim) != 4:
        raise ModelUnreadable(f"model {name!r}: a height-major load needs one rank-4 input")
    axes: dict[str, tuple[str, ...]] = {feeds[0].name: (N, S, S, C)}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    swapped: set[str] = set()  # kernels already transposed (two convolutions may share one)
    for node in graph.node:
        image = [axes[i] for i in node.input if i in axes]
        if not image:
            continue  # works on constants only
        out = _rewrite(node, image[0], weights, name, opset, swapped)
        for tensor in node.output:
            axes[tensor] = out
    _swap_spatial(feeds[0], (N, S, S, C))
    for output in graph.output:
        if output.name in axes:
            _swap_spatial(output, axes[output.name])
    del graph.value_info[:]  # inferred shapes of the old layout; onnxruntime infers its own
    model.doc_string = f"{model.doc_string} (castnet: takes height-major images)".strip()
    return model.SerializeToString()


def _rewrite(
    node: onnx.NodeProto,
    image: tuple[str, ...],
    weights: dict[str, Any],
    name: str,
    opset: int,
    swapped: set[str],
) -> tuple[str, ...]:
    """Rewrite `node`, whose image input has `image` axes, in place; its output's axes."""
    op = node.op_type
    if op == "Transpose":
        perm = node_attribute(node, "perm") or list(reversed(range(len(image))))
        return tuple(image[p] for p in perm)
    if op in WINDOWED:
        if image != (N, C, S, S):
            raise _mixing(name, node, f"runs over axes {''.join(image)}, not NCHW")
        _swap_window(node)
        if op == "Conv" and node.input[1] not in swapped:
            kernel = numpy_helper.to_array(_constant(node, 1, weights, name))
            weights[node.input[1]].CopyFrom(
                numpy_helper.from_array(np.ascontiguousarray(kernel.swapaxes(2, 3)), node.input[1])
            )
            swapped.add(node.input[1])
        return image
    if op in ELEMENTWISE:
        for other in node.input[1:]:
            if other and other not in weights:
                raise _mixing(name, node, f"takes a second non-constant input {other!r}")
            if other:
                _broadcasts(numpy_helper.to_array(weights[other]), image, node, name)
        return image
    if op in ("Softmax", "LogSoftmax"):
        axis = node_attribute(node, "axis")
        axis = (1 if opset < 13 else -1) if axis is None else int(axis)  # the default changed
        if image[axis] != C:
            raise _mixing(name, node, "normalizes over a spatial axis")
        return image
    raise _mixing(name, node, "is not a convolution, pooling, transpose or elementwise op")


def _swap_window(node: onnx.NodeProto) -> None:
    """Swap the two spatial entries of a window's kernel, strides, dilations and pads."""
    for attribute in node.attribute:
        if attribute.name in SPATIAL_PAIRS and len(attribute.ints) == 2:
            attribute.ints[:] = [attribute.ints[1], attribute.ints[0]]
        elif attribute.name == "pads" and len(attribute.ints) == 4:
            top, left, bottom, right = attribute.ints
            attribute.ints[:] = [left, top, right, bottom]


def _broadcasts(value: np.ndarray, image: tuple[str, ...], node: onnx.NodeProto, name: str) -> None:
    """Refuse a constant that varies along a spatial axis of the image it is applied to."""
    aligned = image[len(image) - value.ndim :] if value.ndim <= len(image) else ()
    if value.ndim > len(image) or any(
        role == S and size != 1 for role, size in zip(aligned, value.shape, strict=True)
    ):
        raise _mixing(name, node, f"applies a constant shaped {list(value.shape)} per position")


def _constant(node: onnx.NodeProto, index: int, weights: dict[str, Any], name: str) -> Any:
    if len(node.input) <= index or node.input[index] not in weights:
        raise _mixing(name, node, "has weights that are not constant")
    return weights[node.input[index]]


def _swap_spatial(value: onnx.ValueInfoProto, axes: tuple[str, ...]) -> None:
    """Swap the declared sizes of `value`'s two spatial axes."""
    dims = value.type.tensor_type.shape.dim
    first, second = (i for i, role in enumerate(axes) if role == S)
    if len(dims) == len(axes):
        a, b = onnx.TensorShapeProto.Dimension(), onnx.TensorShapeProto.Dimension()
        a.CopyFrom(dims[second])
        b.CopyFrom(dims[first])
        dims[first].CopyFrom(a)
        dims[second].CopyFrom(b)


def _mixing(name: str, node: onnx.NodeProto, why: str) -> ModelUnreadable:
    return ModelUnreadable(
        f"model {name!r}: cannot load it height-major: {node.op_type} {node.name!r} {why}"
    )
