"""Inference jobs on the network (`POST /v1/ai/{pipeline}`): the input is segmented, each segment
runs as paid market work (market: selection, tickets, verdicts, retries) on an orchestrator
whose offer lists the pipeline (and model), every output is checked against its segment
(ai_checks), and the outputs are written in order under `out`: `detections.jsonl` (one line
per frame with its absolute frame number and pts) for detect-faces/detect-text, or the processed
video as HLS (`master.m3u8`, `<pipeline>/index.m3u8`) for filter/upscale/style/matte. The
pipeline's options (style, blend, background, infer_size: inference.options) travel with every
segment's spec, and a rechecked segment is recomputed with them."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import trio

from events import kinds as k
from events.crypto import keccak256
from events.envelope import SignedEvent
from inference.errors import InferenceError
from inference.manifest import PIPELINE_KINDS
from media.errors import OutputError
from media.hls import VodOutput
from media.segmenter import Segment, segment
from media.transcoder import Rendition, TranscodeResult
from media.verify import scan_source
from node.gateway.ai_checks import check_output, parse_detections
from node.gateway.ai_recheck import AiRechecker, RecheckTarget
from node.gateway.journal import SegmentJournal
from node.gateway.market import result_problems
from node.gateway.role import Gateway, GatewayError, ProgressFn
from node.gateway.work import JobReport, SegmentOutcome
from node.protocol import (
    AI_DONE,
    AI_PROTOCOL,
    AI_REQUEST,
    DETECTIONS_FILE,
    VIDEO_PIPELINES,
    AiOutput,
    AiSpec,
    ai_capability,
    ai_output_size,
    is_model_name,
    parse_ai_options,
)
from p2p.errors import ProtocolError


class AiJobError(GatewayError):
    """An AI job cannot run (unknown pipeline, nobody offers it) or did not complete."""


@dataclass(frozen=True, slots=True)
class AiResult:
    """A verified AI segment: its detection lines (frame numbers within the segment) or its
    video."""

    seq: int
    frames: int
    lines: tuple[dict[str, Any], ...] = ()
    video: Rendition | None = None


def check_request(pipeline: str, model: str = "") -> None:
    """Refuse an unknown pipeline or a model that is not a plain name (AiJobError)."""
    if pipeline not in PIPELINE_KINDS:
        raise AiJobError(f"unknown AI pipeline {pipeline[:64]!r}; pipelines: "
                         f"{', '.join(PIPELINE_KINDS)}")  # fmt: skip
    if model and not is_model_name(model):
        raise AiJobError(f"model {model[:64]!r} is not a model name (letters, digits, . _ -)")


def check_options(pipeline: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """`pipeline`'s options checked and normalised for the network (AiJobError when bad): the
    work runs on another machine, so a local image path is refused."""
    try:
        return parse_ai_options(pipeline, dict(options or {}), allow_paths=False)
    except InferenceError as exc:
        raise AiJobError(str(exc)) from None


def parse_blend(text: str) -> dict[str, float]:
    """A blend written as text, `mosaic=0.7,starry=0.3` (a name alone weighs 1), as the mapping
    inference.options takes (ValueError when a weight is not a number)."""
    weights: dict[str, float] = {}
    for item in text.split(","):
        name, sep, weight = item.partition("=")
        try:
            weights[name.strip()] = float(weight) if sep else 1.0
        except ValueError:
            raise ValueError(f"blend weight {weight[:64]!r} of {name.strip()[:64]!r} is not a "
                             "number") from None  # fmt: skip
    return weights


async def run_ai_file(
    gateway: Gateway,
    pipeline: str,
    source: str | Path,
    out: Path,
    model: str = "",
    on_progress: ProgressFn | None = None,
    journal: SegmentJournal | None = None,
    options: Mapping[str, Any] | None = None,
) -> JobReport:
    """Run `pipeline` (with `model`, or each orchestrator's default, and the pipeline's
    `options`) over `source` on the network; the outputs land in `out`. AiJobError when the
    options are bad, nobody offers it or a segment failed. With a `journal`, segments verified
    before a restart are not run again."""
    started = time.perf_counter()
    check_request(pipeline, model)
    parsed = check_options(pipeline, options)
    capability = ai_capability(pipeline, model)
    state = await gateway.view.refresh()
    if not any(capability in o.capabilities for o in state.offers.values()):
        what = f"{pipeline} with model {model!r}" if model else pipeline
        raise AiJobError(f"no orchestrator offers {what} ({len(state.offers)} offers known)")
    segments = await trio.to_thread.run_sync(lambda: list(segment(source)))
    if not segments:
        raise AiJobError(f"{source}: no segments")
    report = JobReport(out, [SegmentOutcome(s.seq) for s in segments])
    works = [AiSegment(s, pipeline, model, recheck=gateway.ai_rechecker, options=parsed)
             for s in segments]  # fmt: skip
    output = _VideoOutput(out) if pipeline in VIDEO_PIPELINES else _DetectionsOutput(out)
    try:
        try:
            await gateway.run_works(works, report, output.add, on_progress, journal)
        except GatewayError as exc:
            raise AiJobError(f"{pipeline}: {exc}") from None
        await trio.to_thread.run_sync(output.commit)
    finally:
        output.discard()
    report.wall_s = time.perf_counter() - started
    return report


@dataclass(slots=True)
class AiSegment:
    """One segment's inference as market work (node.gateway.work.SegmentWork)."""

    seg: Segment
    pipeline: str
    model: str = ""
    keys: list[int] = field(default_factory=list)  # the segment's frame timestamps, 90 kHz
    width: int = 0
    height: int = 0
    rate: Fraction = Fraction(30)
    pixels: int = 0
    recheck: AiRechecker | None = None
    options: Mapping[str, Any] = field(default_factory=dict)  # checked: check_options
    protocol: str = AI_PROTOCOL
    request_kind: int = AI_REQUEST
    done_kind: int = AI_DONE
    seq: int = field(init=False)
    data: bytes = field(init=False)
    capability: str = field(init=False)
    warm: str = field(init=False)

    def __post_init__(self) -> None:
        self.seq, self.data = self.seg.seq, self.seg.data
        self.capability = ai_capability(self.pipeline, self.model)
        self.warm = ai_capability(self.pipeline, self.model, warm=True)

    async def prepare(self) -> k.JobPosted:
        src = await trio.to_thread.run_sync(scan_source, self.seg.data, None, {})
        self.keys, self.width, self.height = src.keys, src.width, src.height
        self.rate = 1 / src.frame_duration
        out_width, out_height = ai_output_size(self.pipeline, src.width, src.height)
        self.pixels = len(self.keys) * out_width * out_height
        labels = (self.model,) if self.model else ()
        return k.JobPosted(self.pipeline, keccak256(self.data), len(self.data),
                           round(float(self.seg.duration) * 1000), labels, 0, 1, ())  # fmt: skip

    def spec_wire(self, job_id: bytes) -> list[Any]:
        return AiSpec(job_id, self.pipeline, self.model, dict(self.options)).to_wire()

    def outputs(self, metas: list[Any], blobs: list[bytes]) -> AiOutput:
        if len(metas) != 1:
            raise ProtocolError("an AI result holds one output")
        return AiOutput.from_wire(metas[0], blobs[0])

    def check(
        self, result: SignedEvent, orch: bytes, job_id: bytes, outputs: AiOutput
    ) -> list[str]:
        out_width, out_height = ai_output_size(self.pipeline, self.width, self.height)
        pixels = len(self.keys) * out_width * out_height
        problems = result_problems(result, orch, job_id, pixels) + check_output(
            outputs, self.pipeline, self.model, self.keys, self.width, self.height
        )
        if not problems and self.recheck is not None and self.recheck.wanted(orch):
            target = RecheckTarget(self.pipeline, self.data, self.keys, self.width, self.height,
                                   self.options)  # fmt: skip
            problems = self.recheck.check(target, outputs)
        return problems

    def accept(self, outputs: AiOutput) -> AiResult:
        frames = len(self.keys)
        if self.pipeline not in VIDEO_PIPELINES:
            lines = parse_detections(outputs.data, self.keys, self.width, self.height)
            return AiResult(self.seq, frames, tuple(lines))
        duration = self.seg.duration
        video = Rendition(self.pipeline, "h264", "", outputs.width & ~1, outputs.height & ~1,
                          frames, self.seg.start_pts, duration, self.rate,
                          round(len(outputs.data) * 8 / duration), False, outputs.data)  # fmt: skip
        return AiResult(self.seq, frames, video=video)


class _DetectionsOutput:
    """`detections.jsonl` in a staging folder renamed to `out` when complete; frames are numbered
    across segments as segments are added in order."""

    def __init__(self, out: Path) -> None:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise OutputError(f"{out} exists and is not an empty folder")
        out.parent.mkdir(parents=True, exist_ok=True)
        self.out = out
        self.staging = out.parent / f".{out.name}.partial-{secrets.token_hex(4)}"
        self.staging.mkdir()
        self.frames = 0
        self._file = open(self.staging / DETECTIONS_FILE, "w")  # noqa: SIM115 - closed in commit

    def add(self, seq: int, result: AiResult) -> None:
        for line in result.lines:
            numbered = {**line, "frame": self.frames + line["frame"]}
            self._file.write(json.dumps(numbered, separators=(",", ":")) + "\n")
        self.frames += result.frames

    def commit(self) -> None:
        self._file.close()
        os.replace(self.staging, self.out)

    def discard(self) -> None:
        self._file.close()
        shutil.rmtree(self.staging, ignore_errors=True)


class _VideoOutput:
    """The processed video as a one-rendition VOD HLS tree (media.hls)."""

    def __init__(self, out: Path) -> None:
        self.vod = VodOutput(out)

    def add(self, seq: int, result: AiResult) -> None:
        assert result.video is not None
        video = result.video
        self.vod.add(seq, TranscodeResult((video,), 0, 0, video.frame_count, video.start_pts,
                                          video.duration, 0.0))  # fmt: skip

    def commit(self) -> None:
        self.vod.commit()

    def discard(self) -> None:
        self.vod.discard()
