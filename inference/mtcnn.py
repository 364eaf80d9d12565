"""MTCNN face detection (Zhang et al., 2016), pre- and post-processing written for castnet.

An image pyramid goes through P-Net (batched across frames, one run per scale); its candidates are
cropped to 24x24 for R-Net and 48x48 for O-Net (batched across all candidates of all frames), with
box regression and non-maximum suppression between stages.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from inference.detections import Box, boxes_from_array, nms
from inference.errors import ShapeMismatch
from inference.sessions import LoadedModel, ModelRunner
from inference.tensors import run_batch, to_pixels, to_tensor

PNET_CELL, PNET_STRIDE = 12, 2
CHUNK = 256  # candidates per R-Net/O-Net run


@dataclass(frozen=True, slots=True)
class FaceSettings:
    """Smallest face in pixels, pyramid step, and the three stages' score thresholds."""

    min_face: int = 20
    factor: float = 0.709
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)


@dataclass(slots=True)
class FaceBatch:
    """Frames prepared for the cascade: full RGB images and one P-Net input per pyramid scale
    (uint8 pixels where P-Net's graph folds the normalization in, else normalized tensors)."""

    images: np.ndarray  # (N, H + 2, W + 2, 3) uint8: the frames inside a 1-pixel black border
    pyramid: list[np.ndarray]


def pyramid_scales(height: int, width: int, settings: FaceSettings) -> list[float]:
    """Scales at which a `min_face` face fills P-Net's 12-pixel cell, down to a 12-pixel image."""
    first = PNET_CELL / settings.min_face
    side, scales = min(height, width) * first, list[float]()
    while side >= PNET_CELL and len(scales) < 64:
        scales.append(first * settings.factor ** len(scales))
        side *= settings.factor
    return scales


class FaceDetector:
    """Runs the cascade on batches of frames of one size."""

    def __init__(
        self, model: LoadedModel, width: int, height: int, settings: FaceSettings | None = None
    ) -> None:
        self.manifest, self.width, self.height = model.manifest, width, height
        self.settings = settings or FaceSettings()
        self.pnet, self.rnet, self.onet = (model.runner(r) for r in ("pnet", "rnet", "onet"))
        _expect(self.pnet, None)
        _expect(self.rnet, 24)
        _expect(self.onet, 48)
        self.scales = pyramid_scales(height, width, self.settings)
        self.sizes = [(math.ceil(height * s), math.ceil(width * s)) for s in self.scales]
        self._full = VideoReformatter()
        self._scalers = [VideoReformatter() for _ in self.scales]
        if self.manifest.layout not in ("NWHC", "NHWC"):
            raise ShapeMismatch(f"model {self.manifest.name!r}: MTCNN takes NWHC or NHWC input")
        # the pyramid goes to P-Net as swscale writes it, height-major: a P-Net trained on
        # width-major images is loaded with its kernels transposed (`inference.layouts`)
        if (self.pnet.layout or self.manifest.layout) != "NHWC":
            raise ShapeMismatch(
                f"model {self.manifest.name!r}: P-Net must take NHWC images (load its file with"
                ' layout = "NHWC")'
            )
        # R-Net and O-Net are not fully convolutional: their crops are gathered in their order
        self._width_major = self.manifest.layout == "NWHC"
        # the three nets (each in its own step's thread) take turns in onnxruntime: each run
        # gets every intra-op thread, as in a run on its own, instead of thread pools splitting
        # the cores between them mid-operator; the numpy work between the nets (the lowered
        # `post` steps) overlaps the nets' runs
        self._turns = threading.Lock()

    def prepare(self, pictures: list[av.VideoFrame]) -> FaceBatch:
        """Full RGB frames (for the crops) and the P-Net pyramid, each written once into its
        batch array: no per-frame arrays stacked afterwards."""
        count, height, width = len(pictures), self.height, self.width
        images = np.zeros((count, height + 2, width + 2, 3), np.uint8)
        # swscale on one thread (its default is one per core): the same pixels, and the model's
        # intra-op threads keep the cores instead of sharing them with short-lived slice threads
        for i, picture in enumerate(pictures):
            full = self._full.reformat(picture, width, height, "rgb24", threads=1)
            images[i, 1:-1, 1:-1] = packed(full)
        pyramid = []
        for level, (h, w) in enumerate(self.sizes):
            batch = np.empty((count, h, w, 3), np.uint8)
            for i, picture in enumerate(pictures):
                batch[i] = packed(self._level(level, picture))
            pyramid.append(self._feed(self.pnet, batch))
        return FaceBatch(images, pyramid)

    def _level(self, level: int, picture: av.VideoFrame) -> av.VideoFrame:
        """One pyramid level of a frame as rgb24 (area-averaged, as the reference MTCNN scales
        its images)."""
        h, w = self.sizes[level]
        return self._scalers[level].reformat(
            picture, w, h, "rgb24", interpolation=Interpolation.AREA, threads=1
        )

    def _feed(self, net: ModelRunner, images: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) images as `net` takes them: pixel values when its graph folds the
        normalization in (no arithmetic here), else the normalized tensor."""
        if net.pixels is not None:
            return to_pixels(images, net.layout or self.manifest.layout, net.pixels)
        return to_tensor(images, self.manifest)

    def detect(self, batch: FaceBatch) -> list[tuple[Box, ...]]:
        item: Any = batch
        for _, step in self.steps():
            item = step(item)
        return item

    def steps(self) -> list[tuple[str, Callable[[Any], Any]]]:
        """The cascade as steps a pipeline can run in separate threads, one batch each: the three
        nets' runs, each followed by its numpy work (a `post` step, which a pipeline runs at a
        lower priority: the nets' threads keep the cores first)."""
        return [
            ("pnet", self._run_pnet),
            ("pnet post", self._after_pnet),
            ("rnet", self._run_rnet),
            ("rnet post", self._after_rnet),
            ("onet", self._run_onet),
            ("onet post", self._after_onet),
        ]

    def _run_pnet(self, batch: FaceBatch) -> tuple[np.ndarray, list[list[np.ndarray]]]:
        """P-Net over every pyramid level: the frames and each level's outputs."""
        outputs = []
        for tensor in batch.pyramid:
            with self._turns:
                outputs.append(run_batch(self.pnet, tensor))
        return batch.images, outputs

    def _after_pnet(self, ran: tuple[np.ndarray, list[list[np.ndarray]]]) -> _Crops:
        """P-Net's candidates per frame (squared boxes in source pixels), cropped for R-Net."""
        images, outputs = ran
        count = len(images)
        found: list[list[np.ndarray]] = [[] for _ in range(count)]
        for scale, out in zip(self.scales, outputs, strict=True):
            reg, prob = _by_channels(out, 4), _by_channels(out, 2)  # (N, H', W', C)
            boxes, owners = _cell_boxes(prob[..., 1], reg, scale, self.settings.thresholds[0])
            bounds = np.searchsorted(owners, np.arange(count + 1))  # owners come sorted
            for i in range(count):
                mine = boxes[bounds[i] : bounds[i + 1]]
                if len(mine):
                    found[i].append(mine[nms(mine, 0.5)])
        proposals = []
        for per_scale in found:
            boxes = np.concatenate(per_scale) if per_scale else np.empty((0, 9))
            boxes = boxes[nms(boxes, 0.7)]
            proposals.append(_square(_regress(boxes, boxes[:, 5:9], extent=0.0)))
        return self._cropped(self.rnet, 24, images, proposals, keep=True)

    def _run_rnet(self, crops: _Crops) -> _Scored:
        return self._score(self.rnet, crops)

    def _after_rnet(self, scored: _Scored) -> _Crops:
        """R-Net's survivors per frame, regressed, suppressed, squared, cropped for O-Net."""
        kept = []
        for rows, offsets in _survivors(scored, self.settings.thresholds[1]):
            keep = nms(rows, 0.7)
            kept.append(_square(_regress(rows[keep], offsets[keep], extent=1.0)))
        assert scored.crops.images is not None  # R-Net's crops keep their frames
        return self._cropped(self.onet, 48, scored.crops.images, kept, keep=False)

    def _run_onet(self, crops: _Crops) -> _Scored:
        return self._score(self.onet, crops)

    def _after_onet(self, scored: _Scored) -> list[tuple[Box, ...]]:
        """O-Net's survivors per frame, regressed and suppressed: the faces."""
        faces = []
        for rows, offsets in _survivors(scored, self.settings.thresholds[2]):
            rows = _regress(rows, offsets, extent=1.0)
            faces.append(boxes_from_array(rows[nms(rows, 0.7, "min")], self.width, self.height))
        return faces

    def _cropped(
        self, net: ModelRunner, size: int, images: np.ndarray, boxes: list[np.ndarray], keep: bool
    ) -> _Crops:
        """Every frame's candidate boxes, stacked, with their `size` x `size` crops as `net`
        takes them; the frames themselves only if `keep` (a later net's crops need them)."""
        owners = np.concatenate([np.full(len(b), i) for i, b in enumerate(boxes)])
        stacked = np.concatenate(boxes) if len(owners) else np.empty((0, 5))
        tensors = []
        if len(owners):
            crops = _crops(images, owners, stacked, size, width_major=self._width_major)
            tensors = [
                self._feed(net, crops[start : start + CHUNK])
                for start in range(0, len(crops), CHUNK)
            ]
        return _Crops(images if keep else None, len(boxes), owners, stacked, tensors)

    def _score(self, net: ModelRunner, crops: _Crops) -> _Scored:
        """`net` over the crops (in chunks of `CHUNK`): box offsets and face scores."""
        regs, probs = [np.empty((0, 4), np.float32)], [np.empty((0, 2), np.float32)]
        for tensor in crops.tensors:
            with self._turns:
                outputs = run_batch(net, tensor)
            regs.append(_by_channels(outputs, 4))
            probs.append(_by_channels(outputs, 2))
        scored = replace(crops, tensors=[])  # the crops are not needed any more
        return _Scored(scored, np.concatenate(regs), np.concatenate(probs)[:, 1])


@dataclass(slots=True)
class _Crops:
    """Candidate boxes of a batch's frames, stacked, and their crops in chunks for a net."""

    images: np.ndarray | None  # the frames, while a later net's crops need them
    frames: int
    owners: np.ndarray  # the frame of each box
    boxes: np.ndarray  # (K, 5+): x1, y1, x2, y2, score, ...
    tensors: list[np.ndarray]


@dataclass(slots=True)
class _Scored:
    crops: _Crops
    reg: np.ndarray  # (K, 4) box offsets
    score: np.ndarray  # (K,) face probability


def _survivors(scored: _Scored, threshold: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per frame: the boxes scoring above `threshold` as (x1, y1, x2, y2, score) rows, and their
    offsets."""
    crops = scored.crops
    out = []
    for i in range(crops.frames):
        mine = (crops.owners == i) & (scored.score > threshold)
        out.append((np.column_stack([crops.boxes[mine, :4], scored.score[mine]]), scored.reg[mine]))
    return out


def _expect(net: ModelRunner, side: int | None) -> None:
    shape = net.input_shape
    if len(shape) != 4 or shape[3] != 3 or (side is not None and shape[1:3] != [side, side]):
        raise ShapeMismatch(f"model {net.model!r}: unexpected MTCNN input shape {shape}")


def _by_channels(outputs: list[np.ndarray], channels: int) -> np.ndarray:
    for out in outputs:
        if out.shape[-1] == channels:
            return out
    raise ShapeMismatch(f"MTCNN net has no output with {channels} channels")


def _cell_boxes(
    score: np.ndarray, reg: np.ndarray, scale: float, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """P-Net cells above threshold over a batch's (N, H', W') scores, as rows (x1, y1, x2, y2,
    score, 4 regression offsets) and the frame of each row, in frame order."""
    ns, ys, xs = np.nonzero(score >= threshold)
    if len(ys) == 0:
        return np.empty((0, 9)), ns
    x1 = np.fix((PNET_STRIDE * xs + 1) / scale)
    y1 = np.fix((PNET_STRIDE * ys + 1) / scale)
    x2 = np.fix((PNET_STRIDE * xs + PNET_CELL) / scale)
    y2 = np.fix((PNET_STRIDE * ys + PNET_CELL) / scale)
    return np.column_stack([x1, y1, x2, y2, score[ns, ys, xs], reg[ns, ys, xs, :]]), ns


def _regress(boxes: np.ndarray, reg: np.ndarray, extent: float) -> np.ndarray:
    """Move box edges by the nets' offsets, given as fractions of the box size."""
    if len(boxes) == 0:
        return boxes[:, :5]
    w = boxes[:, 2] - boxes[:, 0] + extent
    h = boxes[:, 3] - boxes[:, 1] + extent
    moved = boxes[:, :4] + reg[:, :4] * np.column_stack([w, h, w, h])
    return np.column_stack([moved, boxes[:, 4]])


def _square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square around its centre, with integer corners."""
    if len(boxes) == 0:
        return boxes
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    x1 = np.fix(boxes[:, 0] + w * 0.5 - side * 0.5)
    y1 = np.fix(boxes[:, 1] + h * 0.5 - side * 0.5)
    side = np.fix(side)
    return np.column_stack([x1, y1, x1 + side, y1 + side, boxes[:, 4]])


def packed(frame: av.VideoFrame) -> np.ndarray:
    """A packed 3-byte-per-pixel frame as an (H, W, 3) view of its plane, rows' padding skipped."""
    plane = frame.planes[0]
    rows = np.frombuffer(memoryview(plane), np.uint8)[: plane.line_size * frame.height]
    return rows.reshape(frame.height, plane.line_size)[:, : frame.width * 3].reshape(
        frame.height, frame.width, 3
    )


def _crops(
    padded: np.ndarray, owners: np.ndarray, boxes: np.ndarray, size: int, width_major: bool
) -> np.ndarray:
    """Bilinear `size` x `size` float32 crops (K, y, x, 3), box `k` from frame `owners[k]` of
    `padded` (N, H + 2, W + 2, 3) uint8 frames with a black border, all frames in one gather;
    outside the image reads as black. `width_major`: the same crops over memory laid out
    (K, x, y, 3), as a width-major model takes them."""
    height, width = padded.shape[1] - 2, padded.shape[2] - 2
    steps = (np.arange(size) + 0.5) / size
    span_x = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
    span_y = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
    xs = np.clip(boxes[:, 0:1] + steps * span_x - 0.5 + 1, 0, width + 1)  # +1: the padding
    ys = np.clip(boxes[:, 1:2] + steps * span_y - 0.5 + 1, 0, height + 1)
    x0 = np.minimum(np.floor(xs).astype(np.intp), width)
    y0 = np.minimum(np.floor(ys).astype(np.intp), height)
    fx, fy = (xs - x0).astype(np.float32), (ys - y0).astype(np.float32)
    # flat pixel indices into the padded frames: one `take` of 3-byte rows per corner, over a
    # (K, y, x) grid, or (K, x, y) for a width-major model
    pixels = padded.reshape(-1, 3)
    rows = (owners.astype(np.intp) * (height + 2))[:, None, None] + y0[:, :, None]
    top_left = rows * (width + 2) + x0[:, None, :]
    fx, fy = fx[:, None, :, None], fy[:, :, None, None]
    if width_major:
        top_left = top_left.transpose(0, 2, 1)
        fx, fy = fx.transpose(0, 2, 1, 3), fy.transpose(0, 2, 1, 3)
    indices = top_left.ravel()
    shape = (len(boxes), size, size, 3)

    def at(offset: int) -> np.ndarray:
        return np.take(pixels, indices + offset, axis=0).reshape(shape).astype(np.float32)

    below = width + 2
    top = at(0) * (1 - fx) + at(1) * fx
    bottom = at(below) * (1 - fx) + at(below + 1) * fx
    crops = top * (1 - fy) + bottom * fy
    return crops.transpose(0, 2, 1, 3) if width_major else crops
