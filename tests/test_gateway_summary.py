"""The gateway's verdict summaries: their period is the config's `[gateway] summary_interval_s`,
and a gateway that stops cleanly publishes the verdicts not yet summarized, so none are lost
for reputation."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
import trio

from events import kinds as k
from events.crypto import LocalKeySigner
from events.envelope import SignedEvent, decode
from events.fold import fold
from media.profiles import parse_profiles
from media.segmenter import segment
from node.config import ConfigError, build_config
from node.gateway.role import Gateway, GatewayConfig
from node.gateway.work import JobReport, SegmentOutcome
from node.keystore import PASSWORD_ENV
from node.local.network import default_plan, open_network
from node.service import NodeService
from node.writer import SUMMARY_EVERY_S, EventWriter
from p2p.config import P2PConfig
from p2p.localnet import LOOPBACK, connect, full_mesh
from p2p.node import P2PNode, open_node
from storage.store import EventStore
from tests.conftest import key
from tests.fake_ledger import FakeLedger
from tests.media_fixtures import video_file

ROOT = Path(__file__).resolve().parents[1]
GOOD = {"roles": ["gateway"], "data_dir": "d"}


def test_the_summary_period_comes_from_the_gateway_section(tmp_path: Path) -> None:
    assert build_config(GOOD, tmp_path).gateway.summary_interval_s == SUMMARY_EVERY_S == 30.0
    raw = {**GOOD, "gateway": {"summary_interval_s": 5}}
    assert build_config(raw, tmp_path).gateway.summary_interval_s == 5


@pytest.mark.parametrize("value", [0, 0.5, -30, "30", True])
def test_a_bad_summary_period_names_the_key(value: object, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config({**GOOD, "gateway": {"summary_interval_s": value}}, tmp_path)
    assert str(caught.value) == (
        f"gateway.summary_interval_s must be a number >= 1.0, got {value!r}"
    )


def test_run_with_a_bad_summary_period_says_so_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text(
        'roles = ["gateway"]\ndata_dir = "data"\n[ledger]\nkind = "embedded"\n'
        '[gateway]\nsummary_interval_s = "often"\n'
    )
    argv = [sys.executable, "-m", "node.cli", "run", "--config", str(config), "--init-keys"]
    env = {**os.environ, PASSWORD_ENV: "correct horse battery staple"}
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "castnet run: gateway.summary_interval_s must be a number >= 1.0, got 'often'"
    ]
    assert not (tmp_path / "data").exists()


def _events(store: EventStore) -> list[SignedEvent]:
    return [decode(raw) for _, raw in store.read(after=0)]


def _summaries(events: list[SignedEvent], author: bytes) -> list[k.VerdictSummary]:
    found = [k.read_body(e) for e in events if e.author == author]
    return [b for b in found if isinstance(b, k.VerdictSummary)]


async def test_a_gateway_stopped_before_its_summary_was_due_publishes_it(tmp_path: Path) -> None:
    clip = video_file("summary.mp4", size="256x144", duration=2.0, gop=60)
    config = GatewayConfig(
        profiles="144p", preset="ultrafast", job_timeout_s=120.0,
        max_price_per_pixel=Fraction(10**4), max_ev=Fraction(4 * 10**12),
        summary_interval_s=3600.0,  # never due while the test runs
    )  # fmt: skip
    plan = default_plan(1, config, ticket_ev=Fraction(10**12))
    base = tmp_path / "nodes"
    with trio.fail_after(180):
        async with open_network(base, plan, FakeLedger()) as net:
            assert await net.gateway.wait_for_offers(1, 90.0) == 1
            gateway, (orch,) = net.gateway, net.orchestrators
            await _one_segment(gateway, clip, tmp_path / "out")
            # the verdict is in the log, its summary not yet (a segment alone is no job's end)
            assert gateway.verdicts and gateway.verdicts[-1].accepted
            assert not _summaries(_store_events(gateway.node), gateway.address)
            gw_address, orch_address = gateway.address, orch.address
        # stopped: the gateway's log holds the summary of the verdict
        with EventStore.open_dir(base / "gateway") as store:
            (summary,) = _summaries(_events(store), gw_address)
        assert (summary.orchestrator, summary.verified, summary.failed) == (orch_address, 1, 0)

        # ... and a peer has it, whether gossip carried it before the stop or sync brings it
        # once the gateway is back on the network
        p2p = P2PConfig(listen=(LOOPBACK,), sync_interval_s=0.5)
        async with (
            open_node(base / "delegator", p2p) as peer,
            open_node(base / "gateway", p2p) as gw_node,
        ):
            await connect([peer, gw_node], full_mesh(2))
            await peer.wait_until(lambda: bool(_summaries(_store_events(peer), gw_address)))
            seen = fold(_store_events(peer))
            assert seen.reputation[orch_address].verified == 1


async def _one_segment(gateway: Gateway, clip: Path, out: Path) -> None:
    """The first segment of `clip`, transcoded on the network and verified: a verdict logged
    outside any job's end (a file job summarizes its verdicts when it ends)."""
    first = next(iter(await trio.to_thread.run_sync(lambda: list(segment(clip)))))
    outcome = SegmentOutcome(first.seq)
    await gateway.run_segment(first, parse_profiles("144p"), outcome, JobReport(out, [outcome]))
    assert outcome.result is not None, outcome.errors


def _store_events(node: P2PNode) -> list[SignedEvent]:
    return [decode(raw) for _, raw in node.store.read(after=0)]


async def test_castnet_run_stopped_cleanly_logs_its_last_summary(tmp_path: Path) -> None:
    """The same at the stop of a node process's service (what `castnet run` runs)."""
    clip = video_file("summary.mp4", size="256x144", duration=2.0, gop=60)
    raw = {
        "roles": ["gateway", "orchestrator"],
        "data_dir": "data",
        "p2p": {"network": "summary-test"},
        "ledger": {"kind": "embedded"},
        "gateway": {"profiles": "144p", "preset": "ultrafast", "summary_interval_s": 3600},
        "orchestrator": {"ticket_ev": "1e9"},
        "api": {"enabled": False},
    }
    config = build_config(raw, tmp_path)
    with trio.fail_after(180):
        async with trio.open_nursery() as nursery:
            svc: NodeService = await nursery.start(
                NodeService(config, {"gateway": key(21), "orchestrator": key(22)}).run
            )
            gateway = svc.gateway
            assert gateway is not None and svc.orchestrator is not None
            assert await gateway.wait_for_offers(1, 60.0) == 1
            await _one_segment(gateway, clip, tmp_path / "out")
            assert not _summaries(_store_events(gateway.node), gateway.address)
            gw_address, orch_address = gateway.address, svc.orchestrator.address
            nursery.cancel_scope.cancel()
    with EventStore.open_dir(tmp_path / "data" / "gateway") as store:
        (summary,) = _summaries(_events(store), gw_address)
    assert (summary.orchestrator, summary.verified, summary.failed) == (orch_address, 1, 0)


async def test_a_last_summary_that_cannot_be_published_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    p2p = P2PConfig(listen=(LOOPBACK,))
    with trio.fail_after(30):
        async with open_node(tmp_path / "gw", p2p) as node:
            writer = EventWriter(node, LocalKeySigner(key(31)), summary_every_s=3600.0)
            orch = LocalKeySigner(key(32)).address
            await writer.emit(k.JobVerdict(bytes(32), orch, True, "ok", 70), to=orch)
        # the node has stopped: the summary cannot be stored, and the writer says so once
        with caplog.at_level(logging.WARNING, logger="castnet.writer"):
            assert await writer.publish_last_summaries(timeout_s=2.0) == []
    warnings = [r.getMessage() for r in caplog.records if r.name == "castnet.writer"]
    assert len(warnings) == 1, warnings
    reason = warnings[0].removeprefix("1 verdict(s) not summarized at shutdown: ")
    assert reason and reason != warnings[0], warnings
