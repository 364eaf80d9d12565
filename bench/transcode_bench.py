"""Transcoding benchmark: castnet (PyAV, a thread per rendition) against the ffmpeg CLI doing the
same 720p/480p/360p ladder in one process with a split filter (same preset, bitrates, scaler).

  segment   one 2 s 1080p30 MPEG-TS segment -> three MPEG-TS renditions
  clip      a 10 s 1080p30 clip -> HLS (castnet: segment + transcode + playlists; ffmpeg: three
            HLS outputs with 2 s keyframes)

Runs alternate castnet and ffmpeg; the table shows medians, castnet/ffmpeg time, castnet's
real-time factor, and luma PSNR of both (minimum of sampled frames, against the source scaled
with Lanczos). Run: `python bench/transcode_bench.py [--rounds 3] [--presets veryfast,superfast]`.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av

from media.pipeline import transcode_to_hls
from media.profiles import DEFAULT_LADDER, Profile, fit
from media.transcoder import transcode
from media.verify import Claim, verify_rendition

SOURCE_BITRATE = "6M"  # a typical 1080p30 contribution stream


def make_source(path: Path, seconds: int) -> None:
    """testsrc2 1080p30 as H.264 at 6 Mb/s with a keyframe every 2 s, muxed as MPEG-TS."""
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi",
         "-i", f"testsrc2=size=1920x1080:rate=30:duration={seconds}",
         "-c:v", "libx264", "-preset", "veryfast", "-b:v", SOURCE_BITRATE, "-g", "60",
         "-sc_threshold", "0", "-pix_fmt", "yuv420p", "-f", "mpegts", str(path)],
        check=True,
    )  # fmt: skip


def ffmpeg_ladder(source: Path, out: Path, preset: str, hls: bool) -> list[str]:
    """The ffmpeg CLI command for the same ladder: decode once, split, scale, encode three times."""
    specs = [fit(p, 1920, 1080) for p in DEFAULT_LADDER]
    labels = [f"v{i}" for i in range(len(specs))]
    graph = f"[0:v]split={len(specs)}" + "".join(f"[s{i}]" for i in range(len(specs))) + ";"
    graph += ";".join(
        f"[s{i}]scale={s.width}:{s.height}:flags=bilinear[{labels[i]}]" for i, s in enumerate(specs)
    )
    cmd = ["ffmpeg", "-v", "error", "-y", "-i", str(source), "-filter_complex", graph]
    for label, spec in zip(labels, specs, strict=True):
        cmd += ["-map", f"[{label}]", "-c:v", "libx264", "-preset", preset,
                "-b:v", str(spec.profile.bitrate), "-sc_threshold", "0"]  # fmt: skip
        if hls:
            folder = out / spec.name
            folder.mkdir(parents=True, exist_ok=True)
            cmd += ["-force_key_frames", "expr:gte(t,n_forced*2)", "-f", "hls", "-hls_time", "2",
                    "-hls_playlist_type", "vod", str(folder / "index.m3u8")]  # fmt: skip
        else:
            cmd += ["-f", "mpegts", str(out / f"{spec.name}.ts")]
    return cmd


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def psnr_of(data: bytes, profile: Profile, source: bytes) -> float:
    with av.open(io.BytesIO(data)) as c:
        frames = list(c.decode(video=0))
    w, h = frames[0].width, frames[0].height
    claim = Claim(w, h, len(frames), len(frames) * w * h, profile.fps)
    verdict = verify_rendition(data, claim, source, samples=8)
    return verdict.psnr or 0.0


def bench_segment(work: Path, preset: str, rounds: int) -> dict[str, object]:
    source = work / "segment.ts"
    data = source.read_bytes()
    out = work / "ff_segment"
    out.mkdir(exist_ok=True)
    cmd = ffmpeg_ladder(source, out, preset, hls=False)
    ours: list[float] = []
    theirs: list[float] = []
    result = None
    for _ in range(rounds):
        start = time.perf_counter()
        result = transcode(data, DEFAULT_LADDER, preset=preset)
        ours.append(time.perf_counter() - start)
        theirs.append(timed(lambda: subprocess.run(cmd, check=True)))
    assert result is not None
    psnr_ours = [
        psnr_of(r.data, p, data) for r, p in zip(result.renditions, DEFAULT_LADDER, strict=True)
    ]
    psnr_theirs = [psnr_of((out / f"{p.name}.ts").read_bytes(), p, data) for p in DEFAULT_LADDER]
    return _row("2 s segment", preset, 2.0, ours, theirs, psnr_ours, psnr_theirs)


def bench_clip(work: Path, preset: str, rounds: int) -> dict[str, object]:
    source = work / "clip.ts"
    ours: list[float] = []
    theirs: list[float] = []
    for i in range(rounds):
        out = work / f"castnet_clip_{preset}_{i}"
        ours.append(timed(lambda out=out: transcode_to_hls(source, out, preset=preset)))
        ff = work / f"ff_clip_{preset}_{i}"
        cmd = ffmpeg_ladder(source, ff, preset, hls=True)
        theirs.append(timed(lambda cmd=cmd: subprocess.run(cmd, check=True)))
    return _row("10 s clip -> HLS", preset, 10.0, ours, theirs, None, None)


def _row(
    name: str,
    preset: str,
    seconds: float,
    ours: list[float],
    theirs: list[float],
    psnr_ours: list[float] | None,
    psnr_theirs: list[float] | None,
) -> dict[str, object]:
    a, b = statistics.median(ours), statistics.median(theirs)
    return {
        "input": name,
        "preset": preset,
        "castnet_s": a,
        "ffmpeg_s": b,
        "ratio": a / b,
        "rtf": seconds / a,
        "ffmpeg_rtf": seconds / b,
        "psnr_ours": psnr_ours,
        "psnr_theirs": psnr_theirs,
    }


def _psnrs(values: object) -> str:
    return "/".join(f"{x:.1f}" for x in values) if isinstance(values, list) else "-"


def print_table(rows: list[dict[str, object]]) -> None:
    columns = ["input", "preset", "castnet s", "ffmpeg s", "castnet/ffmpeg", "castnet x realtime",
               "ffmpeg x realtime", "PSNR 720/480/360 castnet", "PSNR ffmpeg"]  # fmt: skip
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("-" * (len(c) + 2) for c in columns) + "|")
    for r in rows:
        cells = [
            str(r["input"]),
            str(r["preset"]),
            f"{r['castnet_s']:.2f}",
            f"{r['ffmpeg_s']:.2f}",
            f"{r['ratio']:.2f}",
            f"{r['rtf']:.2f}",
            f"{r['ffmpeg_rtf']:.2f}",
            _psnrs(r["psnr_ours"]),
            _psnrs(r["psnr_theirs"]),
        ]
        print(
            "| " + " | ".join(c.rjust(len(h)) for c, h in zip(cells, columns, strict=True)) + " |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--presets", default="veryfast,superfast")
    parser.add_argument("--skip-clip", action="store_true", help="only the 2 s segment")
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        print("ffmpeg CLI not found: apt-get install ffmpeg", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="castnet-transcode-bench-"))
    try:
        make_source(work / "segment.ts", 2)
        if not args.skip_clip:
            make_source(work / "clip.ts", 10)
        rows = []
        for preset in args.presets.split(","):
            rows.append(bench_segment(work, preset, args.rounds))
            if not args.skip_clip:
                rows.append(bench_clip(work, preset, args.rounds))
        print_table(rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    versions = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout
    print(f"\nffmpeg CLI: {versions.splitlines()[0]}")
    print(f"PyAV {av.__version__}, bundled FFmpeg {av.ffmpeg_version_info}; {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
