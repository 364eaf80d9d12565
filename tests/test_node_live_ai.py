"""Live AI video on the in-process network (real libp2p on 127.0.0.1, real onnxruntime, real
encodes, tickets): a "camera" sends a clip with sound over TCP at its real-time rate, every 1 s
segment becomes an AI job, and the live playlist lists segments of the right size and frame
count, with the sound carried through, that really differ from the input. The orchestrator that
serves the stream is killed mid-stream: the session fails over and the stream goes on."""

from __future__ import annotations

import io
import json
from fractions import Fraction
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import trio

from events.state import OfferState
from inference.engine import InferenceConfig
from inference.synthetic import conv3x3_model, write_model
from media.playlists import read_media
from media.segmenter import segment
from node.api.app import GatewayApi
from node.api.server import serve_api
from node.config import ApiConfig
from node.gateway.ai_checks import MIN_CHANGE
from node.gateway.job_book import JobBook, JobRecord
from node.gateway.live import LiveConfig, LiveReport, LiveSession
from node.gateway.live_ai import Demand, KeepUpSelector, LiveAiError, live_ai
from node.gateway.role import GatewayConfig
from node.gateway.selection import Selector
from node.local.demo import generate_clip
from node.local.network import default_plan, embedded_ledger, open_network
from node.local.sender import PacedSender, clip_to_ts
from node.orchestrator.ai_compute import AiCompute
from node.protocol import BAD_REQUEST, AiSpec, Refused, StatedFps, stated_fps
from p2p.errors import ProtocolError

PIPELINE, STYLE, INFER_SIZE = "style", "mosaic", "96x64"  # infer small, scale back up
SIZE, SECONDS = "160x96", 6.0  # six 1 s segments
OUTPUT = Path(__file__).parent / "output" / "ai"


def models_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    write_model(folder, "sharpen", "filter", conv3x3_model())
    return folder


def luma(data: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(data)) as container:
        return [f.to_ndarray(format="gray").astype(np.float32) for f in container.decode(video=0)]


def streams(data: bytes) -> dict[str, int]:
    """Packets per stream type of an MPEG-TS segment."""
    counts: dict[str, int] = {}
    with av.open(io.BytesIO(data)) as container:
        for packet in container.demux():
            if packet.dts is not None:
                counts[packet.stream.type] = counts.get(packet.stream.type, 0) + 1
    return counts


async def test_live_ai_stream_keeps_audio_and_fails_over_when_killed(tmp_path: Path) -> None:
    clip = generate_clip(tmp_path / "clip.mp4", SIZE, SECONDS)
    sources = {s.seq: s for s in segment(clip, target_duration=1.0)}
    camera = PacedSender(clip_to_ts(clip)[0], SECONDS, accept_timeout_s=30)
    out = tmp_path / "live"
    inference = InferenceConfig(models_dir=models_dir(tmp_path), preset="ultrafast", threads=1)
    plan = default_plan(2, GatewayConfig(job_timeout_s=30), ticket_ev=Fraction(10**9),
                        inference=inference)  # fmt: skip
    ledger = await trio.to_thread.run_sync(embedded_ledger, plan)
    killed: list[bytes] = []
    try:
        async with open_network(tmp_path / "nodes", plan, ledger) as net:
            members = dict(zip((o.address for o in net.orchestrators), net.members[1:-1],
                               strict=True))  # fmt: skip
            orchestrators = {o.address: o for o in net.orchestrators}

            def on_publish(report: LiveReport, outcome: Any) -> None:
                if not killed and outcome.result is not None:
                    # the stream's orchestrator dies mid-stream, like a killed process
                    killed.append(outcome.orchestrator)
                    orchestrators[outcome.orchestrator].dead = True
                    member = members[outcome.orchestrator]
                    member.alive = False
                    member.scope.cancel()

            # a loaded test machine is slower than real time: only the kill moves the session
            config = LiveConfig(window=3, segment_s=1.0, attempt_timeout_s=20, read_timeout_s=10,
                                latency_factor=30.0)  # fmt: skip
            ai = live_ai(PIPELINE, options={"style": STYLE, "infer_size": INFER_SIZE})
            session = LiveSession(net.gateway, camera.url, out, config=config,
                                  on_publish=on_publish, ai=ai)  # fmt: skip
            with trio.fail_after(40):  # a 6 s stream
                report = await session.run()
            survivor = next(a for a in orchestrators if a not in killed)
            stated = [o.ai.stated() for o in net.orchestrators]
    finally:
        camera.close()

    assert report.ended == "end of stream"
    assert report.published == sorted(sources) and report.skipped == []
    served = [o.orchestrator for o in sorted(report.job.segments, key=lambda o: o.seq)]
    assert served[0] == killed[0] and survivor in served
    after = served[served.index(survivor) :]
    assert set(after) == {survivor}  # it failed over once and stayed
    assert all(o.fee_wei > 0 for o in report.job.segments)
    assert report.job.tickets_sent > 0
    # the added latency of every segment was measured
    assert set(report.added_latency_s) == set(report.published)
    assert all(0 < v < 30 for v in report.added_latency_s.values())
    assert 0 < report.latency_percentile(0.5) <= report.latency_percentile(0.95)
    # each orchestrator that ran the pipeline states the fps it reached, at its size
    assert any(s and s[0].pipeline == PIPELINE and s[0].fps > 0 for s in stated)

    changes: list[float] = []
    playlist = out / PIPELINE / "index.m3u8"
    entries, ended = read_media(playlist)
    assert ended and len(entries) == 3
    assert (out / "master.m3u8").read_text().count("#EXT-X-STREAM-INF") == 1
    for entry in entries:
        data = (playlist.parent / entry.uri).read_bytes()
        seq = int(entry.uri.split("_")[1].split(".")[0])
        made, given = luma(data), luma(sources[seq].data)
        assert len(made) == len(given) and made[0].shape == given[0].shape == (96, 160)
        assert streams(data).get("audio", 0) == streams(sources[seq].data)["audio"] > 0
        change = float(np.mean([np.abs(a - b).mean() for a, b in zip(made, given, strict=True)]))
        assert change > MIN_CHANGE[PIPELINE], change  # the style repainted the pictures
        changes.append(change)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    with av.open(str(playlist.parent / entries[-1].uri)) as container:
        frame = next(container.decode(video=0))
        frame.to_image().save(OUTPUT / f"live_{PIPELINE}_{STYLE}.png")
    print(f"mean luma change per segment: {', '.join(f'{c:.1f}' for c in changes)}")


def test_options_on_the_wire_are_bounded_and_old_specs_still_read() -> None:
    job = b"\x01" * 32
    spec = AiSpec(job, "style", "", {"style": "mosaic", "infer_size": "320x180"})
    assert AiSpec.from_wire(spec.to_wire()) == spec
    assert AiSpec.from_wire([job, "filter", ""]) == AiSpec(job, "filter")
    assert len(AiSpec(job, "filter").to_wire()) == 3  # what nodes before options read
    for bad in (
        [job, "style", "", ["mosaic"]],
        [job, "style", "", {"Style": "mosaic"}],
        [job, "style", "", {"style": b"x"}],
        [job, "style", "", {"blend": {"a": {"b": 1}}}],
        [job, "style", "", {f"k{i}": "x" * 1000 for i in range(8)}],
    ):
        with pytest.raises(ProtocolError):
            AiSpec.from_wire(bad)


async def test_orchestrator_checks_options_and_refuses_paths(tmp_path: Path) -> None:
    compute = AiCompute(InferenceConfig(preset="ultrafast", threads=1))
    await trio.to_thread.run_sync(compute.start)
    # warmed at start: the first offer already states its speed (a bad entry is skipped)
    await trio.to_thread.run_sync(compute.warm_up, ("style@96x64", "nope@1x1", "style"))
    warm = stated_fps(compute.capabilities(), "style")
    assert warm is not None and warm.fps > 0 and (warm.width, warm.height) == (96, 64)
    assert "ai:style:warm" in compute.capabilities()
    clip = generate_clip(tmp_path / "clip.mp4", "96x64", 1.0)
    seg = next(iter(segment(clip, target_duration=1.0)))
    job = b"\x02" * 32
    for options, reason in [
        ({"style_image": str(clip)}, "not accepted from peers"),
        ({"style": "nope"}, "unknown style"),
        ({"infer_size": "9x9"}, "out of range"),
    ]:
        with pytest.raises(Refused) as caught:
            compute.plan(AiSpec(job, "style", "", options), seg.data)
        assert caught.value.code == BAD_REQUEST and reason in caught.value.reason, caught.value
    plan = compute.plan(AiSpec(job, "style", "", {"style": "Mosaic"}), seg.data)
    assert plan.options["style"] == "mosaic" and (plan.width, plan.height) == (96, 64)
    output = await trio.to_thread.run_sync(compute.run, plan, seg.data)
    assert output.frames == 30 and (output.width, output.height) == (96, 64)
    stated = stated_fps(compute.capabilities(), "style")
    assert stated is not None and stated.fps > 0 and (stated.width, stated.height) == (96, 64)


def test_stated_fps_and_keeping_up() -> None:
    stated = StatedFps("filter", "", 40.0, 320, 180)
    caps = ("ai:filter", stated.capability(), "fps:style=9.0@160x96")
    assert stated_fps(caps, "filter") == stated
    assert stated_fps(caps, "filter", "other") is None
    assert stated_fps(("fps:filter=nan@1x1", "fps:filter=x@2x2"), "filter") is None
    assert stated.at(640, 360) == pytest.approx(10.0)  # four times the pixels

    def offer(*caps: str) -> OfferState:
        return OfferState(1, 1, ("ai:filter", *caps), 1, "peer", (), 0)

    demand = Demand()
    selector = KeepUpSelector(Selector(), live_ai("filter"), demand)
    fast, slow, silent = offer(stated.capability()), offer("fps:filter=20.0@320x180"), offer()
    assert selector.keeps_up(b"a", fast) is None  # the stream's rate is not known yet
    demand.fps, demand.width, demand.height = 30.0, 320, 180
    assert selector.keeps_up(b"a", fast) is True
    assert selector.keeps_up(b"b", slow) is False  # says so in its offer
    assert selector.keeps_up(b"c", silent) is None  # states nothing: tried after those that do
    demand.width, demand.height = 640, 360
    assert selector.keeps_up(b"a", fast) is False  # 10 fps at four times the pixels
    demand.width, demand.height = 320, 180
    selector.slow.add(b"a")  # measured too slow by the session
    assert selector.keeps_up(b"a", fast) is False


def test_live_ai_requests_checked() -> None:
    with pytest.raises(LiveAiError, match="video pipeline"):
        live_ai("detect-faces")
    with pytest.raises(LiveAiError, match="model name"):
        live_ai("filter", "../x")
    with pytest.raises(LiveAiError):
        live_ai("filter", options={"infer_size": "320x180", "nope": 1})


async def test_live_api_takes_a_pipeline_and_refuses_paths(tmp_path: Path) -> None:
    from api_client import request_json

    queued: list[str] = []
    book = JobBook(tmp_path / "jobs")
    allow = (ip_network("127.0.0.1/32"),)
    config = ApiConfig(port=0, require_token=False, live_allow_networks=allow)
    api = GatewayApi(config, book, queued.append, dict, "144p")
    json_type = {"Content-Type": "application/json"}
    url = "tcp://127.0.0.1:9"
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(serve_api, api)
        base = f"http://{host}:{port}"

        async def post(body: dict[str, Any]) -> tuple[int, Any]:
            data = json.dumps(body).encode()
            return await trio.to_thread.run_sync(
                lambda: request_json(base, "POST", "/v1/live", body=data, headers=json_type)
            )

        bad = [
            ({"url": url, "style": "mosaic"}, "bad_request"),  # options without a pipeline
            ({"url": url, "pipeline": "detect-faces"}, "bad_options"),
            ({"url": url, "pipeline": "filter", "model": "../etc"}, "bad_options"),
            ({"url": url, "pipeline": "style", "infer_size": "tiny"}, "bad_options"),
            ({"url": url, "pipeline": "style", "style": "nope"}, "bad_options"),
            ({"url": url, "pipeline": "filter", "infer_size": "320x180"}, "bad_options"),
            ({"url": url, "pipeline": "style", "style_image": "/etc/passwd"}, "bad_options"),
            ({"url": url, "pipeline": "matte", "background": "~/me.png"}, "bad_options"),
            ({"url": url, "pipeline": 5}, "bad_request"),
        ]
        for body, error in bad:
            status, answer = await post(body)
            assert (status, answer["error"]) == (400, error), (body, answer)
        path_answer = (await post({"url": url, "pipeline": "style", "style_image": "/etc/passwd"}))[
            1
        ]["message"]
        assert "local paths are not accepted" in path_answer and "passwd" not in path_answer
        assert queued == []
        asked = {"url": url, "pipeline": PIPELINE, "style": "Mosaic", "infer_size": "320x180"}
        status, job = await post(asked)
        assert status == 202, job
        record: JobRecord | None = book.get(job["id"])
        assert record is not None and record.pipeline == PIPELINE
        assert record.options == {"style": "mosaic", "infer_size": "320x180"}
        assert queued == [job["id"]]
        public = record.public()
        assert public["kind"] == "live" and public["pipeline"] == PIPELINE
        nursery.cancel_scope.cancel()


def test_cli_live_ai_on_a_file_and_flag_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from node.cli.main import main

    url = "tcp://127.0.0.1:9"
    for args in (
        ["live", url, "--style", "mosaic"],  # an option without --pipeline
        ["live", url, "--pipeline", "detect-faces"],
        ["live", url, "--pipeline", "style", "--style", "nope"],
        ["live", url, "--pipeline", "style", "--blend", "mosaic=x"],
        ["demo", "--style", "mosaic"],
        ["demo", "--ai", "style", "--infer-size", "1x1"],
    ):
        assert main(args) == 2, args
        assert capsys.readouterr().err.strip(), args  # said why
    clip = generate_clip(tmp_path / "clip.mp4", "96x64", 2.0)
    out = tmp_path / "out"
    args = ["live", str(clip), "--out", str(out), "--pipeline", "style", "--blend",
            "mosaic=3,sepia=1", "--infer-size", "64x48", "--segment", "1",
            "--orchestrators", "1"]  # fmt: skip
    code = main([*args, "--json", "--data-dir", str(tmp_path / "nodes")])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0, summary
    assert summary["pipeline"] == "style" and summary["segments"]["published"] == 2
    assert summary["options"]["blend"] == {"mosaic": 0.75, "sepia": 0.25}
    assert summary["added_latency_s"]["p95"] >= summary["added_latency_s"]["p50"] > 0
    entries, ended = read_media(out / "style" / "index.m3u8")
    assert ended and len(entries) == 2
