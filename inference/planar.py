"""Planar (NCHW) frames without transposes: swscale converts decoded YUV straight to planar RGB
(`gbrp`), whose three planes are the model's three input channels, and back.

Packed RGB would need an HWC <-> CHW transpose on both sides of the model, a strided copy that
costs more than a small model itself at 720p.
"""

from __future__ import annotations

import av
import numpy as np

from inference.errors import ShapeMismatch
from inference.manifest import ModelManifest

PLANAR = "gbrp"  # FFmpeg's planar RGB: plane 0 is G, 1 is B, 2 is R
_PLANES = {"RGB": (2, 0, 1), "BGR": (1, 0, 2)}  # gbrp plane index of channel 0, 1, 2


def channels(frame: av.VideoFrame, order: str) -> list[np.ndarray]:
    """The three (H, W) uint8 planes of a `gbrp` frame in channel `order`, as views (no copy)."""
    return [_plane(frame, index) for index in _PLANES[order]]


def _plane(frame: av.VideoFrame, index: int) -> np.ndarray:
    """Plane `index` of a planar 8-bit frame as an (H, W) view that skips the rows' padding."""
    plane = frame.planes[index]
    rows = np.frombuffer(memoryview(plane), np.uint8)[: plane.line_size * frame.height]
    return rows.reshape(frame.height, plane.line_size)[:, : frame.width]


def planar_tensor(frames: list[av.VideoFrame], manifest: ModelManifest) -> np.ndarray:
    """(N, 3, H, W) model input from `gbrp` frames, normalized as the manifest says, one pass."""
    norm, first = manifest.normalization, frames[0]
    dtype = np.uint8 if manifest.dtype == "uint8" else np.float32
    tensor = np.empty((len(frames), 3, first.height, first.width), dtype)
    a = np.float32(norm.scale) / np.asarray(norm.std, np.float32)
    b = -np.asarray(norm.mean, np.float32) / np.asarray(norm.std, np.float32)
    for n, frame in enumerate(frames):
        for c, plane in enumerate(channels(frame, norm.channels)):
            if dtype is np.uint8:
                tensor[n, c] = plane
            else:
                np.multiply(plane, a[c], out=tensor[n, c])
                if b[c] != 0:
                    tensor[n, c] += b[c]
    return tensor


def planar_pixels(
    tensor: np.ndarray, manifest: ModelManifest, scratch: Scratch | None = None
) -> np.ndarray:
    """A model's (N, 3, H, W) image output as uint8, the input normalization undone, rounded.

    With `scratch`, the work buffers are reused from call to call (the result too: use it before
    the next call); fresh 40 MB buffers per 720p batch cost page faults on every batch."""
    if tensor.ndim != 4 or tensor.shape[1] != 3:
        raise ShapeMismatch(
            f"model {manifest.name!r} output is shaped {list(tensor.shape)}, not (N, 3, H, W)"
        )
    if tensor.dtype == np.uint8:
        return tensor
    norm = manifest.normalization
    a = (np.asarray(norm.std, np.float32) / np.float32(norm.scale)).reshape(1, 3, 1, 1)
    b = (np.asarray(norm.mean, np.float32) / np.float32(norm.scale)).reshape(1, 3, 1, 1)
    scratch = scratch or Scratch()
    pixels = scratch.get("work", tensor.shape, np.float32)
    np.multiply(tensor, a, out=pixels, dtype=np.float32)
    np.add(pixels, b + np.float32(0.5), out=pixels)  # + 0.5, then truncation: rounds half up
    out = scratch.get("pixels", tensor.shape, np.uint8)
    np.clip(pixels, 0, 255, out=out, casting="unsafe")
    return out


class Scratch:
    """Named work buffers, reallocated only when a larger or differently shaped one is needed.
    Not thread-safe: one per pipeline stage."""

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: type[np.generic]) -> np.ndarray:
        buffer = self._buffers.get(name)
        if buffer is None or buffer.shape[1:] != shape[1:] or len(buffer) < shape[0]:
            buffer = self._buffers[name] = np.empty(shape, dtype)
        return buffer[: shape[0]]


def planar_frame(image: np.ndarray, order: str) -> av.VideoFrame:
    """A `gbrp` frame from one (3, H, W) uint8 image whose channels are in `order`."""
    _, height, width = image.shape
    frame = av.VideoFrame(width, height, PLANAR)
    for channel, index in enumerate(_PLANES[order]):
        _plane(frame, index)[:] = image[channel]
    return frame
