"""Background removal and replacement on frames with a portrait-matting model (MODNet).

The model takes RGB normalised to -1..1, sides multiples of 32 (we reflect-pad and crop), and
gives an alpha matte in 0..1 (1: person). The matte is scaled to the frame's size and the frame is
composited over a colour, a blurred copy of itself, or a picture: out = bg + alpha * (fg - bg).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from inference.errors import ShapeMismatch
from inference.sessions import LoadedModel
from inference.stills import cover, pad_to, read_still, resize_bilinear, rgb_frames

BLUR = "blur"
BLUR_FACTOR = 16  # the blurred background is the frame scaled down this much and back up
# Without `infer_size`, the short side is brought into this range: MODNet was trained on portraits
# at 512; on carphone at 160-190 px it lost parts of the face on some frames, at >= 208 px none.
SHORT_SIDE = (256, 512)
LONG_SIDE = 1024  # ... unless that makes the long side longer than this (thin frames)
Step = Callable[[Any], Any]


class Matte:
    """A matting model on batches of frames, compositing each over a chosen background."""

    def __init__(
        self,
        model: LoadedModel,
        width: int,
        height: int,
        background: str,
        work: tuple[int, int] | None = None,
    ) -> None:
        self.name = model.manifest.name
        self.width, self.height = width, height
        self.work_width, self.work_height = work or (width, height)
        self.multiple = model.manifest.multiple
        norm = model.manifest.normalization
        std = np.asarray(norm.std, np.float32)
        self._scale: np.ndarray = (np.float32(norm.scale) / std).astype(np.float32)
        self._shift: np.ndarray = (-np.asarray(norm.mean, np.float32) / std).astype(np.float32)
        self.net = model.runner()
        if len(self.net.input_names) != 1 or len(self.net.input_shape) != 4:
            raise ShapeMismatch(
                f"model {self.name!r} takes {self.net.input_shapes}; matting feeds one"
                " [N,3,H,W] image"
            )
        self.net.check_feed((1, 3, *self._padded()))
        self._colour: np.ndarray | None = None
        self._picture: np.ndarray | None = None
        self.blur = background == BLUR
        if background.startswith("#"):
            rgb = [int(background[i : i + 2], 16) for i in (1, 3, 5)]
            self._colour = np.asarray(rgb, np.float32)
        elif not self.blur:
            still = read_still(background, "background")
            self._picture = cover(still, width, height).astype(np.float32)
        self._in = VideoReformatter()  # prepare thread
        self._small = VideoReformatter()  # post thread (blur)

    def _padded(self) -> tuple[int, int]:
        m = self.multiple
        return -(-self.work_height // m) * m, -(-self.work_width // m) * m

    def steps(self) -> list[tuple[str, Step]]:
        return [("infer", self.infer), ("post", self.to_frames)]

    def prepare(self, pictures: list[av.VideoFrame]) -> tuple[np.ndarray, np.ndarray]:
        """The frames at full size (N, H, W, 3) uint8 and the model's padded input tensor."""
        full = rgb_frames(self._in, pictures, self.width, self.height)
        same = (self.work_width, self.work_height) == (self.width, self.height)
        small = full if same else rgb_frames(self._in, pictures, self.work_width, self.work_height)
        tensor = small.transpose(0, 3, 1, 2).astype(np.float32)
        tensor *= self._scale[None, :, None, None]
        tensor += self._shift[None, :, None, None]
        return full, pad_to(tensor, self.multiple, (2, 3))

    def infer(self, prepared: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        full, tensor = prepared
        return full, self.net.run(tensor)[0]

    def alphas(self, output: np.ndarray) -> np.ndarray:
        """(N, H, W) float32 alpha in 0..1 at the frame's size, from the model's raw output."""
        raw = output[:, 0, : self.work_height, : self.work_width].astype(np.float32)
        return np.clip(resize_bilinear(raw, self.width, self.height), 0.0, 1.0)

    def composite(self, full: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8: each frame over the background, weighted by its alpha."""
        fg = full.astype(np.float32)
        bg = self._backgrounds(full)
        out = bg + (fg - bg) * alpha[..., None]
        return (out + 0.5).astype(np.uint8)

    def to_frames(self, inferred: tuple[np.ndarray, np.ndarray]) -> list[av.VideoFrame]:
        full, output = inferred
        images = self.composite(full, self.alphas(output))
        return [av.VideoFrame.from_ndarray(image, format="rgb24") for image in images]

    def _backgrounds(self, full: np.ndarray) -> np.ndarray:
        if self._colour is not None:
            return self._colour
        if self._picture is not None:
            return self._picture
        small_w = max(1, self.width // BLUR_FACTOR)
        small_h = max(1, self.height // BLUR_FACTOR)
        blurred = []
        for image in full:
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            tiny = self._small.reformat(frame, small_w, small_h, "rgb24", interpolation="AREA")
            back = self._small.reformat(
                tiny, self.width, self.height, "rgb24", interpolation="BILINEAR"
            )
            blurred.append(back.to_ndarray())
        return np.stack(blurred).astype(np.float32)


def default_work_size(width: int, height: int) -> tuple[int, int]:
    """The working size without `infer_size`: the input's, its short side clamped to SHORT_SIDE
    and its long side kept within LONG_SIDE when scaling up."""
    short, long = min(width, height), max(width, height)
    target = min(max(short, SHORT_SIDE[0]), SHORT_SIDE[1])
    scale = target / short
    if scale > 1:
        scale = max(1.0, min(scale, LONG_SIDE / long))
    if scale == 1:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def matte_effect(
    model: LoadedModel,
    width: int,
    height: int,
    options: Mapping[str, Any],
    work: tuple[int, int] | None,
) -> Matte:
    background = str(options.get("background", "#00ff00"))
    return Matte(model, width, height, background, work or default_work_size(width, height))
