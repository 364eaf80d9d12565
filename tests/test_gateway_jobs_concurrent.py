"""Several file jobs at once in the gateway (`gateway.max_jobs`): up to that many run together and
share the orchestrators through the segment scheduler, so a short job submitted after a long one
finishes first; the rest wait in order of arrival and the job API shows their `queue_position`;
`max_jobs = 1` runs them one after another. Real network on 127.0.0.1 (embedded chain), real
encodes; every status change of every job is recorded as it is written (no sleeps)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import trio
from api_client import request_json, upload, wait_job

from node.api.app import GatewayApi
from node.api.server import serve_api
from node.config import ApiConfig, ConfigError, build_config
from node.gateway.job_book import DONE, RUNNING, JobBook, JobRecord
from node.gateway.jobs import JobRunner
from node.gateway.role import GatewayConfig
from node.gateway.scheduler import SegmentScheduler
from node.local.demo import generate_clip
from node.local.network import Network, default_plan, embedded_ledger, open_network

PROFILES = "90p:100k"
Snapshot = tuple[dict[str, str], dict[str, int | None]]  # statuses, queue positions


class WatchedBook(JobBook):
    """A job book that takes a snapshot of every job's status and queue position, in the trio
    thread, each time a job's status is written."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.token = trio.lowlevel.current_trio_token()
        self.runner: JobRunner | None = None
        self.history: list[Snapshot] = []

    def put(self, record: JobRecord, sync: bool = True) -> JobRecord:
        before = self.get(record.id)
        stored = super().put(record, sync)
        if before is None or before.status != record.status:
            self.token.run_sync_soon(self._snapshot)  # from the trio thread or a worker thread
        return stored

    def _snapshot(self) -> None:
        statuses = {r.id: r.status for r in self.all()}
        runner = self.runner
        positions = {i: runner.queue_position(i) if runner else None for i in statuses}
        self.history.append((statuses, positions))

    def most_running(self) -> int:
        return max(sum(s == RUNNING for s in statuses.values()) for statuses, _ in self.history)

    def positions(self, job_id: str) -> list[int]:
        """The job's queue positions as the snapshots saw them while the runner held it."""
        seen = [p.get(job_id) for _, p in self.history]
        return [p for p in seen if p is not None]


@asynccontextmanager
async def network(tmp_path: Path) -> AsyncIterator[Network]:
    """Two orchestrators of one slot each: four segments in flight at most (two per slot)."""
    plan = default_plan(2, GatewayConfig(profiles=PROFILES, preset="ultrafast", job_timeout_s=30),
                        ticket_ev=Fraction(10**9), capacity=1)  # fmt: skip
    ledger = await trio.to_thread.run_sync(embedded_ledger, plan)
    async with open_network(tmp_path / "nodes", plan, ledger) as net:
        yield net


@asynccontextmanager
async def gateway_api(
    net: Network, folder: Path, max_jobs: int
) -> AsyncIterator[tuple[str, WatchedBook, Callable[[], Any]]]:
    """The gateway's API over a fresh book; its runner starts when the returned function is
    awaited, so jobs submitted before then are all queued."""
    book = WatchedBook(folder)
    runner = JobRunner(net.gateway, book, min_offers=2, offer_wait_s=10.0, max_jobs=max_jobs)
    book.runner = runner
    async with trio.open_nursery() as nursery:
        api = GatewayApi(ApiConfig(port=0, require_token=False), book, runner.enqueue, dict,
                         PROFILES, runner.stop, runner.queue_position)  # fmt: skip
        host, port = await nursery.start(serve_api, api)

        async def start_runner() -> None:
            await nursery.start(runner.run)

        yield f"http://{host}:{port}", book, start_runner
        nursery.cancel_scope.cancel()


async def submit(api: str, clip: Path) -> str:
    data = clip.read_bytes()
    job = await trio.to_thread.run_sync(lambda: upload(api, data, PROFILES))
    return job["id"]


async def get(api: str, path: str) -> Any:
    status, body = await trio.to_thread.run_sync(lambda: request_json(api, "GET", path))
    assert status == 200, body
    return body


async def test_jobs_share_the_network_and_report_their_place_in_the_queue(tmp_path: Path) -> None:
    long_clip = generate_clip(tmp_path / "long.mp4", "160x90", 16.0, rate=15)  # 8 segments
    short_clip = generate_clip(tmp_path / "short.mp4", "160x90", 4.0, rate=15)  # 2
    tiny_clip = generate_clip(tmp_path / "tiny.mp4", "160x90", 2.0, rate=15)  # 1
    with trio.fail_after(150):
        async with network(tmp_path) as net:
            # max_jobs = 2: a long job, then a short one, then two tiny ones that must wait
            async with gateway_api(net, tmp_path / "jobs2", 2) as (api, book, start):
                ids = [await submit(api, c) for c in (long_clip, short_clip, tiny_clip, tiny_clip)]
                listed = {j["id"]: j for j in (await get(api, "/v1/jobs"))["jobs"]}
                assert [listed[i]["queue_position"] for i in ids] == [1, 2, 3, 4]
                one = await get(api, f"/v1/jobs/{ids[3]}")
                assert (one["status"], one["queue_position"]) == ("queued", 4)

                await start()
                final = [await wait_job(api, i, 100) for i in ids]
                assert [r["status"] for r in final] == [DONE] * 4, final
                assert [r["progress"]["segments_done"] for r in final] == [8, 2, 1, 1]
                assert all("queue_position" not in r for r in final)  # held no more

                long, short, first, second = final
                # two ran at once, never more
                assert book.most_running() == 2
                assert short["started_ms"] < long["finished_ms"]
                # the short job, submitted after the long one, was not stuck behind it
                assert short["finished_ms"] < long["finished_ms"]
                # the waiting jobs started in order of arrival, each once a running one ended
                assert first["started_ms"] >= min(long["finished_ms"], short["finished_ms"])
                assert second["started_ms"] >= first["started_ms"]
                # their places only went down, to 0 when they ran
                for job_id, expected in ((ids[2], {3, 1, 0}), (ids[3], {4, 2, 0})):
                    places = [listed[job_id]["queue_position"], *book.positions(job_id)]
                    assert places == sorted(places, reverse=True), places
                    assert expected <= set(places) and places[-1] == 0, places
                # both orchestrators took segments (one slot each: the load was spread)
                assert len({o for r in final for o in r["orchestrators"]}) == 2, final
                assert net.gateway.scheduler.in_flight == 0

            # max_jobs = 1: one after another, in order of arrival
            async with gateway_api(net, tmp_path / "jobs1", 1) as (api, book, start):
                ids = [await submit(api, tiny_clip) for _ in range(3)]
                listed = {j["id"]: j for j in (await get(api, "/v1/jobs"))["jobs"]}
                await start()
                final = [await wait_job(api, i, 60) for i in ids]
                assert [r["status"] for r in final] == [DONE] * 3, final
                assert book.most_running() == 1
                for before, after in itertools.pairwise(final):
                    assert after["started_ms"] >= before["finished_ms"]
                places = [listed[ids[2]]["queue_position"], *book.positions(ids[2])]
                assert places == sorted(places, reverse=True) and {3, 2, 1, 0} <= set(places)


async def test_scheduler_hands_places_to_jobs_in_turn() -> None:
    """One place: a job of four segments asked first, a job of two after; places alternate."""
    scheduler = SegmentScheduler(lambda: 1)
    order: list[str] = []
    release: dict[str, trio.Event] = {}

    async def segment(job: str, name: str) -> None:
        async with scheduler.place(job):
            release[name] = trio.Event()
            order.append(name)
            await release[name].wait()

    async def until(done: Callable[[], bool]) -> None:
        while not done():
            await trio.lowlevel.checkpoint()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            asked = [("big", "big0"), ("big", "big1"), ("big", "big2"), ("big", "big3"),
                     ("small", "small0"), ("small", "small1")]  # fmt: skip
            for count, (job, name) in enumerate(asked, 1):  # one at a time: a known order
                nursery.start_soon(segment, job, name)
                await until(lambda c=count: scheduler.in_flight + scheduler.waiting() == c)
            assert order == ["big0"] and scheduler.waiting("big") == 3
            # a waiter cancelled before its turn leaves the queue without taking a place
            with trio.CancelScope() as gone:
                gone.cancel()
                await scheduler.acquire("other")
            assert gone.cancelled_caught and scheduler.waiting("other") == 0
            assert scheduler.in_flight == 1 and scheduler.waiting() == 5
            expected = ["big0", "big1", "small0", "big2", "small1", "big3"]
            for i, name in enumerate(expected):
                release[name].set()
                if i + 1 < len(expected):
                    await until(lambda i=i: len(order) == i + 2)
            assert order == expected
    assert scheduler.in_flight == 0 and scheduler.waiting() == 0


def test_max_jobs_config() -> None:
    base = {"roles": ["gateway"], "data_dir": "d", "ledger": {"kind": "embedded"}}
    assert build_config(base, Path("/tmp")).max_jobs == 4
    config = build_config({**base, "gateway": {"max_jobs": 1}}, Path("/tmp"))
    assert config.max_jobs == 1
    for bad in (0, -2, 1.5, "4", True):
        with pytest.raises(ConfigError, match=r"gateway\.max_jobs must be an integer >= 1"):
            build_config({**base, "gateway": {"max_jobs": bad}}, Path("/tmp"))
