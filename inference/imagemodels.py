"""Image-to-image models on frames: `filter` (same size out) and `upscale` (twice the size out)."""

from __future__ import annotations

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from inference.errors import ShapeMismatch
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
        self.pixel_format = "bgr24" if self.manifest.normalization.channels == "BGR" else "rgb24"
        self._scaler = VideoReformatter()

    @property
    def output_size(self) -> tuple[int, int]:
        """(width, height) of the frames this model makes."""
        return self.width * self.factor, self.height * self.factor

    def prepare(self, pictures: list[av.VideoFrame]) -> np.ndarray:
        images = [self._scaler.reformat(p, format=self.pixel_format).to_ndarray() for p in pictures]
        return to_tensor(np.stack(images), self.manifest)

    def apply(self, tensor: np.ndarray) -> np.ndarray:
        """(N, H', W', 3) uint8 output images, checked to be the size this pipeline promises."""
        images = from_tensor(run_batch(self.net, tensor)[0], self.manifest)
        width, height = self.output_size
        if images.shape[1:3] != (height, width):
            raise ShapeMismatch(
                f"model {self.manifest.name!r} made {images.shape[2]}x{images.shape[1]} frames"
                f" from {self.width}x{self.height}; this pipeline needs {width}x{height}"
            )
        return images
