"""Frames to model tensors and back, as a manifest says: channel order, normalization, layout."""

from __future__ import annotations

import numpy as np

from inference.errors import ShapeMismatch
from inference.manifest import ModelManifest
from inference.sessions import ModelRunner

# axes that take a batch of HWC images to each layout, and back
_TO_LAYOUT = {"NCHW": (0, 3, 1, 2), "NHWC": (0, 1, 2, 3), "NWHC": (0, 2, 1, 3)}
_FROM_LAYOUT = {"NCHW": (0, 2, 3, 1), "NHWC": (0, 1, 2, 3), "NWHC": (0, 2, 1, 3)}


def to_tensor(images: np.ndarray | list[np.ndarray], manifest: ModelManifest) -> np.ndarray:
    """(N, H, W, 3) uint8 images (an array, or a list of (H, W, 3) images of one size), in the
    manifest's channel order, to the model's input tensor."""
    norm = manifest.normalization
    if isinstance(images, list):
        images = _laid_out(images, manifest.layout)
    laid_out = images.transpose(_TO_LAYOUT[manifest.layout])  # a view: the copy below does it
    if manifest.dtype == "uint8":
        return np.ascontiguousarray(laid_out)
    # (p * scale - mean) / std == p * a + b, computed over a float32 copy
    a = np.float32(norm.scale) / np.asarray(norm.std, np.float32)
    b = -np.asarray(norm.mean, np.float32) / np.asarray(norm.std, np.float32)
    tensor = np.empty(laid_out.shape, np.float32)
    if manifest.layout.index("C") == 3:
        # channels last: a broadcast over a 3-long axis makes numpy loop 3 elements at a time
        # (~6x slower); lay the pixels out first (a byte copy), then treat each row of pixels
        # as one long vector against the per-channel factors tiled along it
        pixels = np.ascontiguousarray(laid_out)
        rows = pixels.reshape(-1, pixels.shape[2] * 3)
        out = tensor.reshape(rows.shape)
        np.multiply(rows, np.tile(a, pixels.shape[2]), out=out, dtype=np.float32)
        np.add(out, np.tile(b, pixels.shape[2]), out=out)
        return tensor
    shape = [1, 1, 1, 1]
    shape[manifest.layout.index("C")] = 3
    np.multiply(laid_out, a.reshape(shape), out=tensor)
    np.add(tensor, b.reshape(shape), out=tensor)
    return tensor


def to_pixels(images: np.ndarray, layout: str, dtype: str) -> np.ndarray:
    """(N, H, W, 3) images in `layout` as `dtype` pixel values, for a graph that folds the
    normalization in (`inference.folding`): no copy when `images` is a view of memory already
    in that layout and of that type."""
    return np.ascontiguousarray(images.transpose(_TO_LAYOUT[layout]), dtype=dtype)


def _laid_out(images: list[np.ndarray], layout: str) -> np.ndarray:
    """A list of images as an (N, H, W, 3) array whose memory is already in `layout`'s order
    (one copy, instead of a stack and then a transposing copy)."""
    axes = _TO_LAYOUT[layout]
    first = images[0].transpose([a - 1 for a in axes[1:]])
    batch = np.empty((len(images), *first.shape), images[0].dtype)
    for n, image in enumerate(images):
        batch[n] = image.transpose([a - 1 for a in axes[1:]])
    return batch.transpose(_FROM_LAYOUT[layout])  # a view back in (N, H, W, 3) terms


def from_tensor(tensor: np.ndarray, manifest: ModelManifest) -> np.ndarray:
    """A model's image output back to (N, H, W, 3) uint8, undoing the input normalization."""
    if tensor.ndim != 4:
        raise ShapeMismatch(f"model {manifest.name!r} output has rank {tensor.ndim}, not 4")
    channel_axis = manifest.layout.index("C")
    if tensor.shape[channel_axis] != 3:
        raise ShapeMismatch(
            f"model {manifest.name!r} outputs {tensor.shape[channel_axis]} channels, not 3"
            f" (layout {manifest.layout})"
        )
    if tensor.dtype != np.uint8:
        # undo the normalization in the model's own layout, then transpose the 4x smaller bytes
        norm = manifest.normalization
        shape = [1, 1, 1, 1]
        shape[channel_axis] = 3
        a = (np.asarray(norm.std, np.float32) / np.float32(norm.scale)).reshape(shape)
        b = (np.asarray(norm.mean, np.float32) / np.float32(norm.scale)).reshape(shape)
        pixels = np.multiply(tensor, a, dtype=np.float32)
        pixels += b
        np.clip(pixels, 0, 255, out=pixels)
        np.rint(pixels, out=pixels)
        tensor = pixels.astype(np.uint8)
    return np.ascontiguousarray(tensor.transpose(_FROM_LAYOUT[manifest.layout]))


def run_batch(runner: ModelRunner, tensor: np.ndarray) -> list[np.ndarray]:
    """Run a batch; a model with a fixed batch size gets the last item repeated, then trimmed."""
    count = tensor.shape[0]
    fixed = runner.fixed_dim(0)
    if fixed is not None and count < fixed:
        pad = np.repeat(tensor[-1:], fixed - count, axis=0)
        return [out[:count] for out in runner.run(np.concatenate([tensor, pad]))]
    if fixed is not None and count > fixed:
        parts = [run_batch(runner, tensor[i : i + fixed]) for i in range(0, count, fixed)]
        return [np.concatenate(outs) for outs in zip(*parts, strict=True)]
    return runner.run(tensor)
