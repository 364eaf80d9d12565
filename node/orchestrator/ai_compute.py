"""The orchestrator's inference (inference/ on one engine with its warm-model cache): the offer's
capabilities (`ai:<pipeline>[/<model>][:warm]` for the installed models), the plan of an AI segment
(model, output size, frame and pixel limits: what the fee is checked against) and its run, with the
output the gateway checks: detections as JSON lines, or the processed video as MPEG-TS. Every
method blocks: call them from a thread."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from fractions import Fraction

from inference.engine import InferenceConfig, InferenceEngine
from inference.errors import InferenceError
from inference.manifest import PIPELINE_KINDS
from media.errors import MediaError
from media.source import MAX_PIXELS, probe
from node.protocol import (
    BAD_REQUEST,
    DETECTIONS,
    FAILED,
    MAX_AI_FRAMES,
    MAX_BOXES,
    VIDEO,
    VIDEO_PIPELINES,
    AiOutput,
    AiSpec,
    Refused,
    ai_capability,
    ai_output_size,
    is_model_name,
)

log = logging.getLogger("castnet.orchestrator")
MAX_AI_CAPABILITIES = 200  # an Offer lists at most 256 capabilities in all


@dataclass(frozen=True, slots=True)
class AiPlan:
    """What an AI segment will be: the model that runs it, its frames and output frame size."""

    spec: AiSpec
    model: str
    frames: int  # estimated from the segment's duration and rate, as for transcoding
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.frames * self.width * self.height


class AiCompute:
    """Inference for one orchestrator; `fault` injects a lie for tests: "bad-detections" (a box
    outside the frame), "empty-detections" (no model run: nothing found), "unprocessed" (no model
    run: the input handed back as the output video)."""

    def __init__(self, config: InferenceConfig, *, required: bool = False, fault: str = ""):
        self.config = config
        self.required = required  # configured explicitly: failing to start is an error
        self.fault = fault
        self.engine: InferenceEngine | None = None
        self.reason = "inference has not started"

    def start(self) -> None:
        """Create the engine (provider choice, model registry); without one, offer no AI."""
        try:
            self.engine = InferenceEngine(self.config)
        except InferenceError as exc:
            if self.required:
                raise
            self.reason = f"inference is unavailable: {exc}"
            log.warning("this orchestrator offers no AI pipelines: %s", exc)

    def capabilities(self) -> tuple[str, ...]:
        """`ai:<pipeline>` for each pipeline with an installed model (run by its default model),
        `ai:<pipeline>/<model>` for each installed model, each also with `:warm` when loaded."""
        if self.engine is None:
            return ()
        caps: list[str] = []
        installed = self.engine.available()
        for kind in PIPELINE_KINDS:
            models = [m for m in installed if m.kind == kind and is_model_name(m.name)]
            if not models:
                continue
            caps.append(ai_capability(kind))  # the registry runs the first installed one
            if models[0].warm:
                caps.append(ai_capability(kind, warm=True))
            for m in models:
                caps.append(ai_capability(kind, m.name))
                if m.warm:
                    caps.append(ai_capability(kind, m.name, warm=True))
        return tuple(caps[:MAX_AI_CAPABILITIES])

    def plan(self, spec: AiSpec, segment: bytes) -> AiPlan:
        """Check the ask against what this node has and what the segment is; Refused if not."""
        engine = self.engine
        if engine is None:
            raise Refused(BAD_REQUEST, self.reason)
        if spec.pipeline not in PIPELINE_KINDS:
            raise Refused(BAD_REQUEST, f"unknown pipeline {spec.pipeline!r}; this node runs "
                          f"{', '.join(PIPELINE_KINDS)}")  # fmt: skip
        try:
            if spec.model:
                manifest = engine.registry.get(spec.model)  # a name, never a path
                if manifest.kind != spec.pipeline:
                    raise Refused(BAD_REQUEST, f"model {spec.model!r} is for {manifest.kind}, "
                                  f"not {spec.pipeline}")  # fmt: skip
            else:
                manifest = engine.resolve(spec.pipeline)
        except InferenceError as exc:
            raise Refused(BAD_REQUEST, str(exc)) from None
        if not manifest.installed:
            raise Refused(BAD_REQUEST, f"model {manifest.name!r} is not installed here")
        try:
            info = probe(segment)
        except MediaError as exc:
            raise Refused(BAD_REQUEST, f"bad segment: {exc}") from None
        duration = Fraction(info.duration or 0.0).limit_denominator(10_000)
        frames = max(1, round(duration * info.rate))
        if frames > MAX_AI_FRAMES:
            raise Refused(BAD_REQUEST, f"a segment of {frames} frames; at most {MAX_AI_FRAMES}")
        width, height = ai_output_size(spec.pipeline, info.width, info.height)
        if width * height > MAX_PIXELS:
            raise Refused(BAD_REQUEST, f"{spec.pipeline} would make {width}x{height} frames")
        return AiPlan(spec, manifest.name, frames, width, height)

    def run(self, plan: AiPlan, segment: bytes) -> AiOutput:
        """Run the pipeline over the segment; Refused(FAILED) when inference fails."""
        assert self.engine is not None
        pipeline = plan.spec.pipeline
        try:
            result = self.engine.run_pipeline(pipeline, segment, model=plan.model)
        except InferenceError as exc:
            raise Refused(FAILED, f"{pipeline} failed: {exc}") from None
        if result.frames > MAX_AI_FRAMES:
            raise Refused(FAILED, f"the segment decoded to {result.frames} frames")
        if pipeline in VIDEO_PIPELINES:
            kind, data = VIDEO, result.video or b""
            if self.fault == "unprocessed":
                data = segment
        else:
            kind = DETECTIONS
            lines = []
            for found in result.detections:
                line = found.as_json()
                line["boxes"] = line["boxes"][:MAX_BOXES]  # best first
                lines.append(line)
            if self.fault == "bad-detections":  # a lying detector: a box off every frame
                for line in lines:
                    line["boxes"].append({"box": [-40.0, -40.0, -8.0, -8.0], "score": 0.99})
            if self.fault == "empty-detections":  # well-formed, and nothing in it
                for line in lines:
                    line["boxes"] = []
            data = b"".join(json.dumps(x, separators=(",", ":")).encode() + b"\n" for x in lines)
        return AiOutput(kind, result.model, result.frames, result.output_width,
                        result.output_height, data)  # fmt: skip
