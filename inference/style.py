"""Style transfer on frames: the 26-style network (named styles and blends of them) and the
arbitrary-style pair (any picture as the style).

The 26 styles come without names (the package numbers them 0-25); `STYLE_NAMES` are castnet's own
labels for them, in the network's order, chosen from how each looks. Both networks take RGB in 0..1
and give RGB in 0..1. The 26-style one takes any size whose sides are multiples of 4 (we
reflect-pad and crop); the arbitrary one a fixed 384x384 canvas, into which the frame is fitted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from inference.errors import InvalidOptions, ShapeMismatch
from inference.manifest import STYLE_NAMES
from inference.sessions import LoadedModel, ModelRunner
from inference.stills import cover, pad_to, read_still, rgb_frames

STYLE_COUNT = len(STYLE_NAMES)
PREDICT_SIDE = 256  # the arbitrary-style predictor's square input
MIN_SIDE = 32  # the 26-style network's own reflect pads fail below this: tiny frames infer larger
Step = Callable[[Any], Any]


def style_vector(weights: Mapping[str, float]) -> np.ndarray:
    """The network's (26,) float32 input from {style name: weight}; weights are normalised."""
    vector = np.zeros(STYLE_COUNT, np.float32)
    for name, weight in weights.items():
        vector[STYLE_NAMES.index(name)] += weight
    return vector / vector.sum()


class _Frames:
    """Shared by both networks: the working size, and the way back to the output size."""

    def __init__(self, width: int, height: int, work: tuple[int, int]) -> None:
        self.width, self.height = width, height
        self.work_width, self.work_height = work
        self._in = VideoReformatter()  # prepare thread
        self._out = VideoReformatter()  # post thread

    def _to_frames(self, images: np.ndarray) -> list[av.VideoFrame]:
        """(N, h, w, 3) float RGB in 0..1 -> frames of the output size, ready to encode."""
        pixels = (np.clip(images, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        frames = []
        for image in pixels:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frames.append(
                self._out.reformat(
                    frame, self.width, self.height, "yuv420p", interpolation="BICUBIC"
                )
            )
        return frames


class StyleNet(_Frames):
    """The 26-style network on batches of frames, at the working size, with fixed weights."""

    def __init__(
        self,
        model: LoadedModel,
        width: int,
        height: int,
        weights: Mapping[str, float],
        work: tuple[int, int] | None = None,
    ) -> None:
        wanted_w, wanted_h = work or (width, height)
        super().__init__(width, height, (max(wanted_w, MIN_SIDE), max(wanted_h, MIN_SIDE)))
        self.name = model.manifest.name
        self.multiple = model.manifest.multiple
        self.net = model.runner()
        _expect_inputs(self.net, 2, "an image and style weights")
        self.image_input, self.weights_input = self.net.input_names
        if self.net.input_shapes[1] not in ([STYLE_COUNT], ["style_weights"]):
            raise ShapeMismatch(
                f"model {self.name!r} takes style weights shaped {self.net.input_shapes[1]},"
                f" not [{STYLE_COUNT}]"
            )
        self.weights = style_vector(weights)

    def steps(self) -> list[tuple[str, Step]]:
        return [("infer", self.infer), ("post", self.to_frames)]

    def prepare(self, pictures: list[av.VideoFrame]) -> np.ndarray:
        """(N, 3, h', w') float32 in 0..1, sides padded to the network's multiple."""
        rgb = rgb_frames(self._in, pictures, self.work_width, self.work_height)
        tensor = rgb.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(1 / 255)
        return pad_to(tensor, self.multiple, (2, 3))

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        # the exported graph fixes the batch at 1
        outputs = [
            self.net.run_feeds(
                {self.image_input: tensor[i : i + 1], self.weights_input: self.weights}
            )[0]
            for i in range(len(tensor))
        ]
        return np.concatenate(outputs)

    def to_frames(self, output: np.ndarray) -> list[av.VideoFrame]:
        cropped = output[:, :, : self.work_height, : self.work_width]
        return self._to_frames(cropped.transpose(0, 2, 3, 1))


class ArbitraryStyle(_Frames):
    """Any picture as the style: its style vector is predicted once, then each frame is fitted
    into the transform network's fixed canvas, stylized, and scaled back."""

    def __init__(
        self,
        model: LoadedModel,
        width: int,
        height: int,
        style_image: str,
        work: tuple[int, int] | None = None,
    ) -> None:
        canvas = model.manifest.size or (384, 384)
        self.canvas_height, self.canvas_width = canvas
        wanted_w, wanted_h = work or (width, height)
        # fit the working size into the canvas: larger inputs shrink, smaller ones keep their size
        scale = min(self.canvas_width / wanted_w, self.canvas_height / wanted_h)
        if work is not None:
            scale = min(scale, 1.0)
        fitted = (max(1, round(wanted_w * scale)), max(1, round(wanted_h * scale)))
        super().__init__(width, height, fitted)
        self.name = model.manifest.name
        self.predictor, self.net = model.runner("predict"), model.runner("transform")
        _expect_inputs(self.predictor, 1, "a style picture")
        _expect_inputs(self.net, 2, "an image and a style vector")
        self.content_input, self.vector_input = self.net.input_names
        self.vector = self.style_of(read_still(style_image, "style_image"))

    def style_of(self, picture: av.VideoFrame) -> np.ndarray:
        """The style vector of a picture: its centred square, scaled to the predictor's input."""
        square = cover(picture, PREDICT_SIDE, PREDICT_SIDE)
        tensor = square[None].astype(np.float32) * np.float32(1 / 255)
        return self.predictor.run(tensor)[0]

    def steps(self) -> list[tuple[str, Step]]:
        return [("infer", self.infer), ("post", self.to_frames)]

    def prepare(self, pictures: list[av.VideoFrame]) -> np.ndarray:
        """(N, 384, 384, 3) float32 in 0..1: the frame at the fitted size, reflect-padded."""
        rgb = rgb_frames(self._in, pictures, self.work_width, self.work_height)
        tensor = rgb.astype(np.float32) * np.float32(1 / 255)
        pads = (
            (0, 0),
            (0, self.canvas_height - self.work_height),
            (0, self.canvas_width - self.work_width),
            (0, 0),
        )
        return np.pad(tensor, pads, mode="reflect")

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        outputs = [
            self.net.run_feeds(
                {self.content_input: tensor[i : i + 1], self.vector_input: self.vector}
            )[0]
            for i in range(len(tensor))
        ]
        return np.concatenate(outputs)

    def to_frames(self, output: np.ndarray) -> list[av.VideoFrame]:
        return self._to_frames(output[:, : self.work_height, : self.work_width])


def style_effect(
    model: LoadedModel,
    width: int,
    height: int,
    options: Mapping[str, Any],
    work: tuple[int, int] | None,
) -> StyleNet | ArbitraryStyle:
    """The style network a model and its parsed options call for."""
    arbitrary = {"predict", "transform"} <= set(model.runners)
    image = options.get("style_image")
    if arbitrary:
        if image is None:
            raise InvalidOptions(
                f"model {model.manifest.name!r} styles after a picture: give style_image"
            )
        return ArbitraryStyle(model, width, height, image, work)
    if image is not None:
        raise InvalidOptions(
            f"model {model.manifest.name!r} has named styles only; style_image needs the"
            " arbitrary-style model"
        )
    weights = (
        dict(options["blend"])
        if "blend" in options
        else {options.get("style", STYLE_NAMES[0]): 1.0}
    )
    return StyleNet(model, width, height, weights, work)


def _expect_inputs(runner: ModelRunner, count: int, what: str) -> None:
    if len(runner.input_names) != count:
        raise ShapeMismatch(
            f"model {runner.model!r} has {len(runner.input_names)} inputs; style transfer feeds"
            f" it {what}"
        )
