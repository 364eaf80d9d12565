"""Many jobs at once: N uploads sent together to the gateway's HTTP API, on the in-process network
(a gateway and orchestrators on 127.0.0.1 libp2p, embedded chain, tickets, verification), with
`gateway.max_jobs = 1` (one job after another) against the default (several at once, sharing
the orchestrators), same network, alternating, medians over the rounds. A job's latency is from
the start of its upload to its `finished_ms`; the spread is the slowest job's latency over the
fastest's. The load average is printed with each run (other work on the machine skews it).

    .venv/bin/python bench/jobs_bench.py [--jobs 8] [--seconds 6] [--rounds 3] [--json]
    .venv/bin/python bench/jobs_bench.py --long 30 --jobs 4   # a long upload, then 3 short ones
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import trio

from node.api.app import GatewayApi
from node.api.server import serve_api
from node.config import ApiConfig
from node.gateway.job_book import DONE, FAILED, MAX_JOBS, JobBook
from node.gateway.jobs import JobRunner
from node.gateway.role import GatewayConfig
from node.local.demo import generate_clip
from node.local.network import Network, default_plan, embedded_ledger, open_network

POLL_S = 0.1
RUN_TIMEOUT_S = 900.0


def call(api: str, method: str, path: str, body: bytes | None = None) -> Any:
    """One request to the API (blocking: run it in a thread); its JSON answer."""
    url = urlsplit(api)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "video/mp4"} if body else {})
        response = conn.getresponse()
        answer = json.loads(response.read())
        if response.status not in (200, 202):
            raise RuntimeError(f"{method} {path}: {response.status} {answer}")
        return answer
    finally:
        conn.close()


async def one_run(
    net: Network,
    folder: Path,
    data: bytes,
    jobs: int,
    max_jobs: int,
    profiles: str,
    long: bytes | None = None,
) -> dict[str, Any]:
    """Send `jobs` uploads at once to a fresh runner with `max_jobs` (with `long`, that one
    first, then the `jobs` - 1 others at once); wait for all of them."""
    book = JobBook(folder)
    runner = JobRunner(net.gateway, book, min_offers=len(net.orchestrators), max_jobs=max_jobs)
    load_before = os.getloadavg()[0]
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        config = ApiConfig(port=0, require_token=False)
        api = GatewayApi(config, book, runner.enqueue, dict, profiles, runner.stop,
                         runner.queue_position)  # fmt: skip
        host, port = await nursery.start(serve_api, api)
        url = f"http://{host}:{port}"
        sent: dict[str, float] = {}

        async def send(body: bytes) -> str:
            began = time.time()
            path = f"/v1/transcode?profiles={profiles}"
            job = await trio.to_thread.run_sync(lambda: call(url, "POST", path, body))
            sent[job["id"]] = began
            return job["id"]

        with trio.fail_after(RUN_TIMEOUT_S):
            long_id = await send(long) if long is not None else ""
            async with trio.open_nursery() as uploads:
                for _ in range(jobs - bool(long_id)):
                    uploads.start_soon(send, data)
            while True:
                listing = await trio.to_thread.run_sync(lambda: call(url, "GET", "/v1/jobs"))
                records = [r for r in listing["jobs"] if r["id"] in sent]
                if len(records) == jobs and all(r["status"] in (DONE, FAILED) for r in records):
                    break
                await trio.sleep(POLL_S)
        nursery.cancel_scope.cancel()
    latency = {r["id"]: r["finished_ms"] / 1000 - sent[r["id"]] for r in records}
    latencies = sorted(latency.values())
    total = max(r["finished_ms"] for r in records) / 1000 - min(sent.values())
    more: dict[str, Any] = {}
    if long_id:  # the long job against the short ones sent just after it
        short = sorted(v for k, v in latency.items() if k != long_id)
        more = {"long_latency_s": round(latency[long_id], 2),
                "short_p50_s": round(statistics.median(short), 2),
                "short_max_s": round(short[-1], 2)}  # fmt: skip
    return more | {
        "max_jobs": max_jobs,
        "jobs": jobs,
        "failed": sum(r["status"] == FAILED for r in records),
        "segments": sum(r["progress"]["segments_total"] for r in records),
        "total_s": round(total, 2),
        "latency_p50_s": round(statistics.median(latencies), 2),
        "latency_min_s": round(latencies[0], 2),
        "latency_max_s": round(latencies[-1], 2),
        "spread": round(latencies[-1] / latencies[0], 2),
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


async def bench(args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    clip = generate_clip(root / "clip.mp4", args.size, args.seconds)
    data = clip.read_bytes()
    long = None
    if args.long:
        long = generate_clip(root / "long.mp4", args.size, args.long).read_bytes()
    cfg = GatewayConfig(profiles=args.profiles, preset=args.preset)
    plan = default_plan(args.orchestrators, cfg, capacity=args.capacity)
    ledger = await trio.to_thread.run_sync(embedded_ledger, plan)
    runs = []
    async with open_network(root / "nodes", plan, ledger) as net:
        for round_ in range(args.rounds):
            modes = (1, args.max_jobs) if round_ % 2 == 0 else (args.max_jobs, 1)
            for max_jobs in modes:
                folder = root / f"jobs-{round_}-{max_jobs}"
                run = await one_run(net, folder, data, args.jobs, max_jobs, args.profiles,
                                    long)  # fmt: skip
                run["round"] = round_
                runs.append(run)
                if args.json:
                    print(json.dumps(run), flush=True)
                else:
                    print(f"round {round_} max_jobs={max_jobs}: {run['jobs']} jobs "
                          f"({run['segments']} segments, {run['failed']} failed) in "
                          f"{run['total_s']:.1f} s; latency p50 {run['latency_p50_s']:.1f} s, "
                          f"min {run['latency_min_s']:.1f} s, max {run['latency_max_s']:.1f} s "
                          f"(x{run['spread']:.1f}); load {run['load_before']:.1f} -> "
                          f"{run['load_after']:.1f}", flush=True)  # fmt: skip
                    if long is not None:
                        print(f"  the long job {run['long_latency_s']:.1f} s; the short jobs "
                              f"sent after it: p50 {run['short_p50_s']:.1f} s, max "
                              f"{run['short_max_s']:.1f} s", flush=True)  # fmt: skip
    return runs


def summary(runs: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"summary": True, "jobs": args.jobs, "seconds": args.seconds,
                           "size": args.size, "profiles": args.profiles,
                           "orchestrators": args.orchestrators, "capacity": args.capacity,
                           "rounds": args.rounds, "long": args.long}  # fmt: skip
    keys = ["total_s", "latency_p50_s", "latency_max_s", "spread", "load_before"]
    if args.long:
        keys += ["long_latency_s", "short_p50_s", "short_max_s"]
    for max_jobs in sorted({1, args.max_jobs}):
        mine = [r for r in runs if r["max_jobs"] == max_jobs]
        out[f"max_jobs_{max_jobs}"] = {
            key: round(statistics.median(r[key] for r in mine), 2) for key in keys
        } | {"failed": sum(r["failed"] for r in mine)}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8, help="uploads sent at once")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each upload")
    parser.add_argument("--size", default="320x180")
    parser.add_argument("--profiles", default="144p")
    parser.add_argument("--preset", default="veryfast")
    parser.add_argument("--orchestrators", type=int, default=3)
    parser.add_argument("--capacity", type=int, default=2, help="slots per orchestrator")
    parser.add_argument("--max-jobs", type=int, default=MAX_JOBS, help="compared with 1")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of both modes")
    parser.add_argument("--long", type=float, default=0.0, help="seconds of one long upload "
                        "sent first, the others just after it (0: all alike)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="one JSON object per run, then one "
                        "with the medians")  # fmt: skip
    args = parser.parse_args()
    if args.jobs < 1 + bool(args.long) or args.rounds < 1 or args.max_jobs < 2:
        parser.error("--jobs (>= 2 with --long) and --rounds must be >= 1, --max-jobs >= 2")
    with tempfile.TemporaryDirectory(prefix="castnet-jobs-bench-") as tmp:
        runs = trio.run(bench, args, Path(tmp))
    result = summary(runs, args)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"\n{args.jobs} uploads of {args.seconds:g} s ({args.size}, {args.profiles}) at once, "
          f"{args.orchestrators} orchestrators x {args.capacity} slots, medians of "
          f"{args.rounds} round(s):")  # fmt: skip
    print(f"{'max_jobs':>9} {'total s':>8} {'p50 s':>7} {'max s':>7} {'spread':>7} {'load':>6}")
    for max_jobs in sorted({1, args.max_jobs}):
        m = result[f"max_jobs_{max_jobs}"]
        row = (
            f"{max_jobs:>9} {m['total_s']:>8.1f} {m['latency_p50_s']:>7.1f} "
            f"{m['latency_max_s']:>7.1f} {m['spread']:>7.2f} {m['load_before']:>6.1f}"
        )
        if args.long:
            row += (f"   long {m['long_latency_s']:.1f} s, short p50 {m['short_p50_s']:.1f} s, "
                    f"short max {m['short_max_s']:.1f} s")  # fmt: skip
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
