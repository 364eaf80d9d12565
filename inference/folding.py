"""Loading a model so that it takes pixels: its input normalization folded into its first
convolution, so the pipeline feeds frames as they come (uint8, or float pixel values) instead of
normalizing every pixel in numpy.

A convolution without padding is linear in its input: with `x = p * a + b` per channel,
`conv(x, W) + c == conv(p, W * a) + (c + sum(W * b))` exactly, so the weights absorb the
normalization. With padding the border would read 0 where the model expects a normalized 0, so
only graphs whose first convolution pads nothing are folded. A uint8 input is cast to float inside
the graph after any leading transpose (which moves a quarter of the bytes it would as float).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from inference.errors import ModelUnreadable
from inference.manifest import Normalization

PIXEL_TYPES = {"uint8": TensorProto.UINT8, "float32": TensorProto.FLOAT}
# ops allowed between the input and the first convolution: they move values, never combine them
PASS_THROUGH = ("Transpose",)


def fold_pixels(data: bytes, normalization: Normalization, dtype: str, name: str) -> bytes:
    """The ONNX graph `data`, rewritten to take pixel values of `dtype` in place of tensors
    normalized as `normalization` says; `ModelUnreadable` when its first layer cannot absorb it."""
    if dtype not in PIXEL_TYPES:
        raise ModelUnreadable(f"model {name!r}: pixels must be one of {sorted(PIXEL_TYPES)}")
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # onnx raises DecodeError and friends for bytes that are no model
        raise ModelUnreadable(f"model {name!r}: not an ONNX model: {exc}") from exc
    graph = model.graph
    feeds = [i for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    if len(feeds) != 1:
        raise ModelUnreadable(f"model {name!r}: folding pixels needs one input, not {len(feeds)}")
    conv = _first_conv(graph, feeds[0].name, name)
    weights = {t.name: t for t in graph.initializer}
    if len(conv.input) < 2 or conv.input[1] not in weights:
        raise ModelUnreadable(f"model {name!r}: the first convolution's weights are not constant")
    kernel = numpy_helper.to_array(weights[conv.input[1]]).astype(np.float64)
    if kernel.ndim != 4 or kernel.shape[1] != 3:
        raise ModelUnreadable(
            f"model {name!r}: the first convolution takes {kernel.shape[1:2]} channels, not 3"
        )
    scale = np.float64(normalization.scale) / np.asarray(normalization.std, np.float64)
    shift = -np.asarray(normalization.mean, np.float64) / np.asarray(normalization.std, np.float64)
    bias_name = conv.input[2] if len(conv.input) > 2 and conv.input[2] else ""
    bias = (
        numpy_helper.to_array(weights[bias_name]).astype(np.float64)
        if bias_name
        else np.zeros(kernel.shape[0])
    )
    folded_kernel = (kernel * scale[None, :, None, None]).astype(np.float32)
    folded_bias = (bias + (kernel * shift[None, :, None, None]).sum(axis=(1, 2, 3))).astype(
        np.float32
    )
    weights[conv.input[1]].CopyFrom(numpy_helper.from_array(folded_kernel, conv.input[1]))
    if bias_name:
        weights[bias_name].CopyFrom(numpy_helper.from_array(folded_bias, bias_name))
    else:
        bias_name = f"{conv.name}_bias"
        graph.initializer.append(numpy_helper.from_array(folded_bias, bias_name))
        conv.input.append(bias_name)
    feeds[0].type.tensor_type.elem_type = PIXEL_TYPES[dtype]
    if dtype == "uint8":
        # cast right before the convolution: a leading transpose moves bytes, not floats
        source = conv.input[0]
        cast = helper.make_node("Cast", [source], [f"{source}_as_float"], to=TensorProto.FLOAT)
        conv.input[0] = cast.output[0]
        graph.node.insert(list(graph.node).index(conv), cast)
    model.doc_string = f"{model.doc_string} (castnet: takes {dtype} pixels)".strip()
    return model.SerializeToString()


def _first_conv(graph: onnx.GraphProto, start: str, name: str) -> onnx.NodeProto:
    """The convolution that reads `start` through pass-through nodes only; refused unless each
    tensor on the way has exactly one reader and the convolution pads nothing."""
    tensor = start
    for _ in range(len(graph.node)):
        readers = [n for n in graph.node if tensor in n.input]
        if len(readers) != 1:
            raise ModelUnreadable(
                f"model {name!r}: input tensor {tensor!r} has {len(readers)} readers; pixels can"
                " be folded only into a single first convolution"
            )
        node = readers[0]
        if node.op_type == "Conv":
            if any(v != 0 for v in _ints(node, "pads")) or _auto_pad(node) not in ("", "VALID"):
                raise ModelUnreadable(
                    f"model {name!r}: the first convolution pads its input; the border would"
                    " change if the normalization were folded into it"
                )
            if _ints(node, "group") not in ([], [1]):
                raise ModelUnreadable(f"model {name!r}: the first convolution is grouped")
            return node
        if node.op_type not in PASS_THROUGH:
            raise ModelUnreadable(
                f"model {name!r}: a {node.op_type} comes before the first convolution; pixels"
                " can be folded only through a transpose"
            )
        tensor = node.output[0]
    raise ModelUnreadable(f"model {name!r}: no convolution reads the input")


def node_attribute(node: onnx.NodeProto, name: str) -> Any:
    """The value of `node`'s attribute `name`, or None when it has none."""
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), None)


def _ints(node: onnx.NodeProto, attribute: str) -> list[int]:
    value = node_attribute(node, attribute)
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [int(value)]


def _auto_pad(node: onnx.NodeProto) -> str:
    value = node_attribute(node, "auto_pad")
    text = value.decode() if isinstance(value, bytes) else str(value or "")
    return "" if text == "NOTSET" else text
