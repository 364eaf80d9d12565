"""`castnet media transcode|verify`: the media library on local files, no network involved."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from media.encoders import X264_PRESETS
from media.errors import MediaError
from media.hls import MASTER
from media.pipeline import LadderSummary, transcode_to_hls
from media.profiles import DEFAULT_LADDER, parse_profiles
from media.progress import Progress
from media.verify import MIN_PSNR, MIN_SSIM, SAMPLES, Verdict
from media.verify_hls import HlsVerdict, verify_hls
from node.cli.commands import command_help


def register(sub: Any) -> None:
    group = sub.add_parser("media", help=command_help("media"))
    cmds = group.add_subparsers(dest="media_command", required=True, metavar="ACTION")

    p = cmds.add_parser("transcode", help="transcode INPUT into an HLS ladder under --out")
    p.add_argument("input", help="file, stream URL, or a lavfi graph with --format lavfi")
    p.add_argument("--out", required=True, type=Path, help="output folder (must not hold files)")
    p.add_argument(
        "--profiles",
        default=",".join(prof.name for prof in DEFAULT_LADDER),
        help="ladder, e.g. 720p,480p:800k,360p30 (default %(default)s)",
    )
    p.add_argument("--preset", default="veryfast", choices=X264_PRESETS, help="x264 preset")
    p.add_argument(
        "--encoder", default="software", help="software, auto (NVENC if usable) or an encoder name"
    )
    p.add_argument("--format", help="input format for PyAV, e.g. lavfi, mpegts")
    p.add_argument("--live", action="store_true", help="write live HLS in place (sliding window)")
    p.add_argument("--window", type=int, default=6, help="segments in a live playlist")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(run=cmd_transcode)

    p = cmds.add_parser("verify", help="check an HLS output folder against its source")
    p.add_argument("dir", type=Path, help="folder holding master.m3u8")
    p.add_argument("--source", required=True, help="the input the output was made from")
    p.add_argument("--source-format", help="input format of the source, e.g. lavfi")
    p.add_argument("--samples", type=int, default=SAMPLES, help="frames compared per rendition")
    p.add_argument("--min-psnr", type=float, default=MIN_PSNR, help="dB, default %(default)s")
    p.add_argument("--min-ssim", type=float, default=MIN_SSIM, help="default %(default)s")
    p.add_argument("--json", action="store_true", help="print the verdicts as one JSON object")
    p.set_defaults(run=cmd_verify)

    p = cmds.add_parser("sample", help="write a test clip (a pattern and a tone) to try things on")
    p.add_argument("out", type=Path, help="the .mp4 to write")
    p.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT (default %(default)s)")
    p.add_argument("--seconds", type=float, default=6.0, help="length (default %(default)s)")
    p.set_defaults(run=cmd_sample)


def cmd_sample(args: argparse.Namespace) -> int:
    from node.local.demo import generate_clip

    try:
        width, height = (int(x) for x in args.size.lower().split("x"))
    except ValueError:
        return _fail(f"--size {args.size!r}: give WIDTHxHEIGHT, e.g. 1280x720")
    if not (16 <= width <= 7680 and 16 <= height <= 4320) or width % 2 or height % 2:
        return _fail(f"--size {args.size!r}: even sides from 16x16 to 7680x4320")
    if not 0 < args.seconds <= 600:
        return _fail(f"--seconds {args.seconds:g}: from a fraction of a second to 600")
    if args.out.exists():
        return _fail(f"{args.out} exists; not overwriting it")
    generate_clip(args.out, f"{width}x{height}", args.seconds)
    print(f"wrote {args.out}: {width}x{height}, {args.seconds:g} s, a keyframe every 2 s, audio")
    return 0


def _fail(message: str) -> int:
    print(f"castnet: {message}", file=sys.stderr)
    return 2


def cmd_transcode(args: argparse.Namespace) -> int:
    # tqdm's disable=None: a bar on an interactive stderr, silence when it is redirected
    bar_format = "{l_bar}{bar}| {n:.1f}/{total_fmt} s [{elapsed}<{remaining}]"
    with tqdm(desc="transcoding", file=sys.stderr, disable=None, bar_format=bar_format) as bar:

        def on_progress(progress: Progress) -> None:
            if progress.total_seconds and bar.total is None:
                bar.total = round(progress.total_seconds, 2)
            bar.n = round(progress.seconds, 2)
            bar.refresh()

        try:
            ladder = parse_profiles(args.profiles)
            summary = transcode_to_hls(
                args.input,
                args.out,
                ladder,
                preset=args.preset,
                encoder=args.encoder,
                format=args.format,
                live=args.live,
                window=args.window,
                on_progress=on_progress,
            )
        except MediaError as exc:
            bar.leave = False
            return _fail(str(exc))
    if args.json:
        print(json.dumps(_summary_json(summary)))
    else:
        _print_summary(summary)
    return 0


def _summary_json(summary: LadderSummary) -> dict[str, Any]:
    return {
        "out": str(summary.out),
        "master": str(summary.out / MASTER),
        "segments": summary.segments,
        "duration": round(summary.duration, 3),
        "wall_seconds": round(summary.wall_seconds, 3),
        "realtime_factor": round(summary.realtime_factor, 3),
        "renditions": [
            {
                "name": r.name,
                "playlist": f"{r.folder}/index.m3u8",
                "width": r.width,
                "height": r.height,
                "frames": r.frames,
                "pixels": r.pixels,
                "bytes": r.bytes,
            }
            for r in summary.renditions
        ],
    }


def _print_summary(summary: LadderSummary) -> None:
    print(
        f"wrote {summary.out / MASTER}: {summary.segments} segments, {summary.duration:.2f} s of"
        f" video in {summary.wall_seconds:.2f} s ({summary.realtime_factor:.2f}x real time)"
    )
    for r in summary.renditions:
        print(
            f"  {r.name:<10} {r.width}x{r.height:<6} {r.frames:>7} frames {r.pixels:>13} pixels"
            f" {r.bytes / 1e6:>9.2f} MB"
        )


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        verdict = verify_hls(
            args.dir,
            args.source,
            source_format=args.source_format,
            samples=args.samples,
            min_psnr=args.min_psnr,
            min_ssim=args.min_ssim,
        )
    except MediaError as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(_verdict_json(verdict)))
    else:
        _print_verdict(verdict)
    return 0 if verdict.ok else 1


def _rendition_json(v: Verdict) -> dict[str, Any]:
    return {
        "name": v.name,
        "ok": v.ok,
        "width": v.width,
        "height": v.height,
        "frames": v.frames,
        "pixels": v.pixel_count,
        "duration": round(v.duration, 3),
        "psnr": None if v.psnr is None else round(v.psnr, 2),
        "ssim": None if v.ssim is None else round(v.ssim, 4),
        "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in v.checks],
    }


def _verdict_json(verdict: HlsVerdict) -> dict[str, Any]:
    return {
        "dir": verdict.root,
        "ok": verdict.ok,
        "renditions": [_rendition_json(v) for v in verdict.renditions],
    }


def _print_verdict(verdict: HlsVerdict) -> None:
    for v in verdict.renditions:
        quality = (
            f"PSNR {v.psnr:.1f} dB  SSIM {v.ssim:.3f}"
            if v.psnr is not None and v.ssim is not None
            else "no quality samples"
        )
        print(
            f"{v.name:<10} {'ok' if v.ok else 'FAIL':<4} {v.width}x{v.height:<6}"
            f" {v.frames:>7} frames  {v.duration:.2f} s  {quality}"
        )
        for reason in v.reasons:
            print(f"    - {reason}")
    print(f"{verdict.root}: {'verified' if verdict.ok else 'FAILED verification'}")
