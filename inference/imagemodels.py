"""Image-to-image models on frames: `filter` (same size out) and `upscale` (twice the size out)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from inference.errors import ShapeMismatch
from inference.planar import PLANAR, Scratch, planar_frame, planar_pixels, planar_tensor
from inference.sessions import LoadedModel
from inference.tensors import from_tensor, run_batch, to_tensor


class ImageModel:
    """Applies an NCHW/NHWC, float or uint8 image model to batches of frames of one size."""

    def __init__(self, model: LoadedModel, width: int, height: int, factor: int) -> None:
        self.manifest, self.factor = model.manifest, factor
        self.width, self.height = width, height
        self.net = model.runner()
        fixed = self.manifest.size
        if fixed is not None and fixed != (height, width):
            raise ShapeMismatch(
                f"model {self.manifest.name!r} takes {fixed[1]}x{fixed[0]} frames, the input is"
                f" {width}x{height}"
            )
        expected_type = "tensor(uint8)" if self.manifest.dtype == "uint8" else "tensor(float)"
        if self.net.input_type != expected_type:
            raise ShapeMismatch(
                f"model {self.manifest.name!r} input is {self.net.input_type}, its manifest"
                f" says {self.manifest.dtype}"
            )
        layout = self.manifest.layout.replace("N", "")
        dims = {"C": 3, "H": height, "W": width}
        self.net.check_feed((1, *(dims[axis] for axis in layout)))
        self.order = self.manifest.normalization.channels
        self.pixel_format = "bgr24" if self.order == "BGR" else "rgb24"
        # NCHW models take and give planar RGB straight from and to swscale: no transposes
        self.planar = self.manifest.layout == "NCHW"
        self._scaler = VideoReformatter()
        self._scratch = Scratch()  # used by `to_frames`, which runs in one thread

    @property
    def output_size(self) -> tuple[int, int]:
        """(width, height) of the frames this model makes."""
        return self.width * self.factor, self.height * self.factor

    def prepare(self, pictures: list[av.VideoFrame]) -> np.ndarray:
        # swscale on one thread (its default is one per core): the model's threads keep the cores
        if self.planar:
            frames = [self._scaler.reformat(p, format=PLANAR, threads=1) for p in pictures]
            return planar_tensor(frames, self.manifest)
        images = [
            self._scaler.reformat(p, format=self.pixel_format, threads=1).to_ndarray()
            for p in pictures
        ]
        return to_tensor(np.stack(images), self.manifest)

    def apply(self, tensor: np.ndarray) -> np.ndarray:
        """(N, H', W', 3) uint8 output images, checked to be the size this pipeline promises."""
        images = from_tensor(run_batch(self.net, tensor)[0], self.manifest)
        self._check_size(images.shape[2], images.shape[1])
        return images

    def apply_frames(self, tensor: np.ndarray) -> list[av.VideoFrame]:
        """The model's output as frames ready to encode (planar RGB for NCHW models)."""
        return self.to_frames(self.infer(tensor))

    def steps(self) -> list[tuple[str, Callable[[Any], Any]]]:
        """Inference and conversion to frames, as steps a pipeline can run in separate threads."""
        return [("infer", self.infer), ("post", self.to_frames)]

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """The model's raw output batch."""
        return run_batch(self.net, tensor)[0]

    def to_frames(self, output: np.ndarray) -> list[av.VideoFrame]:
        """A raw output batch as frames ready to encode; one thread only (it reuses buffers)."""
        if not self.planar:
            images = from_tensor(output, self.manifest)
            self._check_size(images.shape[2], images.shape[1])
            return [av.VideoFrame.from_ndarray(image, format=self.pixel_format) for image in images]
        pixels = planar_pixels(output, self.manifest, self._scratch)
        self._check_size(pixels.shape[3], pixels.shape[2])
        return [planar_frame(image, self.order) for image in pixels]

    def _check_size(self, made_width: int, made_height: int) -> None:
        width, height = self.output_size
        if (made_width, made_height) != (width, height):
            raise ShapeMismatch(
                f"model {self.manifest.name!r} made {made_width}x{made_height} frames"
                f" from {self.width}x{self.height}; this pipeline needs {width}x{height}"
            )
