"""The orchestrator's inference (inference/ on one engine with its warm-model cache): the offer's
capabilities (`ai:<pipeline>[/<model>][:warm]` for the installed models, and `fps:...` for the
frame rate each warm model reached here, so that a gateway does not hand a live stream to a node
that cannot keep up), the plan of an AI segment (model, options checked by inference.options with
no local paths, output size, frame and pixel limits: what the fee is checked against) and its run,
with the output the gateway checks: detections as JSON lines, or the processed video as MPEG-TS.
Every method blocks: call them from a thread."""

from __future__ import annotations

import json
import logging
import statistics
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from inference.engine import InferenceConfig, InferenceEngine
from inference.errors import InferenceError
from inference.manifest import PIPELINE_KINDS, STYLE_NAMES
from inference.speed import measure_fps
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
    StatedFps,
    ai_capability,
    ai_output_size,
    is_model_name,
    parse_ai_options,
)

log = logging.getLogger("castnet.orchestrator")
MAX_AI_CAPABILITIES = 200  # an Offer lists at most 256 capabilities in all
FPS_RUNS = 5  # the stated fps is the median of the last few runs of a model
FPS_CHANGE = 0.2  # a new median this far from the stated fps is stated anew (a new offer)


@dataclass(frozen=True, slots=True)
class AiPlan:
    """What an AI segment will be: the model that runs it, its frames and output frame size."""

    spec: AiSpec
    model: str
    frames: int  # estimated from the segment's duration and rate, as for transcoding
    width: int
    height: int
    options: Mapping[str, Any] = field(default_factory=dict)  # checked: inference.options
    default_model: bool = True  # the model runs `spec.pipeline` when no model is named

    @property
    def pixels(self) -> int:
        return self.frames * self.width * self.height


class AiCompute:
    """Inference for one orchestrator; `fault` injects a lie for tests: "bad-detections" (a box
    outside the frame), "empty-detections" (no model run: nothing found), "unprocessed" (no model
    run: the input handed back as the output video), "other-style" (style segments run with
    another style than the one asked for)."""

    def __init__(self, config: InferenceConfig, *, required: bool = False, fault: str = ""):
        self.config = config
        self.required = required  # configured explicitly: failing to start is an error
        self.fault = fault
        self.engine: InferenceEngine | None = None
        self.reason = "inference has not started"
        self._runs: dict[tuple[str, str], list[tuple[float, int, int]]] = {}
        self._stated: dict[tuple[str, str], StatedFps] = {}
        self._lock = threading.Lock()  # runs finish on several threads

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
        with self._lock:
            caps += sorted(stated.capability() for stated in self._stated.values())
        return tuple(caps[:MAX_AI_CAPABILITIES])

    def warm_up(self, entries: tuple[str, ...]) -> None:
        """Load each `pipeline[/model]@WxH` model now and measure its fps at that inference size
        (inference.speed), so the first offer already says how fast this node is; an entry that
        cannot be warmed is logged and skipped."""
        engine = self.engine
        if engine is None:
            return
        for entry in entries:
            try:
                what, _, size = entry.partition("@")
                pipeline, _, model = what.partition("/")
                width, height = (int(v) for v in size.split("x"))
                options = parse_ai_options(pipeline, {})
                manifest = engine.resolve(pipeline, model or None)
                default = engine.resolve(pipeline).name == manifest.name
                fps = measure_fps(engine.cache.get(manifest), pipeline, width, height, options)
            except (InferenceError, ValueError) as exc:
                log.warning("cannot warm up %r: %s", entry, exc)
                continue
            with self._lock:
                self._stated[(pipeline, manifest.name)] = StatedFps(
                    pipeline, manifest.name, fps, width, height
                )
                if default:
                    self._stated[(pipeline, "")] = StatedFps(pipeline, "", fps, width, height)
            log.info("warmed %s (%s): %.1f fps at %dx%d", pipeline, manifest.name, fps, width,
                     height)  # fmt: skip

    def stated(self) -> list[StatedFps]:
        """The frame rates this node states in its offer, per pipeline and model."""
        with self._lock:
            return list(self._stated.values())

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
            default = engine.resolve(spec.pipeline).name == manifest.name
            # options come from a peer: never a path on this machine
            options = parse_ai_options(spec.pipeline, spec.options, allow_paths=False)
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
        return AiPlan(spec, manifest.name, frames, width, height, options, default)

    def run(self, plan: AiPlan, segment: bytes) -> AiOutput:
        """Run the pipeline over the segment; Refused(FAILED) when inference fails."""
        assert self.engine is not None
        pipeline = plan.spec.pipeline
        options = dict(plan.options)
        if self.fault == "other-style" and pipeline == "style":  # another style
            asked = options.get("style")
            options = {key: value for key, value in options.items() if key == "infer_size"}
            options["style"] = next(name for name in STYLE_NAMES if name != asked)
        try:
            result = self.engine.run_pipeline(pipeline, segment, model=plan.model, options=options)
        except InferenceError as exc:
            raise Refused(FAILED, f"{pipeline} failed: {exc}") from None
        if result.frames > MAX_AI_FRAMES:
            raise Refused(FAILED, f"the segment decoded to {result.frames} frames")
        self._measured(plan, result.fps, result.width, result.height)
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

    def _measured(self, plan: AiPlan, fps: float, width: int, height: int) -> None:
        """Keep what a run reached (at its inference size) for the offer, under the model's name
        and, for the pipeline's default model, under the pipeline alone; the stated rate moves
        only when the median of the last runs moves by FPS_CHANGE, so offers stay few."""
        if fps <= 0:
            return
        size = plan.options.get("infer_size")
        if isinstance(size, str) and "x" in size:
            width, height = (int(v) for v in size.split("x"))
        names = [plan.model, ""] if plan.default_model else [plan.model]
        with self._lock:
            for model in names:
                key = (plan.spec.pipeline, model)
                runs = [r for r in self._runs.get(key, []) if r[1:] == (width, height)]
                runs = self._runs[key] = [*runs[-(FPS_RUNS - 1) :], (fps, width, height)]
                median = statistics.median(r[0] for r in runs)
                old = self._stated.get(key)
                if (
                    old is None
                    or (old.width, old.height) != (width, height)
                    or abs(median - old.fps) > FPS_CHANGE * max(old.fps, 0.1)
                ):
                    self._stated[key] = StatedFps(key[0], model, median, width, height)
