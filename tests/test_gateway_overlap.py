"""How the gateway overlaps a file job's steps (node.gateway.role, node.gateway.market): it cuts the
input only a segment ahead of the segments holding a scheduler place (CUT_AHEAD) and probes a
segment once it has an orchestrator's slot (one that does not probe gives the slot back); an
orchestrator's uploads go one at a time; two segments being checked in full do not hold back the
next upload (CHECKED_PER_SLOT); and the quote fetched ahead of the first segment is answered
before another segment's quote. Real network on 127.0.0.1 (embedded chain), real encodes; the
step a test holds waits on an event, no sleeps."""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import trio

import node.gateway.role as gateway_role
import node.orchestrator.role as orch_role
from media.errors import MediaError
from media.segmenter import Segment
from node.gateway.market import PIPELINE_DEPTH, SegmentMarket
from node.gateway.payment import Payer
from node.gateway.quotes import QuotesAhead
from node.gateway.role import CUT_AHEAD, GatewayConfig, GatewayError, JobReport
from node.gateway.scheduler import SegmentScheduler
from node.local.demo import generate_clip
from node.local.network import Network, default_plan, embedded_ledger, open_network
from node.orchestrator.role import Orchestrator
from node.protocol import JOB_REQUEST
from p2p.framing import MessageStream

SEGMENTS = 8  # a 16 s clip with a keyframe every 2 s
HOLD_S = 60.0  # a held step's own bound, should a test fail before releasing it


@asynccontextmanager
async def one_slot(tmp_path: Path, verify: str = "sample") -> AsyncIterator[tuple[Network, Path]]:
    """One orchestrator of one compute slot, and a 16 s clip."""
    clip = await trio.to_thread.run_sync(generate_clip, tmp_path / "clip.mp4", "160x90", 16.0, 15)
    gw_config = GatewayConfig(profiles="90p:100k", preset="ultrafast", job_timeout_s=60,
                              verify=verify)  # fmt: skip
    plan = default_plan(1, gw_config, ticket_ev=Fraction(10**9), capacity=1)
    ledger = await trio.to_thread.run_sync(embedded_ledger, plan)
    async with open_network(tmp_path / "nodes", plan, ledger) as net:
        yield net, clip


def counted_claims(monkeypatch: pytest.MonkeyPatch, count: int) -> trio.Event:
    """An event set once the orchestrator has claimed `count` jobs."""
    claim, claims, reached = Orchestrator._claim, [0], trio.Event()

    async def counted(self: Orchestrator, job_id: bytes) -> None:
        await claim(self, job_id)
        claims[0] += 1
        if claims[0] == count:
            reached.set()

    monkeypatch.setattr(Orchestrator, "_claim", counted)
    return reached


def assert_complete(report: JobReport) -> None:
    assert report.completed == SEGMENTS and report.failed == 0
    assert [s.seq for s in report.segments] == list(range(SEGMENTS))


async def test_the_input_is_cut_one_segment_ahead_of_the_places(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cut: list[int] = []
    probed: list[int] = []
    computing, release = threading.Event(), threading.Event()
    segment, prepare = gateway_role.segment, gateway_role._Transcode.prepare
    transcode, acquire = orch_role.transcode, SegmentScheduler.acquire
    asked, one_waits = [0], trio.Event()

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

    async def counted_acquire(self: SegmentScheduler, job: Any) -> None:
        asked[0] += 1
        if asked[0] > self.limit():  # every place is taken: this segment waits for one
            one_waits.set()
        await acquire(self, job)

    monkeypatch.setattr(gateway_role, "segment", counted_segment)
    monkeypatch.setattr(gateway_role._Transcode, "prepare", counted_prepare)
    monkeypatch.setattr(orch_role, "transcode", held_transcode)
    monkeypatch.setattr(SegmentScheduler, "acquire", counted_acquire)
    staged = counted_claims(monkeypatch, PIPELINE_DEPTH)  # one computing, the rest staged
    reports: list[JobReport] = []
    async with one_slot(tmp_path) as (net, clip):
        gateway = net.gateway
        places = gateway.scheduler.limit()  # for the one slot
        assert places + CUT_AHEAD + 1 < SEGMENTS

        async def job() -> None:
            reports.append(await gateway.transcode_file(clip, tmp_path / "out"))

        try:
            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(job)
                    assert await trio.to_thread.run_sync(computing.wait, 30)
                    await staged.wait()
                    await one_waits.wait()
                    # every place is taken (none frees while the compute is held) and the
                    # segment after them waits for one; only the segments the orchestrator
                    # took (one computing, the rest staged) are probed: those with a place
                    # wait for its slot unprobed, and the segmenter stops once it has cut the
                    # segment after the one waiting for a place
                    assert gateway.scheduler.in_flight == places
                    assert gateway.scheduler.waiting() == CUT_AHEAD
                    assert sorted(probed) == list(range(PIPELINE_DEPTH))
                    assert len(cut) <= places + CUT_AHEAD + 1
                    release.set()
        finally:
            release.set()
    (report,) = reports
    assert_complete(report)
    assert sorted(probed) == list(range(SEGMENTS)) and len(cut) == SEGMENTS


async def test_a_segment_that_does_not_probe_gives_its_slot_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A segment is probed once it has an orchestrator's slot; one whose probe fails gives the
    slot back, fails alone with the probe's error, and the job's other segments all land."""
    prepare = gateway_role._Transcode.prepare

    async def broken_prepare(self: Any) -> Any:
        if self.seq == 2:
            raise MediaError("segment 2: invalid data found when processing input")
        return await prepare(self)

    monkeypatch.setattr(gateway_role._Transcode, "prepare", broken_prepare)
    async with one_slot(tmp_path) as (net, clip):
        gateway = net.gateway
        failed = r"1 of 8 segments failed: 2: MediaError\('segment 2: invalid data"
        with trio.fail_after(60), pytest.raises(GatewayError, match=failed):
            await gateway.transcode_file(clip, tmp_path / "out")
        (orch,) = net.orchestrators
        assert gateway.selector.local[orch.address].in_flight == 0


async def test_an_orchestrators_uploads_go_one_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first segment's upload is held until the second segment either waits for its turn
    or sends its request: the second waits for the first upload to end before it sends anything
    (so at a job's start the first segment's upload has the connection and the cores to
    itself), and the job's uploads never overlap."""
    uploads: list[list[float]] = []  # [start, end] per upload, in the order they start
    second_came = trio.Event()
    held_to_the_bound = []

    class Watched:
        """An upload lock that says when a segment finds it taken."""

        def __init__(self, lock: trio.Lock) -> None:
            self.lock = lock

        async def __aenter__(self) -> None:
            if self.lock.locked():
                second_came.set()
            await self.lock.acquire()

        async def __aexit__(self, *exc: object) -> None:
            self.lock.release()

    class WatchedLocks(dict[Any, Any]):
        def setdefault(self, key: Any, default: Any = None) -> Any:
            return super().setdefault(key, Watched(default))

    class Recorded(MessageStream):
        async def send(self, fields: list[Any]) -> None:
            if fields[0] == JOB_REQUEST:
                uploads.append([trio.current_time(), math.inf])
                if len(uploads) == 2:
                    second_came.set()
            await super().send(fields)

        async def send_blob(self, data: bytes) -> bytes:
            mine = len(uploads) - 1
            if mine == 0:
                with trio.move_on_after(HOLD_S) as hold:
                    await second_came.wait()
                held_to_the_bound.append(hold.cancelled_caught)
            digest = await super().send_blob(data)
            uploads[mine][1] = trio.current_time()
            return digest

    def recorded(self: Any, stream: Any, timeout: float) -> MessageStream:
        cfg = self.node.config
        return Recorded(stream, cfg.max_frame_bytes, timeout)

    monkeypatch.setattr(SegmentMarket, "_stream", recorded)
    async with one_slot(tmp_path) as (net, clip):
        net.gateway._uploads = WatchedLocks()
        with trio.fail_after(2 * HOLD_S):
            report = await net.gateway.transcode_file(clip, tmp_path / "out")
    assert_complete(report)
    assert held_to_the_bound == [False]  # the second segment came while the first was held
    assert len(uploads) == SEGMENTS
    for (_, end), (start, _) in itertools.pairwise(uploads):
        assert end <= start


async def test_two_full_checks_do_not_hold_back_the_next_upload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While segments 0 and 1 are both checked in full (as an orchestrator's first two are),
    segment 2 computes and segment 3 is still uploaded to be staged behind it (with one place
    for checks, segment 3 waited for segment 0's check)."""
    check, held, release = gateway_role._Transcode.check, [0], threading.Event()
    run_job, entered, four_up = Orchestrator._run_job, [0], trio.Event()

    def held_check(self: Any, *args: Any) -> list[str]:
        held[0] += 1
        release.wait(HOLD_S)  # every check waits until the fourth upload is seen
        return check(self, *args)

    async def counted_run_job(self: Orchestrator, *args: Any) -> Any:
        entered[0] += 1
        if entered[0] == 4:
            four_up.set()
        return await run_job(self, *args)

    monkeypatch.setattr(gateway_role._Transcode, "check", held_check)
    monkeypatch.setattr(Orchestrator, "_run_job", counted_run_job)
    reports: list[JobReport] = []
    async with one_slot(tmp_path, verify="all") as (net, clip):

        async def job() -> None:
            reports.append(await net.gateway.transcode_file(clip, tmp_path / "out"))

        try:
            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(job)
                    with trio.fail_after(20):  # one place for checks: it never comes
                        await four_up.wait()
                    assert held[0] >= 2  # segments 0 and 1 are being checked, still held
                    release.set()
        finally:
            release.set()
    (report,) = reports
    assert_complete(report)
    assert held[0] == SEGMENTS  # verify "all": every segment checked in full


async def test_the_quote_fetched_ahead_is_answered_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job's first quote (fetched while the input is cut) is held at the orchestrator until
    two segments' attempts wait for a quote: the second asks for its own only once the first is
    answered, so the orchestrator answers the first segment's quote first."""
    handle, quote, ask = Orchestrator._handle_quote, QuotesAhead.quote, Payer.quote
    answered = trio.Event()
    received = trio.Event()
    asked_with_first_answered: list[bool] = []  # per quote the gateway sends, in order
    waiting, two_wait = [0], trio.Event()

    async def held_quote(self: Orchestrator, stream: Any) -> None:
        first = not answered.is_set() and not asked_with_first_answered[1:]
        if first:
            with trio.move_on_after(HOLD_S):
                await two_wait.wait()
        await handle(self, stream)
        answered.set()

    async def counted_quote(self: QuotesAhead, orch: bytes, peer: Any) -> Any:
        waiting[0] += 1
        if waiting[0] == 2:
            two_wait.set()
        return await quote(self, orch, peer)

    async def recorded_ask(self: Payer, peer: Any) -> Any:
        # "answered" as the gateway knows it: the first quote's answer has come back (the
        # orchestrator's handler finishes later, after closing its stream)
        asked_with_first_answered.append(received.is_set())
        first = len(asked_with_first_answered) == 1
        result = await ask(self, peer)
        if first:
            received.set()
        return result

    monkeypatch.setattr(Orchestrator, "_handle_quote", held_quote)
    monkeypatch.setattr(QuotesAhead, "quote", counted_quote)
    monkeypatch.setattr(Payer, "quote", recorded_ask)
    async with one_slot(tmp_path) as (net, clip):
        with trio.fail_after(60):
            report = await net.gateway.transcode_file(clip, tmp_path / "out")
    assert_complete(report)
    # the quote fetched ahead went first, unanswered; every other one after it was answered
    assert asked_with_first_answered[0] is False
    assert len(asked_with_first_answered) == SEGMENTS
    assert all(asked_with_first_answered[1:])
