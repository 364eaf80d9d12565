"""PP-OCR text detection (a DB network), pre- and post-processing written for castnet.

Frames are scaled so both sides are multiples of 32 (the longer one at most `limit_side`), fed in
batches, and the probability map is thresholded; each connected region becomes a box, scored by
its mean probability and grown by the DB "unclip" distance (area * ratio / perimeter).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from inference.detections import Box, boxes_from_array
from inference.errors import ShapeMismatch
from inference.sessions import LoadedModel
from inference.tensors import run_batch, to_tensor

ALIGN = 32


@dataclass(frozen=True, slots=True)
class TextSettings:
    """DB post-processing: pixel threshold, box score threshold, unclip ratio, smallest box side."""

    limit_side: int = 960
    threshold: float = 0.3
    box_threshold: float = 0.5
    unclip_ratio: float = 1.6
    min_side: float = 3.0


def model_size(height: int, width: int, limit_side: int) -> tuple[int, int]:
    """The network's input (height, width) for a frame: scaled down to fit, multiples of 32."""
    ratio = min(1.0, limit_side / max(height, width))
    return (
        max(ALIGN, round(height * ratio / ALIGN) * ALIGN),
        max(ALIGN, round(width * ratio / ALIGN) * ALIGN),
    )


class TextDetector:
    """Runs DB text detection on batches of frames of one size."""

    def __init__(
        self, model: LoadedModel, width: int, height: int, settings: TextSettings | None = None
    ) -> None:
        self.manifest, self.width, self.height = model.manifest, width, height
        self.settings = settings or TextSettings()
        self.net = model.runner()
        self.size = model_size(height, width, self.settings.limit_side)
        self.net.check_feed((1, 3, *self.size))
        self._scaler = VideoReformatter()
        self._format = "bgr24" if self.manifest.normalization.channels == "BGR" else "rgb24"

    def prepare(self, pictures: list[av.VideoFrame]) -> np.ndarray:
        h, w = self.size
        images = [
            self._scaler.reformat(
                p, w, h, self._format, interpolation=Interpolation.BILINEAR, threads=1
            ).to_ndarray()  # swscale on one thread: the model's threads keep the cores
            for p in pictures
        ]
        return to_tensor(np.stack(images), self.manifest)

    def detect(self, tensor: np.ndarray) -> list[tuple[Box, ...]]:
        return self.boxes(self.infer(tensor))

    def steps(self) -> list[tuple[str, Callable[[Any], Any]]]:
        """Inference and post-processing, as steps a pipeline can run in separate threads."""
        return [("infer", self.infer), ("post", self.boxes)]

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """The network's (N, 1, H, W) probability map."""
        prob = run_batch(self.net, tensor)[0]
        if prob.ndim != 4 or prob.shape[1] != 1:
            raise ShapeMismatch(f"model {self.manifest.name!r}: expected an (N, 1, H, W) map")
        return prob

    def boxes(self, prob: np.ndarray) -> list[tuple[Box, ...]]:
        return [self._boxes(prob[i, 0]) for i in range(len(prob))]

    def _boxes(self, prob: np.ndarray) -> tuple[Box, ...]:
        from scipy import ndimage  # here, not at the top: scipy adds ~0.3 s to every CLI start

        s = self.settings
        text = prob > s.threshold
        labels, count = ndimage.label(text)
        if count == 0:
            return ()
        # each region's mean probability, summed over its own pixels only (the same sums, in the
        # same order, as over the whole map: a fifth of the work with text on a tenth of it)
        owners = labels[text]
        sums = np.bincount(owners, weights=prob[text], minlength=count + 1)[1:]
        scores = sums / np.bincount(owners, minlength=count + 1)[1:].astype(np.float64)
        rows = []
        for region, score in zip(ndimage.find_objects(labels), scores, strict=True):
            if region is None or score < s.box_threshold:
                continue
            y1, y2 = region[0].start, region[0].stop
            x1, x2 = region[1].start, region[1].stop
            w, h = x2 - x1, y2 - y1
            if min(w, h) < s.min_side:
                continue
            grow = w * h * s.unclip_ratio / (2 * (w + h))
            rows.append((x1 - grow, y1 - grow, x2 + grow, y2 + grow, score))
        if not rows:
            return ()
        boxes = np.asarray(rows, np.float64)
        map_h, map_w = prob.shape
        boxes[:, [0, 2]] *= self.width / map_w
        boxes[:, [1, 3]] *= self.height / map_h
        return boxes_from_array(boxes, self.width, self.height)
