"""The network state folded from the log: immutable values over persistent maps (immutables.Map,
a HAMT), so applying one event copies nothing but the path it changes."""

from __future__ import annotations

from dataclasses import dataclass, field

from immutables import Map

# Job life cycle: posted -> assigned (by the poster) -> claimed (the assignee accepts it, before
# the work) -> resulted -> verified (or rejected, or failed). A job may be assigned again after a
# failed or rejected attempt, or while an attempt is outstanding (failover).
POSTED, ASSIGNED, CLAIMED, RESULTED, VERIFIED, REJECTED, FAILED = (
    "posted",
    "assigned",
    "claimed",
    "resulted",
    "verified",
    "rejected",
    "failed",
)
JOB_STATUSES = (POSTED, ASSIGNED, CLAIMED, RESULTED, VERIFIED, REJECTED, FAILED)

# Ticket life cycle as this log saw it.
ISSUED, RECEIVED, WON, REDEEMED = "issued", "received", "won", "redeemed"


@dataclass(frozen=True, slots=True)
class Head:
    seq: int
    id: bytes


@dataclass(frozen=True, slots=True)
class OfferState:
    price_per_unit: int
    pixels_per_unit: int
    capabilities: tuple[str, ...]
    capacity: int
    peer_id: str
    addrs: tuple[str, ...]
    time_ms: int


@dataclass(frozen=True, slots=True)
class Delegation:
    orchestrator: bytes
    amount: int


@dataclass(frozen=True, slots=True)
class MinterRound:
    """What the minter fixed for one round (rates in parts per billion)."""

    inflation: int
    mintable: int
    active_stake: int
    bonding_rate: int
    total_supply: int


@dataclass(frozen=True, slots=True)
class Funds:
    deposit: int = 0
    reserve: int = 0


@dataclass(frozen=True, slots=True)
class Job:
    poster: bytes
    pipeline: str
    posted_ms: int
    status: str
    targets: tuple[bytes, ...] = ()
    claims: tuple[bytes, ...] = ()
    assignee: bytes = b""
    attempts: int = 0
    price_per_unit: int = 0
    pixels_per_unit: int = 1
    output_pixels: int = 0
    path: tuple[str, ...] = ()  # every status it went through, in order


@dataclass(frozen=True, slots=True)
class TicketRecord:
    sender: bytes
    recipient: bytes
    face_value: int
    win_prob: int
    status: str
    claimed: bool = False  # the recipient logged its TicketRedeemed (the chain may be seen first)


@dataclass(frozen=True, slots=True)
class Reputation:
    verified: int = 0
    failed: int = 0
    latency_ms_total: int = 0
    equivocations: int = 0


@dataclass(frozen=True, slots=True)
class Evidence:
    author: bytes
    seq: int
    first_id: bytes
    second_id: bytes
    reported_by: bytes


@dataclass(frozen=True, slots=True)
class JobChain:
    """A job chain's binding: its author speaks for `principal` towards `counterparty`;
    `principal` is empty when the binding was refused (the chain's job events are then
    violations)."""

    principal: bytes
    counterparty: bytes


@dataclass(frozen=True, slots=True)
class Violation:
    """An event that broke a rule of the fold; it is skipped, and replay goes on."""

    event_id: bytes
    author: bytes
    seq: int
    kind: str
    rule: str
    detail: str


@dataclass(frozen=True, slots=True)
class State:
    events: int = 0
    by_kind: Map[str, int] = field(default_factory=Map)
    heads: Map[bytes, Head] = field(default_factory=Map)
    offers: Map[bytes, OfferState] = field(default_factory=Map)
    stakes: Map[bytes, int] = field(default_factory=Map)
    delegations: Map[bytes, Delegation] = field(default_factory=Map)
    funds: Map[bytes, Funds] = field(default_factory=Map)
    round: int = 0
    jobs: Map[bytes, Job] = field(default_factory=Map)
    tickets: Map[bytes, TicketRecord] = field(default_factory=Map)
    ticket_nonces: Map[tuple[bytes, bytes, int], bytes] = field(default_factory=Map)
    reputation: Map[bytes, Reputation] = field(default_factory=Map)
    evidence: Map[tuple[bytes, int], Evidence] = field(default_factory=Map)
    chain_seen: Map[tuple[bytes, int], bytes] = field(default_factory=Map)
    violations: Map[int, Violation] = field(default_factory=Map)
    minter: Map[int, MinterRound] = field(default_factory=Map)  # round -> its budget
    # "inflation", "inflation_change", "target_bonding_rate", "round_length" as deployed
    minter_params: Map[str, int] = field(default_factory=Map)
    # the bonding contract's cumulative reward factors: (orchestrator, round) -> the factor
    # after that round's reward, and each orchestrator's latest
    reward_factors: Map[tuple[bytes, int], int] = field(default_factory=Map)
    latest_factor: Map[bytes, int] = field(default_factory=Map)
    # delegator -> (round, factor) of its last bond change: its baseline is its orchestrator's
    # factor at the end of that round
    delegation_base: Map[bytes, tuple[int, int]] = field(default_factory=Map)
    # job key -> its binding (from the JobChainOpened at seq 1 of its chain)
    job_chains: Map[bytes, JobChain] = field(default_factory=Map)
    # (gateway, orchestrator) -> until_ms of the last VerdictSummary folded into reputation
    summaries: Map[tuple[bytes, bytes], int] = field(default_factory=Map)

    def principal(self, author: bytes) -> bytes:
        """Whom `author` speaks for: the principal of its job chain, else itself."""
        chain = self.job_chains.get(author)
        return chain.principal if chain is not None and chain.principal else author

    def violation_list(self) -> list[Violation]:
        return [self.violations[i] for i in range(len(self.violations))]


EMPTY = State()
