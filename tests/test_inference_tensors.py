"""Model input tensors: every layout holds (pixel * scale - mean) / std per channel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inference.manifest import ModelFile, ModelManifest, Normalization
from inference.tensors import to_tensor

NORM = Normalization(scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
AXES = {"NCHW": (0, 3, 1, 2), "NHWC": (0, 1, 2, 3), "NWHC": (0, 2, 1, 3)}


@pytest.mark.parametrize("as_list", [False, True])
@pytest.mark.parametrize("layout", sorted(AXES))
def test_every_layout_normalises_each_channel_by_its_own_factors(
    layout: str, as_list: bool
) -> None:
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (3, 9, 13, 3), dtype=np.uint8)
    manifest = ModelManifest(
        "t", "filter", (ModelFile("main", Path("x"), "0"),), "", layout=layout, normalization=NORM
    )
    tensor = to_tensor(list(images) if as_list else images, manifest)
    expected = (images * NORM.scale - np.asarray(NORM.mean)) / np.asarray(NORM.std)
    assert tensor.dtype == np.float32 and tensor.flags.c_contiguous
    assert tensor.shape == expected.transpose(AXES[layout]).shape
    np.testing.assert_allclose(tensor, expected.transpose(AXES[layout]), atol=1e-5)
    if as_list:  # a list of images gives exactly what their stacked array gives
        assert np.array_equal(tensor, to_tensor(images, manifest))
