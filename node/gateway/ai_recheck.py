"""The gateway redoes a little of the AI work it pays for: on a random fraction of segments (and
on the first segment it takes from each orchestrator) it runs the same model on a few frames drawn
at random after the output arrived, and compares — detections by IoU matching, processed frames by
PSNR. An output the model would not have produced (empty detections, boxes elsewhere, a video that
is the unprocessed input or another filter's, another style or background) is rejected like any
failed check: the segment is redone elsewhere and the orchestrator suspended. Segments asked with
pipeline options (style, blend, background, infer_size) are recomputed with the same options.
Blocking: call `check` from a thread.

Frame-changing pipelines whose output has the input's size are also checked against the input
itself on those frames, without a model: an output that equals the input was not processed. That
check runs even where the gateway lacks the model (it then cannot recompute, and says so once)."""

from __future__ import annotations

import io
import json
import logging
import random
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np

from inference.engine import InferenceConfig, InferenceEngine
from inference.errors import InferenceError
from media.quality import psnr
from media.verify import TICKS
from node.protocol import DETECTIONS, AiOutput

log = logging.getLogger("castnet.gateway")

RECHECK_FRAMES = 2  # frames recomputed per checked segment
MIN_IOU = 0.5  # a box matches the recomputed one at this overlap
MIN_MATCHED = 0.5  # share of boxes (each side) that must match over the checked frames
MIN_FRAME_PSNR = 30.0  # two encodings of the same processed frame: 35-100 dB measured
# Style and matte outputs are busy pictures that encode less faithfully: the same frames recomputed
# here measured 32-35 dB (style, carphone, full size and 96x80) and 45-80 dB (matte), while another
# style or background, or the full size instead of the asked infer_size, measured 10-13 dB.
MIN_FRAME_PSNR_OF = {"style": 24.0, "matte": 24.0}
UNPROCESSED_PSNR = 35.0  # output this close to the input was not processed (sharpen: ~21 dB)


@dataclass(frozen=True, slots=True)
class RecheckTarget:
    """What a recheck needs of the segment: its bytes, frame timestamps and the model's task."""

    pipeline: str
    segment: bytes
    keys: Sequence[int]  # 90 kHz timestamps of the segment's frames, in order
    width: int
    height: int
    options: Mapping[str, Any] = field(default_factory=dict)  # the pipeline options asked for


class AiRechecker:
    """One gateway's rechecks: `rate` of segments, drawn from `rng` (the OS's randomness unless
    a test seeds one), plus the first segment from each orchestrator."""

    def __init__(
        self,
        rate: float,
        config: InferenceConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"recheck rate {rate} is not within 0..1")
        self.rate = rate
        self.config = config or InferenceConfig(threads=1, preset="ultrafast")
        self.rng = rng or random.SystemRandom()
        self._seen: set[bytes] = set()
        self._engine: InferenceEngine | None = None
        self._lock = threading.Lock()
        self._missing: set[str] = set()
        self.checked = 0  # segments rechecked, for status and tests
        self.caught = 0

    def wanted(self, orchestrator: bytes) -> bool:
        """Whether this segment's output is rechecked (decided after it arrived)."""
        with self._lock:
            first = orchestrator not in self._seen
            self._seen.add(orchestrator)
            return self.rate > 0 and (first or self.rng.random() < self.rate)

    def check(self, target: RecheckTarget, output: AiOutput) -> list[str]:
        """Reasons to reject `output` after recomputing a few random frames (empty: it matches)."""
        if not target.keys:
            return []
        with self._lock:
            count = min(RECHECK_FRAMES, len(target.keys))
            picks = sorted(self.rng.sample(range(len(target.keys)), count))
            self.checked += 1  # segments are checked in threads: count under the lock
        clip, inputs = _clip(target.segment, picks)
        if output.kind == DETECTIONS:
            problems = self._detections(target, output, clip, picks)
        else:
            problems = self._video(target, output, clip, picks, inputs)
        if problems:
            with self._lock:
                self.caught += 1
        return problems

    def _recompute(self, target: RecheckTarget, model: str, clip: bytes) -> Any | None:
        with self._lock:
            if self._engine is None:
                self._engine = InferenceEngine(self.config)
            engine = self._engine
        try:
            return engine.run_pipeline(target.pipeline, clip, model=model or None,
                                       options=dict(target.options) or None)  # fmt: skip
        except InferenceError as exc:
            if model not in self._missing:
                self._missing.add(model)
                log.warning("cannot recheck %s outputs of model %r here: %s", target.pipeline,
                            model, exc)  # fmt: skip
            return None

    def _detections(
        self, target: RecheckTarget, output: AiOutput, clip: bytes, picks: list[int]
    ) -> list[str]:
        claimed = _detection_lines(output.data)
        result = self._recompute(target, output.model, clip)
        if result is None:
            return []
        ours = [[found["box"] for found in d.as_json()["boxes"]] for d in result.detections]
        theirs = [[found["box"] for found in claimed[i]["boxes"]] if i < len(claimed) else []
                  for i in picks]  # fmt: skip
        matched_ours = matched_theirs = total_ours = total_theirs = 0
        for mine, other in zip(ours, theirs, strict=False):
            matches = _matches(mine, other)
            matched_ours += matches
            matched_theirs += matches
            total_ours += len(mine)
            total_theirs += len(other)
        where = ", ".join(f"{target.keys[i] / TICKS:.3f} s" for i in picks)
        if total_ours and matched_ours / total_ours < MIN_MATCHED:
            return [f"recheck: {target.pipeline} found {total_ours} boxes on the frames at "
                    f"{where}; the result matches {matched_ours} of them"]  # fmt: skip
        if total_theirs and matched_theirs / total_theirs < MIN_MATCHED:
            return [f"recheck: the result has {total_theirs} boxes on the frames at {where}; "
                    f"{target.pipeline} finds {matched_theirs} of them"]  # fmt: skip
        return []

    def _video(
        self,
        target: RecheckTarget,
        output: AiOutput,
        clip: bytes,
        picks: list[int],
        inputs: list[np.ndarray],
    ) -> list[str]:
        wanted = [target.keys[i] for i in picks]
        theirs = _frames_at(output.data, wanted)
        if len(theirs) != len(wanted):
            return [f"recheck: the output has no frames at {len(wanted) - len(theirs)} of the "
                    "checked timestamps"]  # fmt: skip
        if (output.width, output.height) == (target.width, target.height):
            same = [psnr(a, b) for a, b in zip(inputs, theirs, strict=True)
                    if a.shape == b.shape]  # fmt: skip
            if same and min(same) >= UNPROCESSED_PSNR:
                return [f"recheck: the output is the unprocessed input (PSNR {min(same):.1f} dB "
                        f"against the source on {len(same)} frames)"]  # fmt: skip
        result = self._recompute(target, output.model, clip)
        if result is None or result.video is None:
            return []
        ours = _frames_at(result.video, wanted)
        scores = [psnr(a, b) for a, b in zip(ours, theirs, strict=False) if a.shape == b.shape]
        if not scores:
            return ["recheck: the recomputed frames do not have the output's size"]
        floor = MIN_FRAME_PSNR_OF.get(target.pipeline, MIN_FRAME_PSNR)
        if min(scores) < floor:
            low, asked = min(scores), _describe(target.options)
            return [f"recheck: the output differs from {target.pipeline}{asked} recomputed here "
                    f"(PSNR {low:.1f} dB < {floor} on {len(scores)} frames)"]  # fmt: skip
        return []


def _describe(options: Mapping[str, Any]) -> str:
    return f" ({', '.join(f'{k}={v}' for k, v in sorted(options.items()))})" if options else ""


def _detection_lines(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(row) for row in data.decode().splitlines() if row]


def _matches(ours: list[list[float]], theirs: list[list[float]]) -> int:
    """Greedy one-to-one matching of boxes at IoU >= MIN_IOU."""
    free = list(theirs)
    count = 0
    for box in ours:
        best = max(free, key=lambda other: _iou(box, other), default=None)
        if best is not None and _iou(box, best) >= MIN_IOU:
            free.remove(best)
            count += 1
    return count


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _clip(segment: bytes, picks: list[int]) -> tuple[bytes, list[np.ndarray]]:
    """The picked frames of `segment` as a lossless H.264 MPEG-TS clip with their own timestamps
    (what a model reads from it is what it would read from the segment), and their luma."""
    wanted = set(picks)
    out = io.BytesIO()
    lumas: list[np.ndarray] = []
    with (
        av.open(io.BytesIO(segment)) as src,
        av.open(out, "w", format="mpegts", options={"avoid_negative_ts": "disabled"}) as dst,
    ):
        stream = src.streams.video[0]
        video = dst.add_stream("libx264", rate=stream.average_rate or 30)
        video.width, video.height = stream.codec_context.width, stream.codec_context.height
        video.pix_fmt = "yuv420p"
        video.codec_context.time_base = stream.time_base
        video.codec_context.options = {"qp": "0", "preset": "ultrafast"}
        for index, frame in enumerate(src.decode(stream)):
            if index not in wanted:
                continue
            frame = frame.reformat(format="yuv420p")
            lumas.append(frame.to_ndarray()[: frame.height])
            frame.pict_type = av.video.frame.PictureType.NONE
            dst.mux(video.encode(frame))
            if len(lumas) == len(wanted):
                break
        dst.mux(video.encode(None))
    return out.getvalue(), lumas


def _frames_at(data: bytes, keys: Sequence[int]) -> list[np.ndarray]:
    """The luma of the frames of a video at `keys` (90 kHz, +-1), in the order of `keys`."""
    found: dict[int, np.ndarray] = {}
    try:
        with av.open(io.BytesIO(data)) as container:
            for frame in container.decode(video=0):
                if frame.pts is None or frame.time_base is None:
                    continue
                key = round(frame.pts * frame.time_base * TICKS)
                hit = next((k for k in keys if abs(k - key) <= 1), None)
                if hit is not None:
                    frame = frame.reformat(format="yuv420p")
                    found[hit] = frame.to_ndarray()[: frame.height]
    except (av.FFmpegError, OSError):
        return []
    return [found[k] for k in keys if k in found]


def recheck_config(models_dir: Path | None) -> InferenceConfig:
    """The gateway's inference for rechecks: CPU or GPU as available, one thread, the models
    in `models_dir` besides the packaged ones."""
    return InferenceConfig(threads=1, preset="ultrafast", models_dir=models_dir)
