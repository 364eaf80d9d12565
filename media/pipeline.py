"""Input to HLS ladder in one call: segment, transcode each segment, write the tree."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from media.hls import LiveOutput, VodOutput, rendition_dir
from media.profiles import DEFAULT_LADDER, Profile
from media.progress import Progress, ProgressCallback
from media.segmenter import segment
from media.source import Source, probe
from media.transcoder import TranscodeResult, transcode

LIVE_TARGET = (
    3  # EXT-X-TARGETDURATION for live: the segmenter's longest cut (1.5 x 2 s), rounded up
)


@dataclass(frozen=True, slots=True)
class RenditionSummary:
    """Totals for one rendition over the whole output."""

    name: str
    folder: str
    width: int
    height: int
    frames: int
    pixels: int
    bytes: int


@dataclass(frozen=True, slots=True)
class LadderSummary:
    """What `transcode_to_hls` wrote."""

    out: Path
    segments: int
    duration: float
    wall_seconds: float
    renditions: tuple[RenditionSummary, ...]

    @property
    def realtime_factor(self) -> float:
        return self.duration / self.wall_seconds if self.wall_seconds else 0.0


def transcode_to_hls(
    source: Source,
    out: Path,
    ladder: Sequence[Profile] = DEFAULT_LADDER,
    *,
    preset: str = "veryfast",
    encoder: str = "software",
    format: str | None = None,
    live: bool = False,
    window: int = 6,
    on_progress: ProgressCallback | None = None,
) -> LadderSummary:
    """Write `out/master.m3u8` and a media playlist per rendition; VOD output appears atomically."""
    started = time.perf_counter()
    total = None if live else probe(source, format=format).duration
    totals: dict[str, list[int]] = {}
    shapes: dict[str, tuple[int, int]] = {}
    done = Progress(0, 0.0, total)
    output: VodOutput | LiveOutput = (
        LiveOutput(out, window=window, target=LIVE_TARGET) if live else VodOutput(out)
    )
    try:
        count = 0
        for seg in segment(source, format=format, preset=preset):
            base = done

            def report(p: Progress, base: Progress = base) -> None:
                if on_progress is not None:
                    on_progress(Progress(base.frames + p.frames, base.seconds + p.seconds, total))

            result = transcode(seg.data, ladder, preset=preset, encoder=encoder, on_progress=report)
            output.add(seg.seq, result)
            _tally(result, totals, shapes)
            done = Progress(
                base.frames + result.source_frames, base.seconds + float(seg.duration), total
            )
            count += 1
        if isinstance(output, VodOutput):
            output.commit()
        else:
            output.end()
    except BaseException:
        if isinstance(output, VodOutput):
            output.discard()
        raise
    return LadderSummary(
        out=out,
        segments=count,
        duration=done.seconds,
        wall_seconds=time.perf_counter() - started,
        renditions=tuple(
            RenditionSummary(name, rendition_dir(name), *shapes[name], frames, pixels, size)
            for name, (frames, pixels, size) in totals.items()
        ),
    )


def _tally(
    result: TranscodeResult, totals: dict[str, list[int]], shapes: dict[str, tuple[int, int]]
) -> None:
    for r in result.renditions:
        entry = totals.setdefault(r.name, [0, 0, 0])
        entry[0] += r.frame_count
        entry[1] += r.pixel_count
        entry[2] += len(r.data)
        shapes[r.name] = (r.width, r.height)
