"""The gateway cuts and probes a file job's input only a segment ahead of the segments holding a
scheduler place (node.gateway.role.CUT_AHEAD): while every place is taken, the rest of the input
is not cut, so the first segments' quote, tickets and upload do not wait for the gateway's cores
behind the whole input's cutting and probing. Real network on 127.0.0.1 (embedded chain), real
encodes; the orchestrator's first compute is held until the counts are read (events, no sleeps)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import trio

import node.gateway.role as gateway_role
import node.orchestrator.role as orch_role
from media.segmenter import Segment
from node.gateway.role import CUT_AHEAD, GatewayConfig
from node.gateway.scheduler import SegmentScheduler
from node.local.demo import generate_clip
from node.local.network import default_plan, embedded_ledger, open_network
from node.orchestrator.role import Orchestrator

SEGMENTS = 8  # a 16 s clip with a keyframe every 2 s
HOLD_S = 60.0  # the held compute's own bound, should the test fail before releasing it


async def test_the_input_is_cut_one_segment_ahead_of_the_places(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clip = await trio.to_thread.run_sync(generate_clip, tmp_path / "clip.mp4", "160x90", 16.0, 15)
    cut: list[int] = []
    probed: list[int] = []
    computing, release = threading.Event(), threading.Event()
    claims, claimed_two = 0, trio.Event()
    segment, prepare = gateway_role.segment, gateway_role._Transcode.prepare
    transcode, claim = orch_role.transcode, Orchestrator._claim
    acquire, asked, one_waits = SegmentScheduler.acquire, [0], trio.Event()

    def counted_segment(*args: Any, **kwargs: Any) -> Iterator[Segment]:
        for seg in segment(*args, **kwargs):
            cut.append(seg.seq)
            yield seg

    async def counted_prepare(self: Any) -> Any:
        probed.append(self.seq)
        return await prepare(self)

    def held_transcode(*args: Any, **kwargs: Any) -> Any:
        computing.set()
        release.wait(HOLD_S)
        return transcode(*args, **kwargs)

    async def counted_claim(self: Orchestrator, job_id: bytes) -> None:
        nonlocal claims
        await claim(self, job_id)
        claims += 1
        if claims == 2:  # one computing, one staged behind it: the orchestrator's slot is full
            claimed_two.set()

    async def counted_acquire(self: SegmentScheduler, job: Any) -> None:
        asked[0] += 1
        if asked[0] > self.limit():  # every place is taken: this segment waits for one
            one_waits.set()
        await acquire(self, job)

    monkeypatch.setattr(gateway_role, "segment", counted_segment)
    monkeypatch.setattr(SegmentScheduler, "acquire", counted_acquire)
    monkeypatch.setattr(gateway_role._Transcode, "prepare", counted_prepare)
    monkeypatch.setattr(orch_role, "transcode", held_transcode)
    monkeypatch.setattr(Orchestrator, "_claim", counted_claim)

    gw_config = GatewayConfig(profiles="90p:100k", preset="ultrafast", job_timeout_s=60)
    plan = default_plan(1, gw_config, ticket_ev=Fraction(10**9), capacity=1)
    ledger = await trio.to_thread.run_sync(embedded_ledger, plan)
    async with open_network(tmp_path / "nodes", plan, ledger) as net:
        gateway = net.gateway
        places = gateway.scheduler.limit()  # (depth + 1) places for the one slot
        reports: list[Any] = []

        async def job() -> None:
            reports.append(await gateway.transcode_file(clip, tmp_path / "out"))

        try:
            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(job)
                    assert await trio.to_thread.run_sync(computing.wait, 30)
                    await claimed_two.wait()
                    # every place is taken (none frees while the compute is held) and the
                    # segment after them waits for one: nothing more is probed, and the
                    # segmenter stops once it has cut the segment after that
                    await one_waits.wait()
                    assert gateway.scheduler.in_flight == places < SEGMENTS - CUT_AHEAD - 1
                    assert gateway.scheduler.waiting() == CUT_AHEAD
                    assert sorted(probed) == list(range(places + CUT_AHEAD))
                    assert len(cut) <= places + CUT_AHEAD + 1 < SEGMENTS
                    release.set()
        finally:
            release.set()

    (report,) = reports
    assert report.completed == SEGMENTS and report.failed == 0
    assert sorted(probed) == list(range(SEGMENTS)) and len(cut) == SEGMENTS
    assert [s.seq for s in report.segments] == list(range(SEGMENTS))
