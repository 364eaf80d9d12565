"""The gateway's job market vocabulary: its settings (GatewayConfig), what a segment's work must
provide to be run by the market (SegmentWork, SampledWork), and what a segment and a job report
(SegmentOutcome, JobReport)."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from events import kinds as k
from events.envelope import SignedEvent
from node.protocol import SUMMARY_EVERY_S

# the URL schemes a live input may use (api.live_schemes narrows them; node.gateway.live checks)
LIVE_SCHEMES = ("tcp", "udp", "rtmp", "rtmps", "srt", "http", "https")


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    profiles: str = "360p,240p"
    preset: str = "veryfast"
    max_price_per_pixel: Fraction = Fraction(10**6)
    job_timeout_s: float = 120.0
    suspend_s: float = 300.0
    max_ev: Fraction = Fraction(10**15)
    max_total_ev: Fraction = Fraction(10**17)
    fee_margin: Fraction = Fraction(11, 10)  # pay ahead for the estimate plus 10%
    # AI outputs recomputed on a few random frames: this share of segments, plus each
    # orchestrator's first (node.gateway.ai_recheck); models beyond the packaged ones come from
    # ai_models_dir
    ai_recheck: float = 0.25
    ai_models_dir: Path | None = None
    # transcoded segments decoded and scored in full: "all", or "sample" (every segment gets the
    # cheap checks; each orchestrator's first segments, every segment after a failed check, and
    # this share of the rest get the full one: node.gateway.verify_policy)
    verify: str = "sample"
    verify_fraction: Fraction = Fraction(1, 8)
    summary_interval_s: float = SUMMARY_EVERY_S  # verdicts summarized network-wide this often


@dataclass(slots=True)
class SegmentOutcome:
    seq: int
    orchestrator: bytes = b""
    attempts: int = 0
    expired: int = 0  # tries whose ticket params expired on the way (not counted as attempts)
    redials: int = 0  # tries that lost the connection before the quote (not counted either)
    latency_s: float = 0.0
    fee_wei: Fraction = Fraction(0)
    errors: list[str] = field(default_factory=list)
    result: Any = None  # what the work's `accept` made: a TranscodeResult, an AiResult
    full_check: bool = True  # False: the result passed only the cheap checks (verify "sample")


@dataclass(slots=True)
class JobReport:
    out: Path
    segments: list[SegmentOutcome]
    tickets_sent: int = 0
    ticket_ev_sent: Fraction = Fraction(0)
    wall_s: float = 0.0

    @property
    def completed(self) -> int:
        return sum(s.result is not None for s in self.segments)

    @property
    def failed(self) -> int:
        return len(self.segments) - self.completed

    @property
    def fees_wei(self) -> Fraction:
        return sum((s.fee_wei for s in self.segments), Fraction(0))


class SegmentWork(Protocol):
    """One segment's work as the market runs it: what it posts and asks for, and how it reads and
    checks what comes back. `pixels` (the fee's basis) is known once `prepare` has run."""

    seq: int
    data: bytes  # the segment, sent as a blob after the request
    capability: str  # an Offer capability the orchestrator must list
    warm: str  # a capability that marks an orchestrator ready at once ("" when none)
    protocol: str  # the libp2p protocol of the request
    request_kind: int
    done_kind: int
    pixels: int

    async def prepare(self) -> k.JobPosted:
        """Measure the segment (in a thread) and say what to post (the market sets the price
        cap); raises on a bad segment."""
        ...

    def spec_wire(self, job_id: bytes) -> list[Any]: ...

    def outputs(self, metas: list[Any], blobs: list[bytes]) -> Any:
        """The outputs from their metadata and bytes; ProtocolError when malformed."""
        ...

    def check(self, result: SignedEvent, orch: bytes, job_id: bytes, outputs: Any) -> list[str]:
        """Every reason to reject the outputs (blocking: decodes them)."""
        ...

    def accept(self, outputs: Any) -> Any:
        """What the outcome keeps of verified outputs."""
        ...


@runtime_checkable
class SampledWork(Protocol):
    """Work whose full check is sampled (node.gateway.verify_policy): it has a cheap one too."""

    def check_cheap(
        self, result: SignedEvent, orch: bytes, job_id: bytes, outputs: Any
    ) -> list[str]:
        """Every reason to reject the outputs that needs no decoding (blocking: reads them)."""
        ...
