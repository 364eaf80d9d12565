"""Boxes found on frames, non-maximum suppression, and their JSON form."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class Box:
    """An axis-aligned box in source-frame pixels (x right, y down) with the model's confidence."""

    x1: float
    y1: float
    x2: float
    y2: float
    score: float

    def as_json(self) -> dict[str, Any]:
        return {
            "box": [round(self.x1, 1), round(self.y1, 1), round(self.x2, 1), round(self.y2, 1)],
            "score": round(self.score, 4),
        }

    def contains(self, x: float, y: float) -> bool:
        return self.x1 <= x <= self.x2 and self.y1 <= y <= self.y2


@dataclass(frozen=True, slots=True)
class FrameDetections:
    """Everything a detection pipeline found on one frame."""

    frame: int
    pts: int
    time: float
    boxes: tuple[Box, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "frame": self.frame,
            "pts": self.pts,
            "time": round(self.time, 6),
            "boxes": [b.as_json() for b in self.boxes],
        }


def boxes_from_array(rows: np.ndarray, width: int, height: int) -> tuple[Box, ...]:
    """Rows of (x1, y1, x2, y2, score, ...) clipped to the frame, best score first."""
    found = []
    for x1, y1, x2, y2, score in rows[:, :5].tolist():
        x1, x2 = min(max(x1, 0.0), width - 1.0), min(max(x2, 0.0), width - 1.0)
        y1, y2 = min(max(y1, 0.0), height - 1.0), min(max(y2, 0.0), height - 1.0)
        if x2 > x1 and y2 > y1:
            found.append(Box(x1, y1, x2, y2, score))
    return tuple(sorted(found, key=lambda b: -b.score))


MATRIX_LIMIT = 2048  # boxes up to which suppression uses one all-pairs overlap matrix


def nms(boxes: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Indices of rows kept by greedy non-maximum suppression on (x1, y1, x2, y2, score, ...).

    `union` divides overlap by the union (IoU); `min` by the smaller box, which also drops a box
    that lies inside a better one. Up to `MATRIX_LIMIT` boxes, every pair's overlap is computed in
    one array operation and the greedy pass only reads it; above, one row at a time. Both give the
    same indices: each overlap is the same arithmetic on the same two boxes.
    """
    if len(boxes) == 0:
        return np.empty(0, np.intp)
    x1, y1, x2, y2, score = (boxes[:, i] for i in range(5))
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(score, kind="stable")[::-1]
    if len(boxes) > MATRIX_LIMIT:
        return _nms_rows(x1, y1, x2, y2, area, order, threshold, mode)
    x1, y1, x2, y2, area = (v[order] for v in (x1, y1, x2, y2, area))
    heads, rest = (slice(None), None), (None, slice(None))
    overlap = _overlap(x1, y1, x2, y2, area, heads, rest, mode)
    # row i as a bit set: the boxes that box i removes if kept (NaN overlaps remove, as below)
    rows = np.packbits(~(overlap <= threshold), axis=1, bitorder="little")
    removes = [int.from_bytes(row.tobytes(), "little") for row in rows]
    removed, keep = 0, []
    for i, mask in enumerate(removes):
        if not (removed >> i) & 1:
            keep.append(i)
            removed |= mask
    return order[np.asarray(keep, np.intp)]


def _overlap(
    x1: np.ndarray,
    y1: np.ndarray,
    x2: np.ndarray,
    y2: np.ndarray,
    area: np.ndarray,
    head: Any,
    rest: Any,
    mode: str,
) -> np.ndarray:
    """Overlap of boxes `head` with boxes `rest` (indices, or broadcasting axes for all pairs)."""
    w = np.maximum(0.0, np.minimum(x2[head], x2[rest]) - np.maximum(x1[head], x1[rest]) + 1)
    h = np.maximum(0.0, np.minimum(y2[head], y2[rest]) - np.maximum(y1[head], y1[rest]) + 1)
    inter = w * h
    if mode == "min":
        return inter / np.minimum(area[head], area[rest])
    return inter / (area[head] + area[rest] - inter)


def _nms_rows(
    x1: np.ndarray,
    y1: np.ndarray,
    x2: np.ndarray,
    y2: np.ndarray,
    area: np.ndarray,
    order: np.ndarray,
    threshold: float,
    mode: str,
) -> np.ndarray:
    keep = []
    while order.size:  # each pass removes at least the head: at most len(boxes) passes
        head, rest = order[0], order[1:]
        keep.append(head)
        order = rest[_overlap(x1, y1, x2, y2, area, head, rest, mode) <= threshold]
    return np.asarray(keep, np.intp)
