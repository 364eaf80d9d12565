"""Wire messages of the job market: `/castnet/quote/1` (price and fresh ticket params, like
Livepeer's GetOrchestratorInfo), `/castnet/job/1` (segment + spec + tickets up, renditions +
signed JobResult down) and `/castnet/ai/1` (segment + pipeline/model + tickets up, detections or
a video + signed JobResult down). Positional msgpack arrays with an int kind first; integers that
may exceed 64 bits travel as 32-byte big-endian bytes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import msgpack

from inference.manifest import VIDEO_KINDS
from inference.options import parse_options
from media.profiles import Profile, plan_ladder
from media.transcoder import Rendition
from p2p.errors import ProtocolError
from payments.errors import PaymentError
from payments.params import TicketParams
from payments.ticket import SignedTicket, Ticket

QUOTE_PROTOCOL = "/castnet/quote/1"
JOB_PROTOCOL = "/castnet/job/1"
AI_PROTOCOL = "/castnet/ai/1"
# a job's result fetched again by the gateway that sent it (node.orchestrator.results)
RESULT_PROTOCOL = "/castnet/result/1"
VERSION = 1

QUOTE_REQUEST, QUOTE, JOB_REQUEST, JOB_DONE, AI_REQUEST, AI_DONE, REFUSED = 1, 2, 3, 4, 5, 6, 9
RESULT_REQUEST = 7  # [RESULT_REQUEST, VERSION, job_id]: answered as the job was (DONE + blobs)

# Why an orchestrator refuses; the gateway treats BUSY as "try elsewhere" without blame.
BUSY = "busy"
PAYMENT = "payment"
# the tickets' params expired before the orchestrator took them (a slow hop, a fast chain): none
# were taken, and nobody is at fault; the gateway asks again with fresh params
EXPIRED = "params-expired"
BALANCE = "insufficient-balance"
BAD_REQUEST = "bad-request"
FAILED = "failed"
REASSIGNED = "reassigned"
UNKNOWN = "unknown-job"  # no result kept for that job (for that peer)
REFUSAL_CODES = frozenset({BUSY, PAYMENT, BALANCE, BAD_REQUEST, FAILED, REASSIGNED, UNKNOWN})


class Refused(Exception):
    """The other side said no, with a code from REFUSAL_CODES and a human reason."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


def u256(value: int) -> bytes:
    return value.to_bytes(32, "big")


def from_u256(value: Any) -> int:
    if type(value) is not bytes or len(value) != 32:
        raise ProtocolError("a uint256 travels as 32 bytes")
    return int.from_bytes(value, "big")


def _int(value: Any, name: str) -> int:
    if type(value) is not int or value < 0:
        raise ProtocolError(f"{name} must be a non-negative int")
    return value


def _bytes(value: Any, name: str, size: int | None = None) -> bytes:
    if type(value) is not bytes or (size is not None and len(value) != size):
        raise ProtocolError(f"{name} must be {size or 'some'} bytes")
    return value


def _fraction(items: Any, name: str) -> Fraction:
    if not isinstance(items, list) or len(items) != 2:
        raise ProtocolError(f"{name} is [numerator, denominator]")
    num, den = from_u256(items[0]), from_u256(items[1])
    if den == 0:
        raise ProtocolError(f"{name} has a zero denominator")
    return Fraction(num, den)


def fraction_wire(value: Fraction) -> list[bytes]:
    return [u256(value.numerator), u256(value.denominator)]


# -- ticket params and tickets ---------------------------------------------------------------


def params_to_wire(p: TicketParams) -> list[Any]:
    return [
        p.recipient,
        u256(p.face_value),
        u256(p.win_prob),
        p.recipient_rand_hash,
        p.seed,
        p.expiration_block,
        fraction_wire(p.price_per_pixel),
        p.creation_round,
        p.creation_round_block_hash,
    ]


def params_from_wire(items: Any) -> TicketParams:
    if not isinstance(items, list) or len(items) != 9:
        raise ProtocolError("ticket params are a list of 9 fields")
    return TicketParams(
        recipient=_bytes(items[0], "recipient", 20),
        face_value=from_u256(items[1]),
        win_prob=from_u256(items[2]),
        recipient_rand_hash=_bytes(items[3], "recipient_rand_hash", 32),
        seed=_bytes(items[4], "seed", 32),
        expiration_block=_int(items[5], "expiration_block"),
        price_per_pixel=_fraction(items[6], "price_per_pixel"),
        creation_round=_int(items[7], "creation_round"),
        creation_round_block_hash=_bytes(items[8], "creation_round_block_hash", 32),
    )


def ticket_to_wire(s: SignedTicket) -> list[Any]:
    t = s.ticket
    return [
        t.recipient,
        t.sender,
        u256(t.face_value),
        u256(t.win_prob),
        u256(t.sender_nonce),
        t.recipient_rand_hash,
        t.creation_round,
        t.creation_round_block_hash,
        s.sig,
        s.seed,
        s.expiration_block,
        fraction_wire(s.price_per_pixel),
    ]


def ticket_from_wire(items: Any) -> SignedTicket:
    if not isinstance(items, list) or len(items) != 12:
        raise ProtocolError("a ticket is a list of 12 fields")
    try:
        ticket = Ticket(
            recipient=_bytes(items[0], "recipient", 20),
            sender=_bytes(items[1], "sender", 20),
            face_value=from_u256(items[2]),
            win_prob=from_u256(items[3]),
            sender_nonce=from_u256(items[4]),
            recipient_rand_hash=_bytes(items[5], "recipient_rand_hash", 32),
            creation_round=_int(items[6], "creation_round"),
            creation_round_block_hash=_bytes(items[7], "creation_round_block_hash", 32),
        )
    except PaymentError as exc:
        raise ProtocolError(f"bad ticket: {exc}") from None
    return SignedTicket(
        ticket,
        _bytes(items[8], "sig", 65),
        _bytes(items[9], "seed", 32),
        _int(items[10], "expiration_block"),
        _fraction(items[11], "price_per_pixel"),
    )


# -- job spec and renditions -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What the gateway asks for one segment: the job (a JobPosted id), the ladder, the preset."""

    job_id: bytes
    profiles: str  # media.profiles text, e.g. "360p,240p"
    preset: str

    def to_wire(self) -> list[Any]:
        return [self.job_id, self.profiles, self.preset]

    @classmethod
    def from_wire(cls, items: Any) -> JobSpec:
        if not isinstance(items, list) or len(items) != 3:
            raise ProtocolError("a job spec is [job_id, profiles, preset]")
        if type(items[1]) is not str or type(items[2]) is not str or len(items[1]) > 512:
            raise ProtocolError("job profiles and preset are short strings")
        return cls(_bytes(items[0], "job_id", 32), items[1], items[2])


def rendition_meta(r: Rendition) -> list[Any]:
    """Everything about a rendition but its bytes, which follow as a blob."""
    return [
        r.name,
        r.codec,
        r.encoder,
        r.width,
        r.height,
        r.frame_count,
        r.start_pts,
        fraction_wire(r.duration),
        fraction_wire(r.frame_rate),
        r.bitrate,
        r.has_audio,
    ]


def rendition_from_wire(items: Any, data: bytes) -> Rendition:
    if not isinstance(items, list) or len(items) != 11:
        raise ProtocolError("rendition metadata is a list of 11 fields")
    if not all(type(items[i]) is str for i in (0, 1, 2)) or type(items[10]) is not bool:
        raise ProtocolError("malformed rendition metadata")
    return Rendition(
        name=items[0],
        codec=items[1],
        encoder=items[2],
        width=_int(items[3], "width"),
        height=_int(items[4], "height"),
        frame_count=_int(items[5], "frame_count"),
        start_pts=_int(items[6], "start_pts"),
        duration=_fraction(items[7], "duration"),
        frame_rate=_fraction(items[8], "frame_rate"),
        bitrate=_int(items[9], "bitrate"),
        has_audio=items[10],
        data=data,
    )


def estimate_pixels(
    width: int, height: int, rate: Fraction, duration: float, ladder: Sequence[Profile]
) -> int:
    """Output pixels a segment should produce, the basis of the fee both sides check before work:
    frames (duration x the rung's rate) x the rung's fitted size, over the ladder."""
    total = 0
    for spec in plan_ladder(tuple(ladder), width, height):
        fps = min(rate, spec.profile.fps) if spec.profile.fps else rate
        frames = max(1, round(Fraction(duration).limit_denominator(10_000) * fps))
        total += frames * spec.width * spec.height
    return total


# -- inference segments ----------------------------------------------------------------------

DETECTIONS, VIDEO = "detections", "video"  # what an AI segment returns: JSON lines, or MPEG-TS
VIDEO_PIPELINES = VIDEO_KINDS
SUMMARY_EVERY_S = 30.0  # a gateway's verdicts are summarized at most this often (and at job end)
DETECTIONS_FILE = "detections.jsonl"  # an analysis job's output (one JSON line per frame)
MAX_AI_FRAMES = 2000  # per segment (a ~2 s segment has 50-120)
MAX_BOXES = 100  # per frame
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def ai_capability(pipeline: str, model: str = "", warm: bool = False) -> str:
    """An Offer capability: `ai:<pipeline>` (its default model), `ai:<pipeline>/<model>`, and
    either with `:warm` when the model is loaded (starts without a load delay)."""
    text = f"ai:{pipeline}/{model}" if model else f"ai:{pipeline}"
    return text + ":warm" if warm else text


@dataclass(frozen=True, slots=True)
class StatedFps:
    """Frames per second an orchestrator measured for a pipeline (and model) on its own hardware,
    at an inference size: what it tells gateways in its offer so a live stream that it cannot
    keep up with goes elsewhere."""

    pipeline: str
    model: str
    fps: float
    width: int
    height: int

    def capability(self) -> str:
        """`fps:<pipeline>[/<model>]=<fps>@<W>x<H>` (an Offer capability)."""
        what = f"{self.pipeline}/{self.model}" if self.model else self.pipeline
        return f"fps:{what}={self.fps:.1f}@{self.width}x{self.height}"

    def at(self, width: int, height: int) -> float:
        """The fps to expect at another inference size (the work scales with the pixels)."""
        return self.fps * (self.width * self.height) / max(1, width * height)


def stated_fps(capabilities: Sequence[str], pipeline: str, model: str = "") -> StatedFps | None:
    """What an offer states for `pipeline` (with `model`, or its default model), or None."""
    what = f"{pipeline}/{model}" if model else pipeline
    prefix = f"fps:{what}="
    for cap in capabilities:
        if not cap.startswith(prefix):
            continue
        rate, _, size = cap[len(prefix) :].partition("@")
        width, _, height = size.partition("x")
        try:
            fps, w, h = float(rate), int(width), int(height)
        except ValueError:
            continue
        if fps >= 0 and 0 < w <= 16384 and 0 < h <= 16384 and fps == fps:  # not NaN
            return StatedFps(pipeline, model, fps, w, h)
    return None


def ai_output_size(pipeline: str, width: int, height: int) -> tuple[int, int]:
    """The frame size a pipeline's output has (and is priced at): upscale doubles it."""
    factor = 2 if pipeline == "upscale" else 1
    return width * factor, height * factor


def is_model_name(text: str) -> bool:
    """A registered model's name, never a path: what a gateway may ask an orchestrator for."""
    return 0 < len(text) <= 128 and set(text) <= NAME_CHARS and text[0] not in ".-"


MAX_OPTIONS_BYTES = 4096  # an AI spec's options, msgpack-encoded
MAX_OPTIONS_DEPTH = 2  # {"blend": {"mosaic": 0.5, ...}} and no deeper
OPTION_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


def check_options_shape(options: Any) -> dict[str, Any]:
    """Options as they may travel in an AI spec: a small map of short lowercase keys to strings,
    numbers, booleans or (one level down) maps of those; ProtocolError otherwise. What each
    pipeline accepts is the orchestrator's check (inference.options), not the wire's."""
    if not isinstance(options, Mapping):
        raise ProtocolError("AI options are a map")
    _check_map(options, MAX_OPTIONS_DEPTH)
    if len(msgpack.packb(dict(options), use_bin_type=True)) > MAX_OPTIONS_BYTES:
        raise ProtocolError(f"AI options take at most {MAX_OPTIONS_BYTES} bytes")
    return dict(options)


def _check_map(value: Mapping[Any, Any], depth: int) -> None:
    if len(value) > 64:
        raise ProtocolError("AI options hold at most 64 entries")
    for key, item in value.items():
        if type(key) is not str or not 0 < len(key) <= 64 or not set(key) <= OPTION_KEY_CHARS:
            raise ProtocolError(f"AI option name {str(key)[:64]!r} is not a short lowercase name")
        if isinstance(item, Mapping) and depth > 1:
            _check_map(item, depth - 1)
        elif type(item) is str:
            if len(item) > 1024:
                raise ProtocolError(f"AI option {key!r} is longer than 1024 characters")
        elif type(item) not in (int, float, bool):
            raise ProtocolError(f"AI option {key!r} is not a string, number or flag")


def parse_ai_options(
    pipeline: str, raw: Mapping[str, Any] | None, *, allow_paths: bool = False
) -> dict[str, Any]:
    """A pipeline's options checked and normalised by inference.options (InferenceError when
    bad); `allow_paths` only for options typed on this machine, never for a peer's."""
    return parse_options(pipeline, raw or {}, allow_paths=allow_paths)


@dataclass(frozen=True, slots=True)
class AiSpec:
    """An inference segment's ask: the job (a JobPosted id), the pipeline, the model ("" for the
    orchestrator's default model of that pipeline) and the pipeline's options (style name, blend,
    inference size, background...: inference.options). On the wire `[job_id, pipeline, model,
    options]`; the 3-item form of nodes before options still reads, with no options."""

    job_id: bytes
    pipeline: str
    model: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)

    def to_wire(self) -> list[Any]:
        if not self.options:  # what every node reads
            return [self.job_id, self.pipeline, self.model]
        return [self.job_id, self.pipeline, self.model, dict(self.options)]

    @classmethod
    def from_wire(cls, items: Any) -> AiSpec:
        if not isinstance(items, list) or len(items) not in (3, 4):
            raise ProtocolError("an AI spec is [job_id, pipeline, model, options]")
        pipeline, model = items[1], items[2]
        if type(pipeline) is not str or not 0 < len(pipeline) <= 64:
            raise ProtocolError("an AI pipeline is a short string")
        if type(model) is not str or (model and not is_model_name(model)):
            raise ProtocolError("an AI model is a registered model's name")
        options = check_options_shape(items[3]) if len(items) == 4 else {}
        return cls(_bytes(items[0], "job_id", 32), pipeline, model, options)


@dataclass(frozen=True, slots=True)
class AiOutput:
    """What an orchestrator made of an AI segment: detections (JSON lines, one per frame) or a
    video (MPEG-TS), with the model that ran, the frames it saw and the output frame size."""

    kind: str  # DETECTIONS or VIDEO
    model: str
    frames: int
    width: int
    height: int
    data: bytes

    @property
    def pixels(self) -> int:
        """What the segment costs: frames x output width x output height."""
        return self.frames * self.width * self.height

    def meta(self) -> list[Any]:
        """Everything but the bytes, which follow as a blob."""
        return [self.kind, self.model, self.frames, self.width, self.height]

    @classmethod
    def from_wire(cls, items: Any, data: bytes) -> AiOutput:
        if not isinstance(items, list) or len(items) != 5:
            raise ProtocolError("AI output metadata is [kind, model, frames, width, height]")
        if items[0] not in (DETECTIONS, VIDEO) or type(items[1]) is not str:
            raise ProtocolError("AI output kind is detections or video, its model a string")
        frames = _int(items[2], "frames")
        if frames > MAX_AI_FRAMES:
            raise ProtocolError(f"an AI segment has at most {MAX_AI_FRAMES} frames")
        return cls(items[0], items[1][:128], frames, _int(items[3], "width"),
                   _int(items[4], "height"), data)  # fmt: skip
