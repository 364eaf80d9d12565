"""Pipeline options on AI file jobs: `POST /v1/ai/style` with a style and an inference size runs on
the in-process network (real libp2p on 127.0.0.1, the packaged style model on a real clip) and
gives the asked style, not the input and not the default style; the API refuses bad options and
local paths; `castnet ai style --style ... --infer-size ...` does the same from the command line;
the gateway's recheck recomputes style/matte segments with their options, passing honest outputs
and catching another style or the input handed back, on the network too."""

from __future__ import annotations

import argparse
import json
import random
import time
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio
from ai_clips import carphone, decode, mad
from api_client import request, request_json, wait_job
from test_node_ai import ai_network

from inference.engine import InferenceConfig, InferenceEngine
from inference.options import DEFAULT_STYLE
from media.segmenter import segment
from media.verify import scan_source
from node.cli import ai as ai_command
from node.gateway.ai_recheck import AiRechecker, RecheckTarget
from node.protocol import VIDEO, AiOutput

FRAMES = 30  # one segment of carphone (176x144)
MOSAIC = {"style": "mosaic", "infer_size": "96x80"}


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return carphone(tmp_path_factory.mktemp("clip") / "carphone.mp4", FRAMES)


@pytest.fixture(scope="module")
def engine() -> InferenceEngine:
    return InferenceEngine(InferenceConfig(preset="ultrafast", threads=1))


@pytest.fixture(scope="module")
def target(clip: Path) -> RecheckTarget:
    (seg,) = segment(clip)
    src = scan_source(seg.data, None, {})
    return RecheckTarget("style", seg.data, src.keys, src.width, src.height, MOSAIC)


def _run(engine: InferenceEngine, pipeline: str, data: bytes, options: dict[str, Any]) -> AiOutput:
    result = engine.run_pipeline(pipeline, data, options=options)
    assert result.video is not None
    return AiOutput(VIDEO, result.model, result.frames, result.output_width,
                    result.output_height, result.video)  # fmt: skip


def _with(target: RecheckTarget, pipeline: str, options: dict[str, Any]) -> RecheckTarget:
    return RecheckTarget(pipeline, target.segment, target.keys, target.width, target.height,
                         options)  # fmt: skip


def test_recheck_with_options(engine: InferenceEngine, target: RecheckTarget) -> None:
    honest = _run(engine, "style", target.segment, MOSAIC)
    other = _run(engine, "style", target.segment, {**MOSAIC, "style": "starry"})
    full_size = _run(engine, "style", target.segment, {"style": "mosaic"})
    unprocessed = AiOutput(VIDEO, honest.model, FRAMES, target.width, target.height,
                           target.segment)  # fmt: skip
    matte = {"background": "blur", "infer_size": "96x96"}
    matted = _run(engine, "matte", target.segment, matte)
    for seed in range(3):  # whichever frames are drawn
        checker = AiRechecker(1.0, engine.config, random.Random(seed))
        assert checker.check(target, honest) == []
        assert checker.check(_with(target, "matte", matte), matted) == []
        (reason,) = checker.check(target, other)
        assert "differs from style" in reason and "style=mosaic" in reason, reason
        (reason,) = checker.check(target, full_size)  # not the inference size asked for
        assert "differs from style" in reason, reason
        (reason,) = checker.check(target, unprocessed)
        assert "unprocessed input" in reason, reason
        # the options matter: without them the recheck expects the default style
        (reason,) = checker.check(_with(target, "style", {}), honest)
        assert "differs from style" in reason, reason
        # another background is another output
        green = _with(target, "matte", {**matte, "background": "#00ff00"})
        assert checker.check(green, matted), seed
        assert (checker.checked, checker.caught) == (7, 5)


async def post(api: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    data = json.dumps(body).encode()
    return await trio.to_thread.run_sync(
        lambda: request_json(api, "POST", path, body=data, headers=headers)
    )


async def post_upload(api: str, path: str, data: bytes) -> tuple[int, Any]:
    headers = {"Content-Type": "video/mp4"}
    return await trio.to_thread.run_sync(
        lambda: request_json(api, "POST", path, body=data, headers=headers)
    )


def _frames(folder: Path) -> list[np.ndarray]:
    data = b"".join(p.read_bytes() for p in sorted(folder.rglob("*.ts")))
    return decode(data)[0]


async def test_style_job_with_options_over_the_api(
    tmp_path: Path, clip: Path, engine: InferenceEngine
) -> None:
    async with ai_network(tmp_path, ("other-style",), clip.parent, synthetic_models=False) as (
        net,
        api,
    ):
        gateway, (cheat, honest) = net.gateway, net.orchestrators
        # refused up front, nothing queued
        refusals = [
            ("/v1/ai/style", {"path": str(clip), "style": "nope"}, "unknown style 'nope'"),
            ("/v1/ai/style", {"path": str(clip), "infer_size": "1x1"}, "out of range"),
            ("/v1/ai/style", {"path": str(clip), "style": "mosaic", "blend": {"starry": 1}},
             "not style and blend"),
            ("/v1/ai/style", {"path": str(clip), "style_image": str(clip)}, "local paths"),
            ("/v1/ai/matte", {"path": str(clip), "background": "/etc/passwd"}, "local paths"),
            ("/v1/ai/matte", {"path": str(clip), "background": "pic.png"}, "local paths"),
            ("/v1/ai/detect-faces", {"path": str(clip), "style": "mosaic"}, "takes no options"),
        ]  # fmt: skip
        for route, body, why in refusals:
            status, answer = await post(api, route, body)
            assert (status, answer["error"]) == (400, "bad_options"), (body, answer)
            assert why in answer["message"] and "/etc" not in answer["message"], answer
        status, answer = await post(api, "/v1/ai/style", {"path": str(clip), "colour": "red"})
        assert (status, answer["error"]) == (400, "bad_request"), answer
        upload = clip.read_bytes()
        for query, why in (("style=mosaic&blend=mosaic%3Dhalf", "not a number"),
                           ("background=..%2Fx.png", "local paths")):  # fmt: skip
            status, answer = await post_upload(api, f"/v1/ai/matte?{query}", upload)
            assert (status, answer["error"]) == (400, "bad_options"), answer
            assert why in answer["message"], answer
        status, jobs = await trio.to_thread.run_sync(lambda: request_json(api, "GET", "/v1/jobs"))
        assert status == 200 and not jobs["jobs"], jobs

        # mosaic at 96x80 from a path: the cheapest orchestrator paints another style, the
        # gateway's recheck catches it and the segment is redone by the honest one
        status, job = await post(api, "/v1/ai/style", {"path": str(clip), **MOSAIC})
        assert status == 202, job
        record = await wait_job(api, job["id"], 60)
        assert record["status"] == "done", record
        assert record["options"] == MOSAIC and record["pipeline"] == "style", record
        assert record["orchestrators"] == ["0x" + honest.address.hex()], record
        caught = [v for v in gateway.verdicts if not v.accepted and "recheck" in v.reason]
        assert caught and {v.orchestrator for v in caught} == {cheat.address}, caught
        assert cheat.address in gateway.selector.suspended(time.monotonic())
        styled = _frames(tmp_path / "jobs" / job["id"] / "out")
        source = decode(clip)[0]
        assert len(styled) == FRAMES and styled[0].shape == source[0].shape

        # uploaded with query parameters: a blend, shown in the record
        query = urllib.parse.urlencode({"blend": "mosaic=3,starry=1", "infer_size": "96x80"})
        status, job2 = await post_upload(api, f"/v1/ai/style?{query}", upload)
        assert status == 202, job2
        record = await wait_job(api, job2["id"], 60)
        assert record["status"] == "done", record
        assert record["options"] == {"blend": {"mosaic": 0.75, "starry": 0.25},
                                     "infer_size": "96x80"}, record  # fmt: skip
        status, _ = await trio.to_thread.run_sync(lambda: request(api, "GET", record["files"][0]))
        assert status == 200
        blended = _frames(tmp_path / "jobs" / job2["id"] / "out")

    # the asked style: far from the input and from the default style, close to mosaic run here
    default = decode(_run(engine, "style", clip.read_bytes(), {"infer_size": "96x80"}).data)[0]
    mosaic = decode(_run(engine, "style", clip.read_bytes(), MOSAIC).data)[0]
    assert DEFAULT_STYLE != "mosaic"
    for i in (0, FRAMES // 2, FRAMES - 1):
        assert mad(styled[i], source[i]) > 30, i
        assert mad(styled[i], default[i]) > 20, i
        assert mad(styled[i], mosaic[i]) < 6, i
        assert mad(blended[i], styled[i]) > 3, i  # a blend is not the plain style


def test_cli_ai_style(tmp_path: Path, clip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    ai_command.register(parser.add_subparsers())
    out = tmp_path / "styled"
    base = ["ai", "style", str(clip), "--orchestrators", "1", "--provider", "cpu"]
    for bad, why in ((["--style", "nope"], "unknown style"),
                     (["--background", "x"], "takes infer_size, style"),
                     (["--blend", "mosaic=half"], "--blend weight 'half'")):  # fmt: skip
        args = parser.parse_args([*base, *bad, "--out", str(out)])
        assert args.run(args) == 2
        assert why in capsys.readouterr().err
    argv = [*base, "--style", "mosaic", "--infer-size", "96x80", "--out", str(out), "--json"]
    args = parser.parse_args([*argv, "--data-dir", str(tmp_path / "nodes")])
    assert args.run(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["options"] == MOSAIC and summary["segments"] == {"total": 1, "completed": 1}
    assert summary["files"] == [str(out / "master.m3u8")]
    styled, source = _frames(out), decode(clip)[0]
    assert len(styled) == FRAMES and styled[0].shape == source[0].shape
    assert mad(styled[0], source[0]) > 30
