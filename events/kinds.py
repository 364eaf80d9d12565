"""Event kinds: numeric ids, schema versions, typed bodies and upcasters for old versions.

A body is a positional msgpack array. Each kind is a frozen dataclass whose `FIELDS` give the order
and codec of its elements. Bodies of older versions are upcast on read; the log is never rewritten.
Unknown kinds (and versions newer than this code) are kept in the log and skipped by the fold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from events import fields as f
from events.crypto import keccak256
from events.envelope import SignedEvent
from events.errors import BodyError


class Body:
    """Base of typed bodies. Subclasses are frozen dataclasses with KIND, VERSION and FIELDS."""

    __slots__ = ()
    KIND: ClassVar[int]
    VERSION: ClassVar[int]
    NAME: ClassVar[str]
    FIELDS: ClassVar[tuple[f.Field, ...]]
    DECODERS: ClassVar[tuple[Callable[[Any], Any], ...]]

    def to_wire(self) -> list[Any]:
        return [fld.encode(getattr(self, fld.name)) for fld in self.FIELDS]

    @classmethod
    def from_wire(cls, items: Any) -> Body:
        decoders = cls.DECODERS
        if type(items) is not list or len(items) != len(decoders):
            raise BodyError(f"{cls.NAME} body is a list of {len(decoders)} fields")
        try:
            values = [decode(v) for decode, v in zip(decoders, items, strict=True)]
        except BodyError as exc:
            raise BodyError(f"{cls.NAME}: {exc}") from None
        body = cls(*values)
        body.check()
        return body

    def check(self) -> None:
        """Cross-field rules beyond the field codecs."""


def _body(kind: int, version: int, name: str, *fields: f.Field) -> Callable[[Any], Any]:
    def wrap(cls: Any) -> Any:
        cls.KIND, cls.VERSION, cls.NAME, cls.FIELDS = kind, version, name, fields
        cls.DECODERS = tuple(fld.decode for fld in fields)
        names = tuple(fld.name for fld in fields)
        declared = tuple(cls.__dataclass_fields__)
        if names != declared:
            raise TypeError(f"{name}: FIELDS {names} != dataclass fields {declared}")
        return cls

    return wrap


@_body(
    1,
    2,
    "Offer",
    f.u256("price_per_unit"),
    f.u64("pixels_per_unit"),
    f.texts("capabilities"),
    f.u64("capacity"),
    f.text("peer_id"),
    f.texts("addrs"),
)
@dataclass(frozen=True, slots=True)
class Offer(Body):
    """An orchestrator's standing offer: price (wei per `pixels_per_unit` pixels), what it can do,
    how many concurrent jobs it takes, and the libp2p identity that serves it."""

    price_per_unit: int
    pixels_per_unit: int
    capabilities: tuple[str, ...]
    capacity: int
    peer_id: str
    addrs: tuple[str, ...]

    def check(self) -> None:
        if self.pixels_per_unit == 0:
            raise BodyError("Offer: pixels_per_unit must be positive")


@_body(2, 1, "OfferWithdrawn", f.text("reason"))
@dataclass(frozen=True, slots=True)
class OfferWithdrawn(Body):
    reason: str


@_body(
    3,
    1,
    "JobPosted",
    f.text("pipeline"),
    f.hash32("input_hash"),
    f.u64("input_bytes"),
    f.u64("duration_ms"),
    f.texts("profiles"),
    f.u256("max_price_per_unit"),
    f.u64("pixels_per_unit"),
    f.addrs("targets"),
)
@dataclass(frozen=True, slots=True)
class JobPosted(Body):
    """A gateway's job; its id is the id of this event. `targets` empty means open to all."""

    pipeline: str
    input_hash: bytes
    input_bytes: int
    duration_ms: int
    profiles: tuple[str, ...]
    max_price_per_unit: int
    pixels_per_unit: int
    targets: tuple[bytes, ...]

    def check(self) -> None:
        if self.pixels_per_unit == 0:
            raise BodyError("JobPosted: pixels_per_unit must be positive")


@_body(4, 1, "JobClaimed", f.hash32("job_id"), f.u256("price_per_unit"), f.u64("pixels_per_unit"))
@dataclass(frozen=True, slots=True)
class JobClaimed(Body):
    job_id: bytes
    price_per_unit: int
    pixels_per_unit: int


@_body(
    5,
    1,
    "JobAssigned",
    f.hash32("job_id"),
    f.addr("orchestrator"),
    f.u256("price_per_unit"),
    f.u64("pixels_per_unit"),
)
@dataclass(frozen=True, slots=True)
class JobAssigned(Body):
    job_id: bytes
    orchestrator: bytes
    price_per_unit: int
    pixels_per_unit: int


@_body(
    6,
    1,
    "JobResult",
    f.hash32("job_id"),
    f.hashes("output_hashes"),
    f.u64("output_pixels"),
    f.u64("compute_ms"),
)
@dataclass(frozen=True, slots=True)
class JobResult(Body):
    job_id: bytes
    output_hashes: tuple[bytes, ...]
    output_pixels: int
    compute_ms: int


@_body(
    7,
    1,
    "JobVerdict",
    f.hash32("job_id"),
    f.addr("orchestrator"),
    f.flag("accepted"),
    f.text("reason"),
    f.u64("latency_ms"),
)
@dataclass(frozen=True, slots=True)
class JobVerdict(Body):
    job_id: bytes
    orchestrator: bytes
    accepted: bool
    reason: str
    latency_ms: int


@_body(
    8,
    1,
    "TicketIssued",
    f.hash32("ticket_hash"),
    f.addr("recipient"),
    f.u256("face_value"),
    f.u256("win_prob"),
    f.u256("sender_nonce"),
    f.hash32("recipient_rand_hash"),
    f.u64("creation_round"),
    f.hash32("creation_round_block_hash"),
    f.sig65("ticket_sig"),
    f.opt_hash("job_id"),
)
@dataclass(frozen=True, slots=True)
class TicketIssued(Body):
    """A ticket as its sender (the event author) signed it; the hash is checked by payments."""

    ticket_hash: bytes
    recipient: bytes
    face_value: int
    win_prob: int
    sender_nonce: int
    recipient_rand_hash: bytes
    creation_round: int
    creation_round_block_hash: bytes
    ticket_sig: bytes
    job_id: bytes


@_body(
    9,
    1,
    "TicketReceived",
    f.hash32("ticket_hash"),
    f.addr("sender"),
    f.u256("face_value"),
    f.u256("win_prob"),
    f.flag("winning"),
    f.opt_hash("job_id"),
)
@dataclass(frozen=True, slots=True)
class TicketReceived(Body):
    ticket_hash: bytes
    sender: bytes
    face_value: int
    win_prob: int
    winning: bool
    job_id: bytes


@_body(
    10,
    1,
    "TicketRedeemed",
    f.hash32("ticket_hash"),
    f.addr("sender"),
    f.u256("face_value"),
    f.hash32("tx_hash"),
    f.u64("block_number"),
)
@dataclass(frozen=True, slots=True)
class TicketRedeemed(Body):
    ticket_hash: bytes
    sender: bytes
    face_value: int
    tx_hash: bytes
    block_number: int


# What a ChainObserved event may report, with the positional arguments of each. "bond", "unbond"
# and "rebond" are the first, amount-only reports (kept so that old logs still decode); the bonding
# contract's logs are reported as "bonded", "unbonded" and "rebonded", which carry the delegator's
# total bonded stake after the change.
CHAIN_ARGS: dict[str, tuple[f.Field, ...]] = {
    "bonded": (
        f.addr("delegator"),
        f.addr("orchestrator"),
        f.addr("old_orchestrator"),
        f.u256("amount"),
        f.u256("bonded"),
    ),
    "unbonded": (f.addr("delegator"), f.addr("orchestrator"), f.u256("amount"), f.u256("bonded")),
    "rebonded": (f.addr("delegator"), f.addr("orchestrator"), f.u256("amount"), f.u256("bonded")),
    "bond": (f.addr("delegator"), f.addr("orchestrator"), f.u256("amount")),
    "unbond": (f.addr("delegator"), f.addr("orchestrator"), f.u256("amount")),
    "rebond": (f.addr("delegator"), f.addr("orchestrator"), f.u256("amount")),
    "reward": (f.addr("orchestrator"), f.u256("amount")),
    "deposit": (f.addr("sender"), f.u256("amount")),
    "reserve": (f.addr("sender"), f.u256("amount")),
    "unlock": (f.addr("sender"), f.u64("withdraw_round")),
    "withdraw": (f.addr("sender"), f.u256("deposit"), f.u256("reserve")),
    "redemption": (  # the third arg is the amount the broker paid (the face value or less)
        f.addr("sender"),
        f.addr("recipient"),
        f.u256("face_value"),
        f.hash32("ticket_hash"),
    ),
    "round": (f.u64("round"),),
    # the minter's parameters at deployment, parts per billion
    "minter": (
        f.u256("inflation"),
        f.u256("inflation_change"),
        f.u256("target_bonding_rate"),
        f.u64("round_length"),
    ),
    "fees_withdrawn": (f.addr("delegator"), f.u256("amount")),
    # an orchestrator's cumulative reward factor after a round's reward, and its commission
    "factor": (
        f.addr("orchestrator"),
        f.u64("round"),
        f.u256("reward_factor"),
        f.u256("commission"),
    ),
    # what the minter fixed for a round when it was initialized
    "inflation": (
        f.u64("round"),
        f.u256("inflation"),
        f.u256("mintable"),
        f.u256("active_stake"),
        f.u256("bonding_rate"),
        f.u256("total_supply"),
    ),
}


@_body(
    11,
    1,
    "ChainObserved",
    f.text("what"),
    f.u64("block_number"),
    f.hash32("block_hash"),
    f.hash32("tx_hash"),
    f.u64("log_index"),
    f.raw_list("args"),
)
@dataclass(frozen=True, slots=True)
class ChainObserved(Body):
    """A chain log seen by the author, with what an auditor needs to find it on chain."""

    what: str
    block_number: int
    block_hash: bytes
    tx_hash: bytes
    log_index: int
    args: tuple[Any, ...]

    @classmethod
    def from_wire(cls, items: Any) -> Body:
        body = Body.from_wire.__func__(cls, items)  # type: ignore[attr-defined]
        assert isinstance(body, ChainObserved)
        spec = CHAIN_ARGS.get(body.what)
        if spec is None:
            raise BodyError(f"ChainObserved: unknown chain event {body.what!r}")
        if len(body.args) != len(spec):
            raise BodyError(f"ChainObserved {body.what}: {len(spec)} args expected")
        try:
            args = tuple(fld.decode(v) for fld, v in zip(spec, body.args, strict=True))
        except BodyError as exc:
            raise BodyError(f"ChainObserved {body.what}: {exc}") from None
        return cls(
            body.what, body.block_number, body.block_hash, body.tx_hash, body.log_index, args
        )

    def to_wire(self) -> list[Any]:
        spec = CHAIN_ARGS[self.what]
        args = [fld.encode(v) for fld, v in zip(spec, self.args, strict=True)]
        return [self.what, self.block_number, self.block_hash, self.tx_hash, self.log_index, args]

    def arg(self, name: str) -> Any:
        for fld, value in zip(CHAIN_ARGS[self.what], self.args, strict=True):
            if fld.name == name:
                return value
        raise KeyError(name)


@_body(12, 1, "Equivocation", f.blob("first"), f.blob("second"))
@dataclass(frozen=True, slots=True)
class Equivocation(Body):
    """Proof that an author signed two different events at one seq: both raw signed events."""

    first: bytes
    second: bytes


@_body(
    13,
    1,
    "JobChainOpened",
    f.addr("principal"),
    f.addr("counterparty"),
    f.text("network"),
    f.sig65("principal_sig"),
)
@dataclass(frozen=True, slots=True)
class JobChainOpened(Body):
    """The first event (seq 1) of a job chain: the chain's author (a job key) speaks for
    `principal` in the jobs and tickets it has with `counterparty` on `network`.
    `principal_sig` is the principal's signature over `binding_digest(author, counterparty,
    network)`, so the chain proves by itself whom it speaks for."""

    principal: bytes
    counterparty: bytes
    network: str
    principal_sig: bytes


@_body(
    14,
    1,
    "VerdictSummary",
    f.addr("orchestrator"),
    f.u64("since_ms"),
    f.u64("until_ms"),
    f.u64("verified"),
    f.u64("failed"),
    f.u64("latency_ms_total"),
)
@dataclass(frozen=True, slots=True)
class VerdictSummary(Body):
    """A gateway's verdicts on one orchestrator over [since_ms, until_ms): what the whole network
    folds into reputation, while the verdicts themselves stay in the pair's job chains."""

    orchestrator: bytes
    since_ms: int
    until_ms: int
    verified: int
    failed: int
    latency_ms_total: int

    def check(self) -> None:
        if self.until_ms < self.since_ms:
            raise BodyError("VerdictSummary: until_ms is before since_ms")


BODY_TYPES: tuple[type[Body], ...] = (
    Offer,
    OfferWithdrawn,
    JobPosted,
    JobClaimed,
    JobAssigned,
    JobResult,
    JobVerdict,
    TicketIssued,
    TicketReceived,
    TicketRedeemed,
    ChainObserved,
    Equivocation,
    JobChainOpened,
    VerdictSummary,
)
KINDS: dict[int, type[Body]] = {cls.KIND: cls for cls in BODY_TYPES}
KIND_BY_NAME: dict[str, type[Body]] = {cls.NAME: cls for cls in BODY_TYPES}


# Job-level kinds: written in a job chain (one per pair of parties) and sent to the counterparty
# only; every other kind is network-wide (gossiped to every node).
JOB_KINDS: frozenset[int] = frozenset(
    cls.KIND
    for cls in (
        JobChainOpened,
        JobPosted,
        JobClaimed,
        JobAssigned,
        JobResult,
        JobVerdict,
        TicketIssued,
        TicketReceived,
        TicketRedeemed,
    )
)
BINDING_TAG = b"castnet/job-chain/v1\x00"


def binding_digest(job_author: bytes, counterparty: bytes, network: str) -> bytes:
    """What a principal signs to bind a job key to itself for one counterparty and network."""
    return keccak256(BINDING_TAG + job_author + counterparty + network.encode())


def _offer_v1(items: Any) -> Any:
    # v1 offers had no capacity; such an orchestrator took one job at a time.
    if type(items) is not list or len(items) != 5:
        raise BodyError("Offer v1 body is a list of 5 fields")
    return [*items[:3], 1, *items[3:]]


# (kind, old version) -> function turning that version's wire body into the next version's.
UPCASTERS: dict[tuple[int, int], Callable[[Any], Any]] = {(Offer.KIND, 1): _offer_v1}


def kind_name(kind: int) -> str:
    cls = KINDS.get(kind)
    return cls.NAME if cls else f"unknown:{kind}"


def read_body(event: SignedEvent) -> Body | None:
    """The typed body of a known kind, upcast to the current version; None for kinds (or versions)
    this code does not know. Raises BodyError for a known kind with a malformed body."""
    cls = KINDS.get(event.kind)
    if cls is None or event.version > cls.VERSION:
        return None
    items, version = event.body, event.version
    while version < cls.VERSION:
        upcast = UPCASTERS.get((cls.KIND, version))
        if upcast is None:
            raise BodyError(f"{cls.NAME} v{version} has no upcaster")
        items, version = upcast(items), version + 1
    return cls.from_wire(items)
