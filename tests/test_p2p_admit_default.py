"""Admission by standing is what `castnet run` and `castnet node start` do unless told "open";
the standing a batch of events carries is learned before the batch is decided."""

from __future__ import annotations

from pathlib import Path

import pytest

from events import kinds as k
from events.author import Author
from events.crypto import LocalKeySigner, keccak256
from events.envelope import SignedEvent
from node.cli.main import build_parser
from node.cli.node import start_config
from node.cli.run import overrides
from node.config import ConfigError, build_config
from p2p.admission import NO_STANDING, Admission
from tests.conftest import key

BASE = {"roles": ["gateway"], "data_dir": "d", "ledger": {"kind": "embedded"}}


def observed(author: Author, seq: int, what: str, *args: object) -> SignedEvent:
    body = k.ChainObserved(what, seq, keccak256(b"block"), keccak256(b"tx%d" % seq), 0, args)
    return author.sign(body, 1000 + seq)


def offer(author: Author, seq: int) -> SignedEvent:
    body = k.Offer(1000, 1, ("transcode:h264",), 2, "peer", ("/ip4/127.0.0.1/tcp/1",))
    return author.sign(body, 2000 + seq)


def test_run_config_admits_by_standing_unless_open(tmp_path: Path) -> None:
    assert build_config(BASE, tmp_path).p2p.admission is True
    opened = build_config({**BASE, "p2p": {"admit": "open"}}, tmp_path)
    assert opened.p2p.admission is False
    with pytest.raises(ConfigError, match=r"p2p.admit 'all': use 'standing' or 'open'"):
        build_config({**BASE, "p2p": {"admit": "all"}}, tmp_path)
    # `castnet run --admit open` overrides the file
    args = build_parser(["run"]).parse_args(["run", "--role", "gateway", "--admit", "open"])
    assert overrides(args)["p2p"]["admit"] == "open"
    args = build_parser(["run"]).parse_args(["run", "--role", "gateway"])
    assert overrides(args)["p2p"]["admit"] is None  # not given: the file's, else standing


def test_node_start_admits_by_standing_unless_open(tmp_path: Path) -> None:
    def config(*flags: str) -> bool:
        argv = ["node", "start", "--data-dir", str(tmp_path), *flags]
        return start_config(build_parser(argv).parse_args(argv)).admission

    assert config() is True
    assert config("--admit", "standing") is True
    assert config("--admit", "open") is False
    assert config("--admit", "all") is False  # the flag's earlier name still works


def test_batch_learns_the_standing_its_observations_give_before_deciding() -> None:
    orchestrator, observer, stranger = (Author(LocalKeySigner(key(110 + i))) for i in range(3))
    # a log where the orchestrator's Offer precedes the observation of its bond, logged by a
    # gateway whose own deposit it observed first (as a node's chain watcher writes them)
    batch = [
        offer(orchestrator, 1),
        observed(observer, 1, "deposit", observer.address, 10**18),
        observed(observer, 2, "bond", orchestrator.address, orchestrator.address, 10**18),
        offer(stranger, 1),
    ]
    admission = Admission()
    admitted, held = admission.filter(batch, "peer", 0.0)
    assert admitted == batch[:3] and held == 1  # in log order; the stranger has no standing
    assert admission.held == {NO_STANDING: 1}

    # decided one at a time (gossip delivers them so), the early Offer could not be admitted
    one_by_one = Admission()
    assert one_by_one.check(batch[0], "peer", 0.0) == NO_STANDING


def test_own_chain_observations_give_standing() -> None:
    me, orchestrator = Author(LocalKeySigner(key(120))), Author(LocalKeySigner(key(121)))
    admission = Admission()
    assert admission.check(offer(orchestrator, 1), "peer", 0.0) == NO_STANDING
    # our chain watcher logs the orchestrator's bond into our own log
    admission.own(observed(me, 1, "bonded", orchestrator.address, orchestrator.address,
                           bytes(20), 10**18, 10**18))  # fmt: skip
    assert admission.check(offer(orchestrator, 1), "peer", 1.0) is None
