"""How fast a loaded model runs a pipeline on this machine: what an orchestrator states in its offer
(frames per second for each warm model), measured rather than assumed."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import av
import numpy as np

from inference.config import DEFAULT_BATCH
from inference.effects import EFFECTS, video_effect
from inference.errors import InferenceError, UnknownPipeline
from inference.imagemodels import ImageModel
from inference.mtcnn import FaceDetector
from inference.options import parse_options
from inference.pipelines import PIPELINES
from inference.sessions import LoadedModel
from inference.textdet import TextDetector

MAX_FRAMES = 240


def measure_fps(
    model: LoadedModel,
    pipeline: str,
    width: int,
    height: int,
    options: Mapping[str, Any] | None = None,
    frames: int = 8,
) -> float:
    """Frames per second of `pipeline` on `model` for width x height frames (blocking).

    Runs the pipeline's own prepare, inference and post-processing steps one after another on
    synthetic frames, after one untimed warm-up batch; decoding and encoding are not counted. In a
    pipeline the steps overlap in threads, so a real run is at least this fast on an idle machine.
    """
    if pipeline not in PIPELINES:
        raise UnknownPipeline(f"unknown pipeline {pipeline!r}; use one of {', '.join(PIPELINES)}")
    if not 1 <= frames <= MAX_FRAMES:
        raise InferenceError(f"frames must be 1 to {MAX_FRAMES}, not {frames}")
    if width < 2 or height < 2:
        raise InferenceError(f"cannot measure at {width}x{height}")
    work = _work(model, pipeline, width, height, options)
    pictures = synthetic_pictures(width, height, min(frames, DEFAULT_BATCH))
    _run(work, pictures)  # warm-up: first runs allocate arenas and pick kernels
    done, started = 0, time.perf_counter()
    while done < frames:
        batch = pictures[: min(DEFAULT_BATCH, frames - done)]
        _run(work, batch)
        done += len(batch)
    return done / max(time.perf_counter() - started, 1e-9)


def synthetic_pictures(width: int, height: int, count: int) -> list[av.VideoFrame]:
    """Decoded-like yuv420p frames: a moving gradient with texture, so no step can shortcut."""
    rng = np.random.default_rng(18)
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    noise = rng.integers(0, 48, (height, width, 3)).astype(np.float32)
    pictures = []
    for i in range(count):
        base = np.stack([(x + 9 * i) % 256 + 0 * y, y + 0 * x, (x + y) / 2], axis=-1)
        image = np.clip(base + noise, 0, 255).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        pictures.append(frame.reformat(format="yuv420p"))
    return pictures


def _work(
    model: LoadedModel,
    pipeline: str,
    width: int,
    height: int,
    options: Mapping[str, Any] | None,
) -> Any:
    if pipeline in EFFECTS:
        return video_effect(pipeline, model, width, height, options)
    parse_options(pipeline, options)  # refuses any: these pipelines take none
    if pipeline == "detect-faces":
        return FaceDetector(model, width, height)
    if pipeline == "detect-text":
        return TextDetector(model, width, height)
    return ImageModel(model, width, height, factor=2 if pipeline == "upscale" else 1)


def _run(work: Any, pictures: list[av.VideoFrame]) -> None:
    item = work.prepare(pictures)
    for _, step in work.steps():
        item = step(item)
