"""Live latency bench: a generated clip with sound is streamed over TCP on 127.0.0.1 at its
real-time pace, and each segment's added latency is measured from its cut at the gateway to its
listing in the live playlist.

(a) live transcoding: the demo network (gateway + orchestrators, tickets, verification) against
    the same stream transcoded in this process by one local transcoder, same run, A/B;
(b) live AI (style by default): the network at two inference sizes, with the pipeline's own
    speed on the same segments in this process (fps vs the stream's real-time rate).

Each row: p50/p95 added latency per segment; fps: frames processed per second of work (local
rows) or per second from the first segment's cut to the last one's listing (network rows, where
the stream's pace bounds it); x rt: that fps over the stream's; growth: the last segment's added
latency minus the first's (near 0 when the path keeps up, growing with the stream when not).

    .venv/bin/python bench/live_bench.py [--size 480x270] [--seconds 8] [--rounds 1]
        [--only transcode|ai] [--pipeline style] [--infer-sizes 160x90,320x180] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trio

from inference.engine import InferenceConfig, InferenceEngine
from media.hls import LiveOutput
from media.profiles import parse_profiles
from media.segmenter import segment
from media.transcoder import transcode
from node.gateway.live import LiveConfig, LiveSession
from node.gateway.live_ai import LiveAi, live_ai
from node.gateway.role import GatewayConfig
from node.local.demo import generate_clip
from node.local.network import default_plan, embedded_ledger, open_network
from node.local.sender import PacedSender, clip_to_ts


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


STREAM_FPS = 30.0  # generate_clip's rate


def row(table: str, path: str, got: dict[str, Any], **extra: Any) -> dict[str, Any]:
    latencies, busy_s = got["latencies"], got["busy_s"]
    fps = got["frames"] / busy_s if busy_s > 0 else 0.0
    return {
        "table": table,
        "path": path,
        "segments": len(latencies),
        "p50_added_s": round(percentile(latencies, 0.5), 3),
        "p95_added_s": round(percentile(latencies, 0.95), 3),
        "growth_s": round(latencies[-1] - latencies[0], 3) if latencies else math.nan,
        "fps": round(fps, 1),
        "stream_fps": STREAM_FPS,
        "real_time_x": round(fps / STREAM_FPS, 2),
        **{k: v for k, v in got.items() if k not in ("latencies", "frames", "busy_s")},
        **extra,
    }


def local_live_transcode(clip: Path, profiles: str, segment_s: float, out: Path) -> dict[str, Any]:
    """One local live transcoder: the paced stream segmented, each segment transcoded and
    published in this process, in order."""
    data, seconds = clip_to_ts(clip)
    sender = PacedSender(data, seconds)
    ladder = parse_profiles(profiles)
    output = LiveOutput(out, window=6, target=math.ceil(1.5 * segment_s))
    latencies, frames, busy = [], 0, 0.0
    try:
        for seg in segment(sender.url, target_duration=segment_s, timeout=15.0, strict=False):
            cut = time.monotonic()
            result = transcode(seg.data, ladder, preset="veryfast")
            output.add(seg.seq, result)
            done = time.monotonic()
            latencies.append(done - cut)
            frames += result.source_frames
            busy += done - cut
        output.end()
    finally:
        sender.close()
    return {"latencies": latencies, "frames": frames, "busy_s": busy}


async def network_live(
    clip: Path, base: Path, profiles: str, segment_s: float, orchestrators: int,
    ai: LiveAi | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The paced stream through a live session on the demo network (transcoding, or `ai`)."""
    data, seconds = await trio.to_thread.run_sync(clip_to_ts, clip)
    inference = InferenceConfig(preset="ultrafast")
    warm = (f"{ai.pipeline}@{'x'.join(map(str, ai.infer_size))}",) if ai and ai.infer_size else ()
    plan = default_plan(orchestrators, GatewayConfig(profiles=profiles), capacity=1,
                        ticket_ev=Fraction(10**9), inference=inference,
                        ai_warm=warm)  # fmt: skip
    ledger = await trio.to_thread.run_sync(embedded_ledger, plan)
    async with open_network(base, plan, ledger) as net:
        sender = PacedSender(data, seconds)
        try:
            config = LiveConfig(segment_s=segment_s, attempt_timeout_s=60.0)
            session = LiveSession(net.gateway, sender.url, base / "out", profiles, config, ai=ai)
            with trio.fail_after(seconds * 20 + 120):
                report = await session.run()
        finally:
            sender.close()
        stated = sorted({s.capability() for o in net.orchestrators for s in o.ai.stated()})
    frames = round(sum(report.duration_s.values()) * STREAM_FPS)
    added = [report.added_latency_s[s] for s in report.published]
    cuts = [report.cut_at[s] for s in report.published]
    span = max(c + a for c, a in zip(cuts, added, strict=True)) - min(cuts) if cuts else 0.0
    return {"latencies": added, "frames": frames, "busy_s": span, "skipped": len(report.skipped),
            "failovers": report.failovers, "stated": stated}  # fmt: skip


def local_pipeline(clip: Path, ai: LiveAi, segment_s: float) -> dict[str, Any]:
    """The pipeline's own speed on the same segments in this process (no network, no pacing)."""
    engine = InferenceEngine(InferenceConfig(preset="ultrafast"))
    segments = list(segment(clip, target_duration=segment_s))
    engine.run_pipeline(ai.pipeline, segments[0].data, options=dict(ai.options))  # warm up
    latencies, frames = [], 0
    for seg in segments:
        started = time.perf_counter()
        result = engine.run_pipeline(ai.pipeline, seg.data, options=dict(ai.options))
        latencies.append(time.perf_counter() - started)
        frames += result.frames
    return {"latencies": latencies, "frames": frames, "busy_s": sum(latencies)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--size", default="480x270")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--segment", type=float, default=2.0, help="segment seconds")
    parser.add_argument("--profiles", default="240p", help="live transcoding ladder")
    parser.add_argument("--orchestrators", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--only", choices=("transcode", "ai"))
    parser.add_argument("--pipeline", default="style")
    parser.add_argument("--style", default="mosaic")
    parser.add_argument("--infer-sizes", default="160x90,320x180")
    parser.add_argument("--json", action="store_true", help="one JSON object per row")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="castnet-live-bench-"))
    clip = generate_clip(root / "clip.mp4", args.size, args.seconds)
    rows: list[dict[str, Any]] = []
    load = os.getloadavg()[0]
    for r in range(args.rounds):
        if args.only in (None, "transcode"):
            base = root / f"t{r}"
            # A/B, order alternating by round
            order = ["local", "network"] if r % 2 == 0 else ["network", "local"]
            for path in order:
                if path == "local":
                    got = local_live_transcode(clip, args.profiles, args.segment, base / "local")
                    rows.append(row("live transcoding", "local (1 transcoder, in-process)", got,
                                    round=r))  # fmt: skip
                else:
                    got = trio.run(network_live, clip, base / "net", args.profiles, args.segment,
                                   args.orchestrators)  # fmt: skip
                    rows.append(row("live transcoding",
                                    f"network ({args.orchestrators} orch, cap 1)", got,
                                    round=r))  # fmt: skip
        if args.only in (None, "ai"):
            for size in args.infer_sizes.split(","):
                options: dict[str, Any] = {"infer_size": size}
                if args.pipeline == "style":
                    options["style"] = args.style
                ai = live_ai(args.pipeline, "", options)
                got = local_pipeline(clip, ai, args.segment)
                rows.append(row("live AI", f"{args.pipeline} @ {size}: pipeline in-process", got,
                                round=r))  # fmt: skip
                got = trio.run(network_live, clip, root / f"ai{r}-{size}", args.profiles,
                               args.segment, args.orchestrators, ai)  # fmt: skip
                rows.append(row("live AI", f"{args.pipeline} @ {size}: network "
                                f"({args.orchestrators} orch)", got, round=r))  # fmt: skip
    if args.json:
        for item in rows:
            print(json.dumps({**item, "size": args.size, "segment_s": args.segment,
                              "load_avg": round(load, 2)}))  # fmt: skip
        return 0
    print(f"{args.size} {args.seconds:g} s clip streamed at real time, {args.segment:g} s "
          f"segments, {args.rounds} round(s); load average {load:.1f} on {os.cpu_count()} "
          "CPUs at start")  # fmt: skip
    print(
        "added latency: segment cut at the gateway -> listed in the live playlist; fps: frames "
        "processed per second of work (network: per second of the stream's wall time)"
    )
    print(f"{'table':17} {'path':44} {'segs':>4} {'p50 s':>7} {'p95 s':>7} {'growth s':>8} "
          f"{'fps':>7} {'x rt':>6}")  # fmt: skip
    for item in rows:
        print(f"{item['table']:17} {item['path']:44} {item['segments']:4d} "
              f"{item['p50_added_s']:7.2f} {item['p95_added_s']:7.2f} {item['growth_s']:8.2f} "
              f"{item['fps']:7.1f} {item['real_time_x']:6.2f}")  # fmt: skip
    stated = [s for item in rows for s in item.get("stated", [])]
    if stated:
        print("fps the orchestrators stated in their offers: " + ", ".join(sorted(set(stated))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
