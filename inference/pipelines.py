"""Frame pipelines: decode -> prepare (batched) -> model steps -> write, each in its own thread.

`detect-faces` and `detect-text` produce per-frame boxes (JSON lines); `filter`, `upscale`,
`style` and `matte` produce a re-encoded video. Every pipeline counts the pixels it processed: the
unit of price.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import av

from inference.config import DEFAULT_BATCH
from inference.detections import Box, FrameDetections
from inference.effects import EFFECTS, video_effect
from inference.errors import OutputFailed, UnknownPipeline
from inference.frames import Frame, FrameStamp, VideoInfo, VideoWriter, open_video
from inference.imagemodels import ImageModel
from inference.manifest import PIPELINE_KINDS
from inference.manifest import VIDEO_KINDS as VIDEO_KINDS  # re-exported
from inference.mtcnn import FaceDetector
from inference.options import parse_options
from inference.providers import CPU, usable_cpus
from inference.sessions import LoadedModel
from inference.stages import StageTimes, background_stage, in_background, run_stages
from inference.textdet import TextDetector
from media.progress import Progress, ProgressCallback
from media.source import Source

PIPELINES = PIPELINE_KINDS
DETECTORS = {"detect-faces": FaceDetector, "detect-text": TextDetector}


@dataclass(frozen=True, slots=True)
class PipelineResult:
    """What a pipeline run did: frames, priced units (pixels), speed, provider and its outputs."""

    pipeline: str
    model: str
    provider: str
    frames: int
    width: int
    height: int
    output_width: int
    output_height: int
    units: int  # pixels processed: frames x output width x output height
    wall_seconds: float
    detections: tuple[FrameDetections, ...] = ()
    video: bytes | None = None  # filter/upscale output when no `out` path was given
    out: Path | None = None
    # working seconds of each step (decode, prepare, inference steps, write), each in its thread
    stages: dict[str, float] = field(default_factory=dict)

    @property
    def bounding_stage(self) -> str | None:
        """The busiest step: with every step in its own thread, the one that sets the rate."""
        return max(self.stages, key=self.stages.__getitem__) if self.stages else None

    @property
    def fps(self) -> float:
        return self.frames / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "model": self.model,
            "provider": self.provider,
            "frames": self.frames,
            "input": [self.width, self.height],
            "output": [self.output_width, self.output_height],
            "units": self.units,
            "unit": "pixel",
            "wall_seconds": round(self.wall_seconds, 3),
            "fps": round(self.fps, 2),
            "boxes": sum(len(d.boxes) for d in self.detections),
            "out": None if self.out is None else str(self.out),
            "stages": {name: round(seconds, 3) for name, seconds in self.stages.items()},
            "bounding_stage": self.bounding_stage,
        }


class _Sink(Protocol):
    def take(self, metas: list[FrameStamp], results: Any) -> None: ...
    def close(self) -> Any: ...
    def abort(self) -> None: ...


class _DetectionSink:
    """Keeps detections, and writes them as JSON lines to a temp file renamed into place at the
    end."""

    def __init__(self, out: Path | None) -> None:
        self.out = out
        self.found: list[FrameDetections] = []
        self._file: Any = None
        self._temp: Path | None = None
        if out is not None:
            try:
                fd, temp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
            except OSError as exc:
                raise OutputFailed(f"cannot write {out}: {exc}") from exc
            self._temp = Path(temp)
            self._file = os.fdopen(fd, "w")

    def take(self, metas: list[FrameStamp], results: list[tuple[Box, ...]]) -> None:
        for meta, boxes in zip(metas, results, strict=True):
            found = FrameDetections(meta.index, meta.pts, meta.time, boxes)
            self.found.append(found)
            if self._file is not None:
                self._file.write(json.dumps(found.as_json(), separators=(",", ":")) + "\n")

    def close(self) -> None:
        if self._file is not None and self._temp is not None and self.out is not None:
            try:
                self._file.close()
                os.replace(self._temp, self.out)
            except OSError as exc:
                self.abort()
                raise OutputFailed(f"cannot write {self.out}: {exc}") from exc

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._temp is not None:
            self._temp.unlink(missing_ok=True)


class _VideoSink:
    def __init__(self, writer: VideoWriter) -> None:
        self.writer = writer

    def take(self, metas: list[FrameStamp], results: list[av.VideoFrame]) -> None:
        for meta, frame in zip(metas, results, strict=True):
            self.writer.write_frame(frame, meta.pts)

    def close(self) -> bytes | None:
        return self.writer.close()

    def abort(self) -> None:
        self.writer.abort()


def execute(
    pipeline: str,
    model: LoadedModel,
    source: Source,
    *,
    out: Path | None = None,
    batch: int = DEFAULT_BATCH,
    preset: str = "veryfast",
    encoder: str = "software",
    format: str | None = None,
    on_progress: ProgressCallback | None = None,
    options: Mapping[str, Any] | None = None,
) -> PipelineResult:
    """Run `pipeline` with a loaded model over every frame of `source` (blocking; use a thread).

    `options` are the pipeline's (see `inference.options`); they are checked before any decoding."""
    if pipeline not in PIPELINES:
        raise UnknownPipeline(f"unknown pipeline {pipeline!r}; use one of {', '.join(PIPELINES)}")
    parsed = parse_options(pipeline, options)
    started = time.perf_counter()
    with open_video(source, format=format, threads=decode_threads(model)) as (info, frames):
        prepare, steps, sink, size = _plan(pipeline, model, info, out, preset, encoder, parsed)
        stages, times = pipeline_stages(prepare, steps, batch)
        count, output, first = 0, None, None
        try:
            for metas, results in run_stages(in_background(frames), stages, times=times):
                writing = time.perf_counter()
                sink.take(metas, results)
                times.add("write", time.perf_counter() - writing)
                count += len(metas)
                first = metas[0].time if first is None else first
                if on_progress is not None:
                    seconds = metas[-1].time - first + float(1 / info.rate)
                    on_progress(Progress(count, seconds, info.duration))
            output = sink.close()
        except BaseException:
            sink.abort()
            raise
    detections = tuple(sink.found) if isinstance(sink, _DetectionSink) else ()
    return PipelineResult(
        pipeline=pipeline,
        model=model.manifest.name,
        provider=model.provider,
        frames=count,
        width=info.width,
        height=info.height,
        output_width=size[0],
        output_height=size[1],
        units=count * size[0] * size[1],
        wall_seconds=time.perf_counter() - started,
        detections=detections,
        video=output if isinstance(output, bytes) else None,
        out=out,
        stages=times.as_dict(),
    )


Step = Callable[[Any], Any]


def decode_threads(model: LoadedModel) -> int:
    """Decoder threads for a pipeline on `model`. On the CPU the model's intra-op threads want the
    cores, so the decoder gets the logical CPUs they leave, one thread when they take them all
    (FFmpeg's frame threads also cost more CPU per frame: 720p H.264, 6.6 ms against 5.7 on one
    thread). On a GPU the cores are the decoder's: FFmpeg's choice (0)."""
    if model.provider != CPU:
        return 0
    return max(1, len(usable_cpus()) - model.intra_op_threads)


def is_post(step: str) -> bool:
    """Whether a step of a pipeline runs no model (numpy work around one)."""
    return step == "post" or step.endswith(" post")


def pipeline_stages(
    prepare: Callable[[list[av.VideoFrame]], Any], steps: list[tuple[str, Step]], batch: int
) -> tuple[list[Callable[[Iterator[Any]], Iterator[Any]]], StageTimes]:
    """Thread stages after decoding: batch + prepare, then each model step; and their timer.

    Preparing and the post steps (`post`, `<net> post`: no model run in them) run in the
    background (see `inference.stages`): the steps that run the model keep the cores first. The
    caller's source of frames should be wrapped in `in_background` too."""
    stages = [
        background_stage(_batched(prepare, batch)),
        *(
            background_stage(_mapped(step)) if is_post(name) else _mapped(step)
            for name, step in steps
        ),
    ]
    return stages, StageTimes(["decode", "prepare", *(name for name, _ in steps)])


def _plan(
    pipeline: str,
    model: LoadedModel,
    info: VideoInfo,
    out: Path | None,
    preset: str,
    encoder: str,
    options: Mapping[str, Any] | None = None,
) -> tuple[Callable[[list[av.VideoFrame]], Any], list[tuple[str, Step]], _Sink, tuple[int, int]]:
    """The pipeline's prepare step, its model steps and its sink; every shape check happens here,
    before anything is written."""
    if pipeline in DETECTORS:
        detector = DETECTORS[pipeline](model, info.width, info.height)
        return detector.prepare, detector.steps(), _DetectionSink(out), (info.width, info.height)
    if pipeline in EFFECTS:
        effect = video_effect(pipeline, model, info.width, info.height, options)
        writer = VideoWriter(
            out, info.width, info.height, info.rate, info.time_base, preset=preset, encoder=encoder
        )
        return effect.prepare, effect.steps(), _VideoSink(writer), (info.width, info.height)
    imager = ImageModel(model, info.width, info.height, factor=2 if pipeline == "upscale" else 1)
    width, height = imager.output_size
    writer = VideoWriter(
        out, width, height, info.rate, info.time_base, preset=preset, encoder=encoder
    )
    return imager.prepare, imager.steps(), _VideoSink(writer), (width, height)


def _batched(
    prepare: Callable[[list[av.VideoFrame]], Any], size: int
) -> Callable[[Iterator[Frame]], Iterator[tuple[list[FrameStamp], Any]]]:
    """A stage that groups frames by `size` and prepares each group; pictures are dropped after."""

    def stage(frames: Iterator[Frame]) -> Iterator[tuple[list[FrameStamp], Any]]:
        group: list[Frame] = []
        for frame in frames:
            group.append(frame)
            if len(group) == size:
                yield [f.stamp() for f in group], prepare([f.picture for f in group])
                group = []
        if group:
            yield [f.stamp() for f in group], prepare([f.picture for f in group])

    return stage


def _mapped(infer: Callable[[Any], Any]) -> Callable[[Iterator[Any]], Iterator[Any]]:
    def stage(
        items: Iterator[tuple[list[FrameStamp], Any]],
    ) -> Iterator[tuple[list[FrameStamp], Any]]:
        for metas, prepared in items:
            yield metas, infer(prepared)

    return stage
