"""Live AI video: a live stream whose segments are inference jobs (style, matte, filter, upscale)
instead of a transcoding ladder. `LiveSession` (live) reads, sticks, fails over and publishes as
for transcoding; this module is what differs:

- each segment is an AI segment (ai_jobs) carrying the pipeline's options, paid with tickets and
  checked as a file's would be, plus a check that the picture really changed (ai_checks);
- the published segment is the AI video with the source segment's audio muxed back in;
- orchestrators are picked among those that can keep up: an offer states the fps each model
  reached on its own hardware at an inference size (`fps:` capabilities); scaled to this stream's
  inference size it must reach the stream's frame rate. Orchestrators that state nothing are
  tried after those that state enough; those that state too little (or that this session
  measured too slow) only when nobody else is left, with a warning once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from events.envelope import SignedEvent
from events.state import OfferState, State
from inference.errors import InferenceError
from media.remux import with_audio
from media.transcoder import Rendition, TranscodeResult
from node.gateway.ai_checks import check_changed
from node.gateway.ai_jobs import AiResult, AiSegment
from node.gateway.market import SegmentMarket
from node.gateway.selection import Candidate, Selector
from node.protocol import (
    VIDEO_PIPELINES,
    AiOutput,
    ai_capability,
    is_model_name,
    parse_ai_options,
    stated_fps,
)

log = logging.getLogger("castnet.live")
KEEP_UP_MARGIN = 1.1  # stated fps at the stream's size must beat its frame rate by 10%


class LiveAiError(ValueError):
    """A live AI request that cannot run: not a video pipeline, a bad model name or options."""


@dataclass(frozen=True, slots=True)
class LiveAi:
    """What every segment of a live AI stream asks for."""

    pipeline: str
    model: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def infer_size(self) -> tuple[int, int] | None:
        return _size(self.options)

    def describe(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        model = f"/{self.model}" if self.model else ""
        return f"{self.pipeline}{model}" + (f" ({opts})" if opts else "")


def live_ai(pipeline: str, model: str = "", options: Mapping[str, Any] | None = None) -> LiveAi:
    """A checked live AI request (LiveAiError): a pipeline that makes video, a model name, and
    options as inference.options takes them, local paths refused (the work runs elsewhere)."""
    if pipeline not in VIDEO_PIPELINES:
        raise LiveAiError(f"live AI needs a video pipeline ({', '.join(sorted(VIDEO_PIPELINES))})"
                          f", not {pipeline[:64]!r}")  # fmt: skip
    if model and not is_model_name(model):
        raise LiveAiError(f"model {model[:64]!r} is not a model name (letters, digits, . _ -)")
    try:
        parsed = parse_ai_options(pipeline, options or {}, allow_paths=False)
    except InferenceError as exc:
        raise LiveAiError(str(exc)) from None
    return LiveAi(pipeline, model, parsed)


@dataclass(slots=True)
class Demand:
    """What the stream asks of an orchestrator, known from its first segment: frames per second
    at an inference size."""

    fps: float = 0.0
    width: int = 0
    height: int = 0


class KeepUpSelector(Selector):
    """The gateway's selection (shared slots, latencies and suspensions) narrowed to the
    orchestrators that keep up with the stream."""

    def __init__(self, base: Selector, ai: LiveAi, demand: Demand) -> None:
        super().__init__(ai_capability(ai.pipeline, ai.model), base.max_price, base.suspend_s)
        self.local = base.local
        self.ai, self.demand = ai, demand
        self.slow: set[bytes] = set()  # this session measured them slower than real time
        self._warned = False

    def keeps_up(self, address: bytes, offer: OfferState) -> bool | None:
        """True/False from the offer's stated fps (and this session's measurements); None when
        the offer states nothing for the pipeline."""
        if address in self.slow:
            return False
        stated = stated_fps(offer.capabilities, self.ai.pipeline, self.ai.model)
        if stated is None or not self.demand.fps:
            return None
        expected = stated.at(self.demand.width, self.demand.height)
        return expected >= self.demand.fps * KEEP_UP_MARGIN

    def candidates(
        self, state: State, now: float, exclude: frozenset[bytes] = frozenset()
    ) -> list[Candidate]:
        found = super().candidates(state, now, exclude)
        verdicts = {c.address: self.keeps_up(c.address, c.offer) for c in found}
        keeping = [c for c in found if verdicts[c.address]]
        unknown = [c for c in found if verdicts[c.address] is None]
        if keeping or unknown:
            return keeping + unknown
        # nobody free keeps up: wait for one that does if it is only busy, else take the best
        suspended = set(self.suspended(now))
        waiting = [a for a, o in state.offers.items()
                   if a not in exclude and a not in suspended and self.capability in o.capabilities
                   and self.affordable(o) and self.keeps_up(a, o) is not False]  # fmt: skip
        if waiting:
            return []
        if found and not self._warned:
            self._warned = True
            log.warning("no orchestrator states it keeps up with %s at %.1f fps (%dx%d); the "
                        "stream runs on the best one and may fall behind", self.ai.describe(),
                        self.demand.fps, self.demand.width, self.demand.height)  # fmt: skip
        return found


def install_selector(gateway: SegmentMarket, key: str, selector: Selector | None) -> None:
    """Make `selector` the one the market uses for work whose capability is `key` (a session's
    own key, so its narrowing touches no other job); None removes it when the session ends."""
    if selector is None:
        gateway._selectors.pop(key, None)
    else:
        gateway._selectors[key] = selector


@dataclass(slots=True)
class LiveAiSegment(AiSegment):
    """One live segment as an AI job (its spec carries the options, as a file's); the check adds
    "the picture changed"; the session publishes it with its audio (`rendition`)."""

    demand: Demand | None = None
    key: str = ""  # the session's selector key (install_selector)

    def __post_init__(self) -> None:
        AiSegment.__post_init__(self)
        if self.key:
            self.capability = self.key

    async def prepare(self) -> Any:
        posted = await AiSegment.prepare(self)
        if self.demand is not None and not self.demand.fps:
            size = _size(self.options) or (self.width, self.height)
            self.demand.fps, (self.demand.width, self.demand.height) = float(self.rate), size
        return posted

    def check(
        self, result: SignedEvent, orch: bytes, job_id: bytes, outputs: AiOutput
    ) -> list[str]:
        problems = AiSegment.check(self, result, orch, job_id, outputs)
        return problems or check_changed(outputs.data, self.data, self.pipeline)

    def rendition(self, result: AiResult) -> TranscodeResult:
        """The verified video with the segment's audio, as the live output takes it (blocking:
        call from a thread)."""
        video = result.video
        assert video is not None
        data = with_audio(video.data, self.data) if self.seg.has_audio else video.data
        muxed = Rendition(video.name, video.codec, video.encoder, video.width, video.height,
                          video.frame_count, video.start_pts, video.duration, video.frame_rate,
                          video.bitrate, self.seg.has_audio, data)  # fmt: skip
        return TranscodeResult((muxed,), self.width, self.height, video.frame_count,
                               video.start_pts, video.duration, 0.0)  # fmt: skip


def _size(options: Mapping[str, Any]) -> tuple[int, int] | None:
    text = options.get("infer_size")
    if not isinstance(text, str) or "x" not in text:
        return None
    width, height = text.split("x")
    return int(width), int(height)
