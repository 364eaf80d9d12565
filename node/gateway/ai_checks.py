"""What a gateway checks in an AI segment's output before it accepts and pays for it: detections
are well-formed JSON lines, one per frame of the segment in order with its timestamp, every box
inside the frame; a video decodes to the right frame size with one frame per source frame at the
source's timestamps (media.verify's decoders), and (for the pipelines that must change the picture)
differs from the source by more than a re-encode would. Blocking: call from a thread."""

from __future__ import annotations

import io
import json
import math
from typing import Any

import av
import numpy as np

from media.verify import TICKS, scan_rendition
from node.protocol import DETECTIONS, MAX_BOXES, VIDEO, VIDEO_PIPELINES, AiOutput, ai_output_size

MAX_PROBLEMS = 5  # a verdict's reason stays readable
# Least mean absolute luma difference (0-255) between a pipeline's output and its input, over the
# first frames. A style repaints the whole picture (mosaic on the test pattern: ~78); a matte
# replaces the background; the filter (a gentle 3x3 kernel, ~2.7 on the demo clip) gets only a
# floor that catches the input handed back (0) or re-encoded at a good bitrate (~0.3).
MIN_CHANGE = {"filter": 0.5, "style": 12.0, "matte": 3.0}
CHANGE_FRAMES = 3


class BadDetections(Exception):
    """Detection lines that do not parse or do not fit the segment."""


def check_output(
    output: AiOutput, pipeline: str, model: str, keys: list[int], width: int, height: int
) -> list[str]:
    """Every reason to reject `output` for a segment whose frames are at `keys` (90 kHz) and
    whose frames are `width` x `height`; `model` is the one asked for ("" for any)."""
    problems = []
    kind = VIDEO if pipeline in VIDEO_PIPELINES else DETECTIONS
    if output.kind != kind:
        problems.append(f"{pipeline} returns {kind}, not {output.kind}")
    if model and output.model != model:
        problems.append(f"ran model {output.model!r}, not {model!r}")
    size = ai_output_size(pipeline, width, height)
    if (output.width, output.height) != size:
        problems.append(f"claims {output.width}x{output.height} frames, not {size[0]}x{size[1]}")
    if output.frames != len(keys):
        problems.append(f"claims {output.frames} frames, the segment has {len(keys)}")
    if problems:
        return problems
    if kind == VIDEO:
        return check_video(output.data, keys, size)
    try:
        parse_detections(output.data, keys, width, height)
    except BadDetections as exc:
        return [f"malformed detections: {exc}"]
    return []


def parse_detections(data: bytes, keys: list[int], width: int, height: int) -> list[dict[str, Any]]:
    """The detection lines, one per frame at `keys`, each {frame, pts, time, boxes}; raises
    BadDetections with the first few problems."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise BadDetections("not UTF-8 text") from None
    rows = text.split("\n")
    if rows and rows[-1] == "":
        rows.pop()
    if len(rows) != len(keys):
        raise BadDetections(f"{len(rows)} lines for the segment's {len(keys)} frames")
    lines, problems = [], []
    for index, (row, key) in enumerate(zip(rows, keys, strict=True)):
        try:
            line = _line(row, index, key, width, height)
        except BadDetections as exc:
            problems.append(f"frame {index}: {exc}")
            if len(problems) >= MAX_PROBLEMS:
                break
            continue
        lines.append(line)
    if problems:
        raise BadDetections("; ".join(problems))
    return lines


def _line(row: str, index: int, key: int, width: int, height: int) -> dict[str, Any]:
    try:
        line = json.loads(row)
    except ValueError:
        raise BadDetections("not JSON") from None
    if not isinstance(line, dict) or set(line) != {"frame", "pts", "time", "boxes"}:
        raise BadDetections("a line is an object of frame, pts, time and boxes")
    if line["frame"] != index or type(line["frame"]) is not int:
        raise BadDetections(f"numbered {line['frame']!r}")
    if type(line["pts"]) is not int or abs(line["pts"] - key) > 1:
        raise BadDetections(f"pts {line['pts']!r}, the frame is at {key}")
    if not _number(line["time"]) or abs(line["time"] - key / TICKS) > 0.001:
        raise BadDetections(f"time {line['time']!r}, the frame is at {key / TICKS:.6f} s")
    boxes = line["boxes"]
    if not isinstance(boxes, list) or len(boxes) > MAX_BOXES:
        raise BadDetections(f"boxes are a list of at most {MAX_BOXES}")
    for found in boxes:
        if not isinstance(found, dict) or set(found) != {"box", "score"}:
            raise BadDetections("a box is an object of box and score")
        box, score = found["box"], found["score"]
        if not isinstance(box, list) or len(box) != 4 or not all(_number(v) for v in box):
            raise BadDetections("a box is [x1, y1, x2, y2]")
        x1, y1, x2, y2 = box
        if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
            raise BadDetections(f"box {box} is outside the {width}x{height} frame")
        if not _number(score) or not 0 <= score <= 1:
            raise BadDetections(f"score {score!r} is not in 0..1")
    return line


def _number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def check_video(data: bytes, keys: list[int], size: tuple[int, int]) -> list[str]:
    """A processed video: decodes, one frame per source frame at its timestamp, the right size
    (H.264 frames have even sides)."""
    scan = scan_rendition([data], set())
    if scan.errors or not scan.keys:
        return [f"video does not decode: {'; '.join(scan.errors) or 'no frames'}"]
    problems = []
    want = (size[0] & ~1, size[1] & ~1)
    if scan.sizes != {want}:
        found = ", ".join(f"{w}x{h}" for w, h in sorted(scan.sizes))
        problems.append(f"video frames are {found}, not {want[0]}x{want[1]}")
    if len(scan.keys) != len(keys):
        problems.append(f"video has {len(scan.keys)} frames, the segment {len(keys)}")
    elif any(abs(a - b) > 1 for a, b in zip(sorted(scan.keys), keys, strict=True)):
        problems.append("video frames are not at the segment's timestamps")
    return problems


def check_changed(output: bytes, source: bytes, pipeline: str) -> list[str]:
    """A reason to reject a video that does not differ from its source as `pipeline` must make
    it (MIN_CHANGE), or nothing; pipelines that change the size (upscale) are not compared."""
    floor = MIN_CHANGE.get(pipeline)
    if floor is None:
        return []
    try:
        made, given = _luma(output), _luma(source)
    except (av.FFmpegError, ValueError) as exc:
        return [f"video does not decode: {exc}"]
    pairs = [(a, b) for a, b in zip(made, given, strict=False) if a.shape == b.shape]
    if not pairs:
        return ["video frames cannot be compared with the segment's"]
    change = float(np.mean([np.abs(a - b).mean() for a, b in pairs]))
    if change < floor:
        return [f"{pipeline} output barely differs from its input (mean change {change:.2f} of "
                f"255, at least {floor:g} expected): the model did not run"]  # fmt: skip
    return []


def _luma(data: bytes) -> list[np.ndarray]:
    frames = []
    with av.open(io.BytesIO(data)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="gray").astype(np.float32))
            if len(frames) >= CHANGE_FRAMES:
                break
    return frames
