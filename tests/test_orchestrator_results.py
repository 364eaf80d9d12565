"""An orchestrator keeps the results it computed a while, for the peer that sent each job: a gateway
restarted mid-job fetches them on `/castnet/result/1` instead of paying for the segment again
(the end-to-end case, a gateway process killed mid-job, is in test_gateway_restart)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing
from libp2p.peer.id import ID

from events import kinds as k
from events.crypto import keccak256
from node.api.metric_families import orchestrator_families
from node.gateway.answers import read_result
from node.gateway.role import GatewayConfig
from node.local.demo import generate_clip
from node.local.network import default_plan, embedded_ledger, open_network
from node.orchestrator.results import KeptResults
from node.protocol import (
    BAD_REQUEST,
    JOB_DONE,
    RESULT_PROTOCOL,
    RESULT_REQUEST,
    UNKNOWN,
    VERSION,
    Refused,
)
from p2p.framing import MessageStream
from p2p.node import P2PNode

JOB, OTHER_JOB = b"j" * 32, b"o" * 32


def _reply(name: bytes) -> list[Any]:
    return [JOB_DONE, name, [["meta"]]]


async def test_a_kept_result_goes_to_the_peer_that_sent_the_job_only() -> None:
    kept = KeptResults()
    token = kept.started(JOB, "gateway-peer")
    kept.finished(JOB, token, _reply(b"r"), [b"out"])
    assert await kept.fetch(JOB, "gateway-peer", 1) == (_reply(b"r"), [b"out"])
    with pytest.raises(Refused) as refused:
        await kept.fetch(JOB, "someone-else", 1)
    assert refused.value.code == UNKNOWN
    with pytest.raises(Refused):
        await kept.fetch(OTHER_JOB, "gateway-peer", 1)
    assert kept.fetched == 1


async def test_a_fetch_waits_for_a_job_still_computing() -> None:
    kept = KeptResults()
    token = kept.started(JOB, "peer")
    got: list[Any] = []

    async def fetch() -> None:
        got.append(await kept.fetch(JOB, "peer", 10))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fetch)
            await trio.testing.wait_all_tasks_blocked()  # the fetch waits on the running job
            assert not got
            kept.finished(JOB, token, _reply(b"late"), [b"x"])
    assert got == [(_reply(b"late"), [b"x"])]


async def test_a_failed_job_or_one_that_outlasts_the_wait_has_no_result(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kept = KeptResults()
    token = kept.started(JOB, "peer")
    with pytest.raises(Refused, match="still computing"):
        await kept.fetch(JOB, "peer", 0.05)
    codes: list[str] = []

    async def fetch() -> None:
        with pytest.raises(Refused) as refused:
            await kept.fetch(JOB, "peer", 10)
        codes.append(refused.value.code)
        assert "still computing" not in refused.value.reason  # ended by the failure, not the wait

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fetch)
            await trio.testing.wait_all_tasks_blocked()
            kept.failed(JOB, token)  # the waiting fetch ends at once, with nothing
    assert codes == [UNKNOWN]


async def test_a_retry_of_the_same_job_is_not_dropped_by_the_end_of_the_first_run() -> None:
    kept = KeptResults()
    first = kept.started(JOB, "peer")
    second = kept.started(JOB, "peer")  # the gateway sent the same job again
    kept.failed(JOB, first)  # the first run ends (refused, broken stream)
    kept.finished(JOB, first, _reply(b"stale"), [b"s"])  # ignored: not the current run
    kept.finished(JOB, second, _reply(b"new"), [b"n"])
    assert await kept.fetch(JOB, "peer", 1) == (_reply(b"new"), [b"n"])


def test_results_go_oldest_first_beyond_the_byte_and_age_bounds() -> None:
    now = [0.0]
    kept = KeptResults(keep_s=60, keep_bytes=10, clock=lambda: now[0])
    for i, size in enumerate((4, 4, 4)):
        job = bytes([i]) * 32
        kept.finished(job, kept.started(job, "p"), _reply(b"r"), [b"x" * size])
    assert kept.bytes == 8  # the first went to make room for the third
    assert [j[0] for j in kept._done] == [1, 2]
    too_big = b"\x09" * 32
    kept.finished(too_big, kept.started(too_big, "p"), _reply(b"r"), [b"x" * 11])
    assert too_big not in kept._done and kept.bytes == 8  # never kept, nothing evicted for it
    now[0] = 61.0
    late = b"\x07" * 32
    kept.finished(late, kept.started(late, "p"), _reply(b"r"), [b"y"])
    assert list(kept._done) == [late] and kept.bytes == 1
    now[0] = 122.0  # no job finishes or is fetched: the periodic sweep frees it
    kept.expire()
    assert not kept._done and kept.bytes == 0


async def _ask(node: P2PNode, orch: ID, request: list[Any]) -> MessageStream:
    stream = await node.running.host.new_stream(orch, [RESULT_PROTOCOL])
    ms = MessageStream(stream, node.config.max_frame_bytes, 30)
    await ms.send(request)
    return ms


async def test_the_result_protocol_between_real_nodes(tmp_path: Path) -> None:
    clip = await trio.to_thread.run_sync(generate_clip, tmp_path / "clip.mp4", "160x90", 4.0, 15)
    config = GatewayConfig(profiles="90p:100k", preset="ultrafast", job_timeout_s=60)
    plan = default_plan(1, config, ticket_ev=Fraction(10**9), capacity=1)
    ledger = await trio.to_thread.run_sync(embedded_ledger, plan)
    async with open_network(tmp_path / "nodes", plan, ledger) as net:
        with trio.fail_after(120):
            report = await net.gateway.transcode_file(clip, tmp_path / "out")
            assert report.completed == 2 and report.failed == 0
            gateway = net.gateway.node
            orchestrator = net.member("orchestrator0").node
            orch_peer = ID.from_base58(orchestrator.peer_id)
            job_id = net.gateway.verdicts[0].job_id

            ms = await _ask(gateway, orch_peer, [RESULT_REQUEST, VERSION, job_id])
            result, metas, blobs = await read_result(gateway, ms, JOB_DONE, orch_peer)
            body = k.read_body(result)
            assert isinstance(body, k.JobResult) and body.job_id == job_id
            assert tuple(keccak256(b) for b in blobs) == body.output_hashes and len(metas) == 1
            assert net.orchestrators[0].results.fetched == 1

            # another peer, a malformed request, an unknown job: each refused, clearly
            stranger = net.member("delegator").node
            ms = await _ask(stranger, orch_peer, [RESULT_REQUEST, VERSION, job_id])
            with pytest.raises(Refused) as refused:
                await read_result(stranger, ms, JOB_DONE, orch_peer)
            assert refused.value.code == UNKNOWN
            for request, code in (([RESULT_REQUEST, VERSION, b"short"], BAD_REQUEST),
                                  ([RESULT_REQUEST, VERSION, OTHER_JOB], UNKNOWN)):  # fmt: skip
                ms = await _ask(gateway, orch_peer, request)
                with pytest.raises(Refused) as refused:
                    await read_result(gateway, ms, JOB_DONE, orch_peer)
                assert refused.value.code == code
            # and the orchestrator still answers
            ms = await _ask(gateway, orch_peer, [RESULT_REQUEST, VERSION, job_id])
            again, _, _ = await read_result(gateway, ms, JOB_DONE, orch_peer)
            assert again.raw == result.raw
            # what an operator sees of it
            metrics = {m.name: m.samples[0].value for m in
                       orchestrator_families(SimpleNamespace(orchestrator=net.orchestrators[0]))
                       if m.name.startswith("castnet_orchestrator_")}  # fmt: skip
            assert metrics["castnet_orchestrator_results_fetched"] == 2
            assert metrics["castnet_orchestrator_kept_results_bytes"] >= sum(map(len, blobs)) > 0
