"""The p2p layer's configuration: one frozen object built by the CLI (or a test) and passed down."""

from __future__ import annotations

from dataclasses import dataclass

from p2p.addrs import check_bootstrap_addr, check_listen_addr

DEFAULT_NETWORK = "castnet-dev"
DEFAULT_LISTEN = "/ip4/127.0.0.1/tcp/0"
MiB = 1024 * 1024
PEERS_TARGET = 4  # gossipsub's D_lo: below it a mesh is short, and gossipsub grafts
MAX_PEERS = 64  # connections a node keeps before it trims idle ones outside its mesh
INBOUND_PER_IP = 8  # inbound connections one (non-loopback) IP address may hold at once


@dataclass(frozen=True, slots=True)
class P2PConfig:
    """Every tunable of the host, gossip and sync. Defaults follow FIELD-NOTES (py-libp2p 0.8.1)."""

    network: str = DEFAULT_NETWORK
    listen: tuple[str, ...] = (DEFAULT_LISTEN,)
    bootstrap: tuple[str, ...] = ()
    mdns: bool = False
    # gossipsub 1.1 with its standard degrees and a ~1 s heartbeat; peers outside a node's mesh
    # get its messages by lazy gossip (IHAVE/IWANT on castnet's message ids, p2p/host.py)
    heartbeat_s: int = 1
    degree: int = 6
    degree_low: int = 4
    degree_high: int = 12
    prune_back_off_s: int = 10
    # concurrent gossip validations; each may wait on a group commit, or for a predecessor that
    # a later message brings, so this must not run out before those arrive (p2p.host bounds
    # what each peer may have in validation)
    max_validators: int = 1024
    gap_wait_s: float = 2.0  # how long a validation waits for a held event's predecessor
    validation_timeout_s: float = 30.0
    # publishing: wait while any peer's outbound queue (32 deep, drops when full) is this full
    publish_queue_high: int = 20
    publish_wait_s: float = 10.0
    # anti-entropy sync
    sync_interval_s: float = 10.0
    sync_quiet_s: float = 2.0  # a periodic round is skipped if gossip carried events this recently
    sync_max_skips: int = 5  # ... but not more rounds than this in a row
    sync_batch_events: int = 1024
    sync_batch_bytes: int = 1 * MiB
    sync_session_events: int = 1_000_000  # per session; the next round asks for the rest
    sync_max_heads: int = 100_000
    # framing
    frame_timeout_s: float = 10.0
    max_frame_bytes: int = 4 * MiB
    max_blob_bytes: int = 50 * MiB
    # events whose predecessor is missing, held until sync fills the gap
    held_max_events: int = 10_000
    held_ttl_s: float = 120.0
    # peer scoring: each invalid message costs 1 point; decays with this half-life
    ban_threshold: float = 5.0
    score_half_life_s: float = 60.0
    ban_s: float = 600.0
    # admission for an open network (p2p/admission.py): store and forward only events whose
    # authors have standing, within per-author and per-peer token buckets
    admission: bool = False
    # peer exchange (p2p/discovery.py): while the gossip mesh has fewer peers than this and no
    # connected one is left to graft, ask connected peers for more, one every
    # `peer_exchange_s`, and dial what is missing; 0 keeps a node to its bootstrap peers and
    # those that dial it
    peers_target: int = PEERS_TARGET
    peer_exchange_s: float = 10.0
    # connection trimming (p2p/trim.py): above this many connected peers, close idle ones
    # outside the gossip mesh (connected at least `trim_grace_s`) down to three quarters of it;
    # 0: keep every connection
    max_peers: int = MAX_PEERS
    trim_grace_s: float = 30.0
    trim_every_s: float = 5.0
    # a job counterparty is not trimmed until it has been silent this long (job events, requests)
    trim_job_peer_s: float = 600.0
    # inbound connections one IP address may hold at once (p2p/connections.py; loopback is not
    # limited); 0: no limit
    inbound_per_ip: int = INBOUND_PER_IP
    # bootstrap redial
    bootstrap_retry_s: float = 2.0
    # ... while a node needs them (no peer, or a short mesh); else this rarely (a trimmed leaf
    # does not churn a busy seed, and a restarted seed gets its peers back)
    bootstrap_idle_redial_s: float = 1800.0
    dial_timeout_s: float = 5.0
    # start only once a bootstrap peer answered (a long-lived node started by a user); a node
    # in a test or a local network dials in the background instead
    require_bootstrap: bool = False

    def __post_init__(self) -> None:
        if not self.listen:
            raise ValueError("no listen address")
        for addr in self.listen:
            check_listen_addr(addr)
        for addr in self.bootstrap:
            check_bootstrap_addr(addr)
        if not self.network or "/" in self.network or len(self.network) > 64:
            raise ValueError(f"bad network id {self.network!r}: 1-64 characters, no '/'")
        if not self.degree_low <= self.degree <= self.degree_high:
            raise ValueError("gossip degrees must satisfy degree_low <= degree <= degree_high")
        if self.peers_target < 0 or self.peer_exchange_s <= 0:
            raise ValueError("peers_target must be >= 0 and peer_exchange_s > 0")
        if self.inbound_per_ip < 0:
            raise ValueError("inbound_per_ip must be >= 0 (0: no limit)")
        if self.trim_every_s <= 0 or self.trim_job_peer_s < 0:
            raise ValueError("trim_every_s must be > 0 and trim_job_peer_s >= 0")
        if self.max_peers < 0 or 0 < self.max_peers < self.peers_target or self.trim_grace_s < 0:
            raise ValueError(
                f"max_peers must be 0 (no limit) or at least the peer target ({self.peers_target}),"
                " and trim_grace_s >= 0"
            )
        if self.sync_batch_events < 1 or self.sync_batch_bytes < 64 * 1024 + 1024:
            raise ValueError("sync batches must hold at least one maximum-size event")
