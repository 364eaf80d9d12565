"""End-to-end bench: the demo network (gateway + orchestrators on 127.0.0.1 libp2p, tickets,
verification, logs) against transcoding the same segments locally in the same process, same run,
alternating A/B; medians of throughput (segments/s) and per-segment latency.

    .venv/bin/python bench/e2e_bench.py [--size 640x360] [--seconds 10] [--rounds 2]
    .venv/bin/python bench/e2e_bench.py --live [bench/live_bench.py's options]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

from media.profiles import parse_profiles
from media.segmenter import segment
from media.transcoder import transcode
from node.gateway.role import GatewayConfig
from node.local.demo import generate_clip
from node.local.network import default_plan, embedded_ledger, open_network


def local_run(clip: Path, profiles: str, preset: str) -> tuple[float, list[float]]:
    ladder = parse_profiles(profiles)
    segments = list(segment(clip))
    started = time.perf_counter()
    latencies = []
    for seg in segments:
        t0 = time.perf_counter()
        transcode(seg.data, ladder, preset=preset)
        latencies.append(time.perf_counter() - t0)
    return time.perf_counter() - started, latencies


async def network_run(
    clip: Path, profiles: str, preset: str, base: Path, orchestrators: int
) -> tuple[float, list[float]]:
    cfg = GatewayConfig(profiles=profiles, preset=preset)
    plan = default_plan(orchestrators, cfg, capacity=1)
    ledger = await trio.to_thread.run_sync(embedded_ledger, plan)  # the protocol contracts
    async with open_network(base, plan, ledger) as net:
        report = await net.gateway.transcode_file(clip, base / "out")
    # the gateway's wall time includes segmenting; subtract it for a like-for-like figure
    return report.wall_s, [s.latency_s for s in report.segments]


def main() -> int:
    if "--live" in sys.argv[1:]:  # live latency (segment cut -> listed), network vs local
        from live_bench import main as live_main

        return live_main(["--only", "transcode", *(a for a in sys.argv[1:] if a != "--live")])
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--profiles", default="360p,240p")
    parser.add_argument("--preset", default="veryfast")
    parser.add_argument("--orchestrators", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="castnet-e2e-bench-"))
    clip = generate_clip(root / "clip.mp4", args.size, args.seconds)
    seg_count = len(list(segment(clip)))
    local_w, net_w, local_l, net_l = [], [], [], []
    for r in range(args.rounds):
        wall, lat = local_run(clip, args.profiles, args.preset)
        local_w.append(wall)
        local_l += lat
        wall, lat = trio.run(
            network_run, clip, args.profiles, args.preset, root / f"net{r}", args.orchestrators
        )
        net_w.append(wall)
        net_l += lat
    lw, nw = statistics.median(local_w), statistics.median(net_w)
    rows = [
        ("local (same segments, in-process)", seg_count / lw, statistics.median(local_l), lw),
        (f"network ({args.orchestrators} orch, cap 1)", seg_count / nw,
         statistics.median(net_l), nw),
    ]  # fmt: skip
    print(f"{seg_count} segments of {args.size} {args.seconds:g} s -> {args.profiles}, "
          f"{args.rounds} rounds (medians)")  # fmt: skip
    print(f"{'path':40} {'seg/s':>8} {'p50 seg latency s':>18} {'wall s':>8}")
    for name, tput, lat, wall in rows:
        print(f"{name:40} {tput:8.2f} {lat:18.3f} {wall:8.2f}")
    print(f"network overhead on wall time: {100 * (nw / lw - 1):+.1f}% (aim <= 15%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
