"""End-to-end bench: the demo network (gateway + one orchestrator of capacity 1 on 127.0.0.1
libp2p, tickets on the embedded EVM, verification, logs) against transcoding the same segments
locally in the same process, in the same run, alternating A/B (the order rotates every round);
medians of wall time, throughput (segments/s) and per-segment latency, for each verify policy of
the gateway (node.gateway.verify_policy: "sample", the default, and "all").

    .venv/bin/python bench/e2e_bench.py                      # 720p 3-rung and 640x360 2-rung
    .venv/bin/python bench/e2e_bench.py --config 360p --verify all --rounds 3 --json
    .venv/bin/python bench/e2e_bench.py --live [bench/live_bench.py's options]   # live latency

`--depth 1,2` adds a network path per pipeline depth (segments in flight per orchestrator slot),
an A/B of the gateway's overlap. `--json` prints one JSON object per run (configuration x policy
x depth x placement) with `overhead_pct` (the network's median wall time over the local one's,
minus 1, in percent), `verify`, `depth` and `placement`. The machine's load average is printed
with the figures: compare within one run. With the split placement it also has each path's
median wall time beyond its transcodes (`local_extra_s`, `network_extra_s`: the wall minus the
time the transcodes took in the compute child, per round) and `extra_overhead_pct`, the
network's extra over the local one's in percent of the local wall: the transcodes' own time
varies by 10-25% from round to round and moves both walls with it, so with few rounds
`overhead_pct` spreads wider than what the network adds.

Placement (`--placement split,shared`, default split) is a measurement model, not a deployment:
the network's nodes run in this one process, but a networked segment means a gateway machine and
an orchestrator machine, and the local baseline is one machine. `split` models that with CPU
affinity: the machine's cores are halved into set A and set B. The compute machine is a child
process pinned to A (its own interpreter, as a machine of its own has); the local path's
segmenter and transcode and the orchestrator's transcode both run there (the same function,
so the same cores and the same encoder threads: x264 and FFmpeg size their thread pools from
the affinity mask). Everything else runs in this process on B: the gateway (segmenting,
probing, checks, log), both sides' libp2p and protocol work, the bench driver. What the model
leaves out: the orchestrator's protocol work runs on B beside the gateway's (on its own machine
it would share A with its transcode), and the network is 127.0.0.1. `shared` is the old
measurement: everything in this process, every thread on every core (the gateway's checks and
Python work compete with the orchestrator's x264 for the cores and for the interpreter's lock).
`--trace` prints a per-step timeline of one job (bench/e2e_trace.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from e2e_trace import Trace
from e2e_trace import print_table as print_trace

import node.orchestrator.role as orch_role
from media.profiles import parse_profiles
from media.segmenter import segment
from media.transcoder import transcode
from node.gateway import market
from node.gateway.role import GatewayConfig
from node.gateway.verify_policy import POLICIES
from node.local.demo import generate_clip
from node.local.network import default_plan, embedded_ledger, open_network

# name -> (clip size, ladder)
CONFIGS = {"720p": ("1280x720", "720p,480p,360p"), "360p": ("640x360", "360p,240p")}
PLACEMENTS = ("split", "shared")
ALL_CORES = frozenset(os.sched_getaffinity(0))


@dataclass(frozen=True, slots=True)
class Placement:
    """Core sets: `compute` for the local transcode and the orchestrator's, `rest` for the
    gateway, both sides' protocol work and the driver ("shared": every core for all)."""

    name: str
    compute: frozenset[int]
    rest: frozenset[int]

    @classmethod
    def of(cls, name: str) -> Placement:
        cores = sorted(ALL_CORES)
        if name == "shared" or len(cores) < 2:
            return cls(name, ALL_CORES, ALL_CORES)
        half = len(cores) // 2
        return cls(name, frozenset(cores[:half]), frozenset(cores[half:]))


def place_process(cores: frozenset[int]) -> None:
    """Every thread of this process onto `cores` (new threads inherit their creator's set)."""
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):  # the thread ended meanwhile
            os.sched_setaffinity(int(tid), cores)


def _pin(cores: frozenset[int]) -> None:
    os.sched_setaffinity(0, cores)


def _transcode(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, float, frozenset[int]]:
    started = time.perf_counter()
    result = transcode(*args, **kwargs)
    return result, time.perf_counter() - started, frozenset(os.sched_getaffinity(0))


class Compute:
    """The transcode on a compute machine of its own: a child process (its own interpreter, so
    no lock shared with the gateway's Python work) on `cores`, started once; the local path and
    the orchestrator call the same one, so both pay the same hand-over (the segment in, the
    renditions out, a few milliseconds). Notes the cores each call ran on, and adds the time
    each took in the child to `computed_s`."""

    def __init__(self, cores: frozenset[int]) -> None:
        self.cores = cores
        self.seen: set[frozenset[int]] = set()
        self.computed_s = 0.0
        spawn = multiprocessing.get_context("spawn")  # no fork of a process with threads
        self.pool = ProcessPoolExecutor(1, spawn, initializer=_pin, initargs=(cores,))
        self.pool.submit(os.getpid).result()  # started before anything is timed

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        result, took, cores = self.pool.submit(_transcode, args, kwargs).result()
        self.seen.add(cores)
        self.computed_s += took
        return result

    def close(self) -> None:
        self.pool.shutdown()


@dataclass(slots=True)
class Runs:
    """The walls and per-segment latencies of one path over the rounds."""

    walls: list[float] = field(default_factory=list)
    extras: list[float] = field(default_factory=list)  # wall minus the transcodes (split only)
    latencies: list[float] = field(default_factory=list)
    full_checks: int = 0
    cheap_checks: int = 0

    def median_wall(self) -> float:
        return statistics.median(self.walls)


def local_run(
    clip: Path, profiles: str, preset: str, place: Placement, compute: Compute | None
) -> tuple[float, list[float]]:
    """Segment and transcode on one machine, one segment after another (what the network's
    gateway does too: its wall time includes segmenting): the placement's compute cores, the
    transcode in `compute` (None: in this thread)."""
    ladder = parse_profiles(profiles)
    compute = compute or transcode
    place_process(place.rest)
    os.sched_setaffinity(0, place.compute)  # the segmenter too runs on the one machine
    try:
        started = time.perf_counter()
        latencies = []
        for seg in segment(clip):
            t0 = time.perf_counter()
            compute(seg.data, ladder, preset=preset)
            latencies.append(time.perf_counter() - t0)
        return time.perf_counter() - started, latencies
    finally:
        os.sched_setaffinity(0, place.rest)


async def network_run(
    clip: Path,
    profiles: str,
    preset: str,
    base: Path,
    verify: str,
    depth: int | None = None,
    place: Placement | None = None,
    compute: Compute | None = None,
    trace: Trace | None = None,
) -> tuple[float, list[float], int]:
    """One job on a fresh network; (wall, per-segment latencies, segments checked in full).
    `depth`: segments in flight per orchestrator slot (default: the gateway's PIPELINE_DEPTH);
    `place`: the cores of everything but the orchestrator's transcode, which runs in `compute`
    (default: this process's threads, as the orchestrator does)."""
    if depth is not None:
        market.PIPELINE_DEPTH = depth  # read when the gateway is built, below
    place = place or Placement.of("shared")
    place_process(place.rest)
    cfg = GatewayConfig(profiles=profiles, preset=preset, verify=verify)
    plan = default_plan(1, cfg, capacity=1)
    ledger = await trio.to_thread.run_sync(embedded_ledger, plan)  # the protocol contracts
    if compute is not None:
        orch_role.transcode = compute  # type: ignore[assignment] - the orchestrator's compute
    try:
        async with open_network(base, plan, ledger) as net:
            if trace is not None:
                trace.install()
            try:
                report = await net.gateway.transcode_file(clip, base / "out")
            finally:
                if trace is not None:
                    trace.remove()
    finally:
        orch_role.transcode = transcode
    if compute is not None and compute.seen - {compute.cores}:
        raise RuntimeError(f"the transcode ran on {compute.seen}, not {set(compute.cores)}")
    full = sum(s.full_check for s in report.segments)
    return report.wall_s, [s.latency_s for s in report.segments], full


def bench(name: str, size: str, profiles: str, args: argparse.Namespace, root: Path) -> list[dict]:
    clip = generate_clip(root / f"clip-{name}.mp4", size, args.seconds)
    count = len(list(segment(clip)))
    places = {p: Placement.of(p) for p in args.placement}
    computes = {p: Compute(place.compute) if p == "split" else None for p, place in places.items()}
    paths: list[Any] = [
        *(("local", p) for p in args.placement),
        *((v, d, p) for p in args.placement for v in args.verify for d in args.depth),
    ]
    runs = {p: Runs() for p in paths}
    traces: dict[Any, dict[str, Any]] = {}
    for r in range(args.rounds):
        order = paths[r % len(paths) :] + paths[: r % len(paths)]  # A/B: rotate who goes first
        for path in order:
            compute = computes[path[-1]]
            computed = compute.computed_s if compute is not None else 0.0
            if path[0] == "local":
                wall, lat = local_run(clip, profiles, args.preset, places[path[1]],
                                      computes[path[1]])  # fmt: skip
            else:
                policy, depth, placement = path
                base = root / f"net-{name}-{policy}-{depth}-{placement}-{r}"
                trace = Trace() if args.trace else None
                wall, lat, full = trio.run(network_run, clip, profiles, args.preset, base, policy,
                                           depth, places[placement], computes[placement],
                                           trace)  # fmt: skip
                runs[path].full_checks += full
                runs[path].cheap_checks += len(lat) - full
                if trace is not None:
                    traces[path] = trace.table()  # the last round's
            runs[path].walls.append(wall)
            if compute is not None:
                runs[path].extras.append(wall - (compute.computed_s - computed))
            runs[path].latencies += lat
    place_process(ALL_CORES)
    for compute in computes.values():
        if compute is not None:
            compute.close()
    load = os.getloadavg()
    out = []
    for path in paths:
        if path[0] == "local":
            continue
        net = runs[path]
        policy, depth, placement = path
        local = runs[("local", placement)]
        place = places[placement]
        out.append({
            "config": name, "size": size, "profiles": profiles, "seconds": args.seconds,
            "segments": count, "rounds": args.rounds, "verify": policy, "depth": depth,
            "placement": placement,
            "cores": {"compute": sorted(place.compute), "rest": sorted(place.rest)},
            "local_wall_s": round(local.median_wall(), 3),
            "network_wall_s": round(net.median_wall(), 3),
            "overhead_pct": round(100 * (net.median_wall() / local.median_wall() - 1), 1),
            "local_seg_per_s": round(count / local.median_wall(), 3),
            "network_seg_per_s": round(count / net.median_wall(), 3),
            "local_p50_latency_s": round(statistics.median(local.latencies), 3),
            "network_p50_latency_s": round(statistics.median(net.latencies), 3),
            "full_checks": net.full_checks, "cheap_checks": net.cheap_checks,
            **_extra_figures(local, net),
            "local_walls_s": [round(w, 3) for w in local.walls],
            "network_walls_s": [round(w, 3) for w in net.walls],
            "loadavg": [round(x, 2) for x in load],
            **({"trace": traces[path]} if path in traces else {}),
        })  # fmt: skip
    return out


def _extra_figures(local: Runs, net: Runs) -> dict[str, Any]:
    """Split placement: each path's wall time beyond its transcodes (in the child, per round),
    medians, and the network's extra over the local one's in percent of the local wall. The
    transcodes' own time varies from round to round (by 10-25% here), and both paths' walls with
    it; what the network adds does not, so this figure is steadier than `overhead_pct`."""
    if not local.extras or not net.extras:
        return {}
    local_extra, net_extra = statistics.median(local.extras), statistics.median(net.extras)
    return {
        "local_extra_s": round(local_extra, 3), "network_extra_s": round(net_extra, 3),
        "extra_overhead_pct": round(100 * (net_extra - local_extra) / local.median_wall(), 1),
    }  # fmt: skip


def print_table(rows: list[dict[str, Any]]) -> None:
    first = rows[0]
    print(f"{first['config']}: {first['segments']} segments of {first['size']} "
          f"{first['seconds']:g} s -> {first['profiles']}, {first['rounds']} rounds (medians), "
          f"load average {' '.join(map(str, first['loadavg']))}")  # fmt: skip
    print(f"{'path':44} {'seg/s':>7} {'p50 seg lat s':>14} {'wall s':>8} {'overhead':>9} "
          f"{'full/cheap':>11}")  # fmt: skip
    shown = set()
    for row in rows:
        cores = row["cores"]
        if row["placement"] not in shown:
            shown.add(row["placement"])
            label = f"local, {row['placement']} (cores {cores['compute']})"
            print(f"{label:44} {row['local_seg_per_s']:7.2f} "
                  f"{row['local_p50_latency_s']:14.3f} {row['local_wall_s']:8.2f}")  # fmt: skip
        checks = f"{row['full_checks']}/{row['cheap_checks']}"
        label = f"network, {row['placement']}, verify {row['verify']}, depth {row['depth']}"
        print(f"{label:44} {row['network_seg_per_s']:7.2f} "
              f"{row['network_p50_latency_s']:14.3f} {row['network_wall_s']:8.2f} "
              f"{row['overhead_pct']:+8.1f}% {checks:>11}")  # fmt: skip
        if "extra_overhead_pct" in row:
            print(f"{'':44} beyond the transcodes: local {row['local_extra_s']:.3f} s, network "
                  f"{row['network_extra_s']:.3f} s: {row['extra_overhead_pct']:+.1f}% of the "
                  "local wall")  # fmt: skip
    if any(r["placement"] == "split" for r in rows):
        split = next(r for r in rows if r["placement"] == "split")["cores"]
        print(f"split: a model of two machines in one process: the local transcode and the "
              f"orchestrator's on cores {split['compute']}, the gateway and the rest on "
              f"{split['rest']}")  # fmt: skip
    for row in rows:
        if "trace" in row:
            print()
            print_trace(f"{row['placement']}, verify {row['verify']}, depth {row['depth']}, "
                        "last round", row["trace"])  # fmt: skip


def main() -> int:
    if "--live" in sys.argv[1:]:  # live latency (segment cut -> listed), network vs local
        from live_bench import main as live_main

        return live_main(["--only", "transcode", *(a for a in sys.argv[1:] if a != "--live")])
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--config", choices=[*CONFIGS, "both"], default="both",
                        help="720p: 1280x720, 3 rungs; 360p: 640x360, 2 rungs")  # fmt: skip
    parser.add_argument("--size", help="clip size (with --profiles: instead of --config)")
    parser.add_argument("--profiles", help="ladder (with --size: instead of --config)")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--preset", default="veryfast")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--verify", choices=[*POLICIES, "both"], default="both")
    parser.add_argument("--depth", default=str(market.PIPELINE_DEPTH),
                        help="segments in flight per orchestrator slot, e.g. 1,2 for an A/B "
                        "of the overlap (default: the gateway's)")  # fmt: skip
    parser.add_argument("--placement", default="split",
                        help="split (a gateway machine and an orchestrator machine, modelled "
                        "with CPU affinity), shared (every thread on every core), or both: "
                        "split,shared")  # fmt: skip
    parser.add_argument(
        "--trace", action="store_true", help="a per-step timeline of each network path's last job"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per run")
    args = parser.parse_args()
    try:
        args.depth = [int(d) for d in args.depth.split(",")]
    except ValueError:
        parser.error("--depth is a comma-separated list of integers")
    if any(d < 1 for d in args.depth):
        parser.error("--depth values are at least 1")
    args.verify = list(POLICIES) if args.verify == "both" else [args.verify]
    args.placement = args.placement.split(",")
    if not args.placement or any(p not in PLACEMENTS for p in args.placement):
        parser.error(f"--placement: a comma-separated list of {', '.join(PLACEMENTS)}")
    if bool(args.size) != bool(args.profiles):
        parser.error("--size and --profiles go together")
    if args.size:
        configs = [(f"{args.size}", args.size, args.profiles)]
    else:
        names = list(CONFIGS) if args.config == "both" else [args.config]
        configs = [(n, *CONFIGS[n]) for n in names]
    root = Path(tempfile.mkdtemp(prefix="castnet-e2e-bench-"))
    try:
        for name, size, profiles in configs:
            rows = bench(name, size, profiles, args, root)
            for row in rows:
                if args.json:
                    print(json.dumps(row), flush=True)
            if not args.json:
                print_table(rows)
                print()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
