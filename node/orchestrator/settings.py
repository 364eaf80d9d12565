"""The orchestrator's settings (price, concurrency, ticket terms, fault injection), its
counters, what this machine can encode, and the dishonest result the "wrong-renditions" fault
returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from inference.config import InferenceConfig
from media.encoders import HARDWARE, SOFTWARE, encoder_works
from media.transcoder import TranscodeResult


@dataclass(frozen=True, slots=True)
class OrchestratorConfig:
    """Price (wei per output pixel), concurrency and the ticket terms this orchestrator quotes."""

    price_per_pixel: Fraction
    capacity: int = 2
    ticket_ev: Fraction = Fraction(2 * 10**10)  # ~ the fee of 20 Mpixel at 1000 wei/pixel
    redeem_gas: int = 100_000
    tx_cost_multiplier: int = 100
    ev_multiplier: int = 3  # face value = 3 x EV when gas is free: one ticket in 3 wins
    validity_blocks: int = 5
    offer_interval_s: float = 30.0
    encoder: str = "software"
    # fault injection for tests and demos: "" | "wrong-renditions" | "die-mid-job" |
    # "inflate-pixels" (signs for twice its pixels) | "wrong-job" (signs for another job id) |
    # "starve-after-2" (honest on its first 2 segments, then every rung at the lowest bitrate:
    # right sizes, frames and timestamps, wrong pictures) |
    # AI: "bad-detections" (a box outside every frame), "empty-detections", "unprocessed"
    fault: str = ""
    # remote workers (`castnet worker`): peer ids allowed to attach, or any
    workers: tuple[str, ...] = ()
    allow_any_worker: bool = False
    worker_timeout_s: float = 120.0
    # inference (`/castnet/ai/1`): provider, models folder, warm-model budget; ai=False offers none
    ai: bool = True
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    # models loaded at start and their fps measured here, stated in the first offer:
    # "pipeline[/model]@WxH" (the inference size), e.g. "style@320x180"
    ai_warm: tuple[str, ...] = ()


def capabilities() -> tuple[str, ...]:
    """What this machine can really encode: `transcode:<codec>`, plus `:hw` for NVENC."""
    caps = [f"transcode:{c}" for c, name in SOFTWARE.items() if encoder_works(name)]
    for codec, names in HARDWARE.items():
        if any(encoder_works(n) for n in names):
            caps.append(f"transcode:{codec}:hw")
    return tuple(caps)


@dataclass(slots=True)
class OrchestratorStats:
    jobs: int = 0
    refused: int = 0
    busy: int = 0
    tickets: int = 0
    won: int = 0
    redeemed: int = 0
    redeemed_wei: int = 0
    worker_segments: int = 0  # computed by an attached worker
    local_segments: int = 0  # computed in this process
    worker_failures: int = 0  # a worker failed mid-segment; finished in-process
    ai_segments: int = 0  # inference segments (in-process)


def swap_renditions(result: TranscodeResult) -> TranscodeResult:
    """A dishonest result: each rendition's bytes claimed as another rung (or half of them)."""
    rs = result.renditions
    if len(rs) >= 2:
        datas = [r.data for r in rs[1:]] + [rs[0].data]
    else:
        datas = [rs[0].data[: len(rs[0].data) // 2]]
    swapped = tuple(
        type(r)(**{**{f: getattr(r, f) for f in r.__dataclass_fields__}, "data": d})
        for r, d in zip(rs, datas, strict=True)
    )
    return TranscodeResult(swapped, result.source_width, result.source_height,
                           result.source_frames, result.start_pts, result.duration,
                           result.wall_seconds)  # fmt: skip
