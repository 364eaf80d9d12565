"""Still pictures and frame resizing for the video effects: a style picture or a background image
read with PyAV, and batches of frames scaled with swscale or with vectorised numpy."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from inference.errors import InvalidOptions


def read_still(path: str | Path, what: str) -> av.VideoFrame:
    """The first picture of an image (or video) file as an RGB frame; InvalidOptions if none."""
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                return frame.reformat(format="rgb24")
    except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
        raise InvalidOptions(f"{what} {path} is not a readable picture: {exc}") from exc
    raise InvalidOptions(f"{what} {path} holds no picture")


def cover(picture: av.VideoFrame, width: int, height: int) -> np.ndarray:
    """(height, width, 3) uint8: the picture scaled to cover the size, centred and cropped."""
    scale = max(width / picture.width, height / picture.height)
    sw = max(width, round(picture.width * scale))
    sh = max(height, round(picture.height * scale))
    image = VideoReformatter().reformat(picture, sw, sh, "rgb24", interpolation="BICUBIC")
    left, top = (sw - width) // 2, (sh - height) // 2
    return np.ascontiguousarray(image.to_ndarray()[top : top + height, left : left + width])


def rgb_frames(
    scaler: VideoReformatter, pictures: list[av.VideoFrame], width: int, height: int
) -> np.ndarray:
    """(N, height, width, 3) uint8 RGB of decoded pictures, scaled by swscale where needed."""
    return np.stack(
        [
            scaler.reformat(p, width, height, "rgb24", interpolation="BILINEAR").to_ndarray()
            for p in pictures
        ]
    )


def pad_to(batch: np.ndarray, multiple: int, axes: tuple[int, int]) -> np.ndarray:
    """Reflect-pad the two spatial `axes` up to multiples of `multiple` (contiguous result)."""
    pads = [(0, 0)] * batch.ndim
    for axis in axes:
        pads[axis] = (0, -batch.shape[axis] % multiple)
    if all(p == (0, 0) for p in pads):
        return np.ascontiguousarray(batch)
    return np.pad(batch, pads, mode="reflect")


def resize_bilinear(maps: np.ndarray, width: int, height: int) -> np.ndarray:
    """(N, h, w) float maps resized to (N, height, width) by bilinear interpolation, pixel centres
    aligned as swscale and OpenCV align them."""
    _, h, w = maps.shape
    if (h, w) == (height, width):
        return maps
    y0, y1, wy = _axis(h, height)
    x0, x1, wx = _axis(w, width)
    top = maps[:, y0] * (1 - wy)[None, :, None] + maps[:, y1] * wy[None, :, None]
    return top[:, :, x0] * (1 - wx) + top[:, :, x1] * wx


def _axis(size: int, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    centres = np.clip((np.arange(target, dtype=np.float32) + 0.5) * (size / target) - 0.5, 0, None)
    low = np.minimum(centres.astype(np.int64), size - 1)
    high = np.minimum(low + 1, size - 1)
    return low, high, (centres - low).astype(np.float32)
