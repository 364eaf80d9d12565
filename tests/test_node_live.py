"""Live mode on the in-process network (real libp2p on 127.0.0.1, real encodes, verification and
tickets): a "camera" thread serves MPEG-TS over TCP at its real-time rate, the gateway pulls it,
and the live playlist must grow with a sliding window while the stream runs, end with ENDLIST,
open in ffprobe, and list only verified, paid segments. The best orchestrator dies on its first
job, so the session fails over and then stays on the survivor."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import trio

from media.errors import OutputError
from media.hls import LiveOutput
from media.playlists import read_media
from media.profiles import parse_profiles
from media.segmenter import segment
from media.transcoder import transcode
from node.gateway.live import LiveConfig, LiveError, LiveReport, LiveSession, check_live_url
from node.gateway.role import GatewayConfig
from node.local.demo import generate_clip
from node.local.network import default_plan, embedded_ledger, open_network
from node.local.sender import PacedSender, clip_to_ts
from tests.polling import until

PROFILES = "144p"
SECONDS = 8.0  # four 2 s segments


def snapshot(out: Path) -> tuple[int, list[str], bool] | None:
    """(media sequence, segment names, ended) of the 144p live playlist, None before it exists."""
    path = out / "144p" / "index.m3u8"
    if not path.exists():
        return None
    text = path.read_text()
    sequence = int(text.split("#EXT-X-MEDIA-SEQUENCE:")[1].split()[0])
    entries, ended = read_media(path)
    return sequence, [e.uri for e in entries], ended


async def test_live_stream_fails_over_then_sticks_and_ends(tmp_path: Path) -> None:
    clip = generate_clip(tmp_path / "clip.mp4", "320x180", SECONDS)
    camera = PacedSender(clip_to_ts(clip)[0], SECONDS, accept_timeout_s=30)
    out = tmp_path / "live"
    gateway_cfg = GatewayConfig(profiles=PROFILES, job_timeout_s=30)
    plan = default_plan(2, gateway_cfg, ["die-mid-job"], ticket_ev=Fraction(10**9))
    ledger = await trio.to_thread.run_sync(embedded_ledger, plan)
    seen: list[tuple[int, list[str], bool]] = []
    published_while_live: list[int] = []
    try:
        async with open_network(tmp_path / "nodes", plan, ledger) as net:
            victim, survivor = (o.address for o in net.orchestrators)

            def on_publish(report: LiveReport, _: object) -> None:
                # called as each segment is listed: the playlist a player sees at that moment
                # (a few hundred bytes, read in the loop so no later publish can slip in)
                state = snapshot(out)
                assert state is not None
                seen.append(state)
                if not camera.sent_all.is_set():
                    published_while_live.append(len(report.published))

            config = LiveConfig(window=2, attempt_timeout_s=20, read_timeout_s=10)
            session = LiveSession(net.gateway, camera.url, out, PROFILES, config, on_publish)
            with trio.fail_after(60):  # bounded: an 8 s stream
                report = await session.run()
            final = await trio.to_thread.run_sync(snapshot, out)
            assert final is not None
            seen.append(final)
            verdicts = list(net.gateway.verdicts)
    finally:
        camera.close()

    assert report.ended == "end of stream"
    assert report.published == [0, 1, 2, 3] and report.skipped == []
    # the playlist grew while the camera was still sending, and its window slid
    assert published_while_live and published_while_live[0] >= 1
    assert [names for _, names, _ in seen[:4]] == [
        ["seg_00000.ts"], ["seg_00000.ts", "seg_00001.ts"], ["seg_00001.ts", "seg_00002.ts"],
        ["seg_00002.ts", "seg_00003.ts"],
    ]  # fmt: skip
    assert [seq for seq, _, _ in seen[:4]] == [0, 0, 1, 2]
    assert not any(ended for _, _, ended in seen[:4])
    final_seq, final_names, final_ended = seen[-1]
    assert final_ended and final_seq == 2 and final_names == ["seg_00002.ts", "seg_00003.ts"]
    assert "#EXT-X-ENDLIST" in (out / "144p" / "index.m3u8").read_text()
    assert (out / "master.m3u8").read_text().count("#EXT-X-STREAM-INF") == 1
    # the victim died on the first job; the session moved to the survivor and stayed there
    outcomes = sorted(report.job.segments, key=lambda o: o.seq)
    assert {o.orchestrator for o in outcomes} == {survivor}
    assert any(o.attempts == 2 and victim.hex()[:8] in " ".join(o.errors) for o in outcomes)
    # every published segment was verified (an accepted verdict) and paid for with tickets
    accepted = [v for v in verdicts if v.accepted]
    assert len(accepted) == 4 and {v.orchestrator for v in accepted} == {survivor}
    assert all(o.fee_wei > 0 for o in outcomes)
    assert report.job.tickets_sent > 0 and report.job.ticket_ev_sent >= report.job.fees_wei
    if shutil.which("ffprobe"):
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,width,height:"
             "format=duration", "-of", "json", str(out / "master.m3u8")],
            check=True, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        info = json.loads(probe.stdout)
        video = [s for s in info["streams"] if s["codec_type"] == "video"]
        assert (video[0]["width"], video[0]["height"]) == (256, 144)
        assert any(s["codec_type"] == "audio" for s in info["streams"])
        assert 3.0 < float(info["format"]["duration"]) < 5.0  # the window: two 2 s segments


def test_skipped_segment_opens_a_discontinuity_that_slides_out(tmp_path: Path) -> None:
    clip = generate_clip(tmp_path / "clip.mp4", "160x90", 8.0)
    ladder = parse_profiles("90p:100k")
    results = [transcode(s.data, ladder) for s in segment(clip)]
    assert len(results) == 4
    out = LiveOutput(tmp_path / "live", window=2, target=3)
    path = tmp_path / "live" / "90p_100k" / "index.m3u8"
    out.add(0, results[0])
    out.skip(1)
    out.add(2, results[2])
    text = path.read_text()
    assert text.index("#EXT-X-DISCONTINUITY\n") < text.index("seg_00002.ts")
    assert "DISCONTINUITY-SEQUENCE" not in text and "#EXT-X-ENDLIST" not in text
    entries, _ = read_media(path)
    assert [e.discontinuity for e in entries] == [False, True]
    out.add(3, results[3])
    out.add(4, results[0])  # the tagged entry slides out: the count moves to the header
    text = path.read_text()
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:1" in text and "#EXT-X-DISCONTINUITY\n" not in text
    out.end()
    assert path.read_text().endswith("#EXT-X-ENDLIST\n")
    with pytest.raises(OutputError):
        LiveOutput(tmp_path / "live", window=0)


@pytest.mark.parametrize(
    "url", ["ftp://x/y", "tcp://", "javascript:alert(1)", "file:///etc/passwd", "tcp://a b"]
)
def test_live_url_checked(url: str) -> None:
    with pytest.raises(LiveError):
        check_live_url(url)
    assert check_live_url("srt://127.0.0.1:9000?mode=listener") == "srt"


async def test_unreachable_stream_fails_clearly(tmp_path: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    plan = default_plan(1, GatewayConfig(profiles=PROFILES), ticket_ev=Fraction(10**9))
    ledger = await trio.to_thread.run_sync(embedded_ledger, plan)
    async with open_network(tmp_path / "nodes", plan, ledger) as net:
        session = LiveSession(net.gateway, f"tcp://127.0.0.1:{port}", tmp_path / "live")
        with trio.fail_after(20), pytest.raises(LiveError, match="nothing published"):
            await session.run()


async def test_live_api_start_watch_and_stop(tmp_path: Path) -> None:
    from api_client import request, request_json, wait_job
    from test_node_api import service

    clip = generate_clip(tmp_path / "clip.mp4", "320x180", 16.0)  # stopped long before its end
    camera = PacedSender(clip_to_ts(clip)[0], 16.0, accept_timeout_s=30)

    async def call(api: str, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        return await trio.to_thread.run_sync(lambda: request_json(api, method, path, **kw))

    json_type = {"Content-Type": "application/json"}
    try:
        allow = {"path_roots": [str(tmp_path)], "live_allow_networks": ["127.0.0.1/32"]}
        async with service(tmp_path, **allow) as (_, api):
            bad = [
                (b'{"url": "tcp://127.0.0.1:1"}', {}, 415, "unsupported_media_type"),
                (b'{"url": "ftp://h/x"}', json_type, 400, "bad_url"),
                (b'{"url": "concat:/a|/b"}', json_type, 400, "bad_url"),
                (b'{"url": "/etc/hostname"}', json_type, 403, "forbidden"),
                (b'{"path": "/x"}', json_type, 400, "bad_request"),
                (b'{"url": 5}', json_type, 400, "bad_request"),
                (b'{"url": "tcp://127.0.0.1:1", "profiles": "9x"}', json_type, 400,
                 "bad_profiles"),
            ]  # fmt: skip
            for body, headers, code, error in bad:
                status, answer = await call(api, "POST", "/v1/live", body=body, headers=headers)
                assert (status, answer["error"]) == (code, error), (body, answer)
            payload = json.dumps({"url": camera.url, "profiles": PROFILES}).encode()
            status, job = await call(api, "POST", "/v1/live", body=payload, headers=json_type)
            assert status == 202, job
            url = f"/v1/jobs/{job['id']}"

            async def two_published() -> Any:
                status, record = await call(api, "GET", url)
                assert status == 200 and record["status"] in ("queued", "running"), record
                return record if record["progress"]["segments_published"] >= 2 else None

            # two segments published while the camera still sends (the API offers no push)
            record = await until(two_published, "two live segments are published", 30, 0.05)
            assert record["kind"] == "live" and not camera.sent_all.is_set()
            status, master = await trio.to_thread.run_sync(request, api, "GET", record["playlist"])
            assert status == 200 and b"144p/index.m3u8" in master
            status, playlist = await trio.to_thread.run_sync(
                request, api, "GET", f"{url}/144p/index.m3u8"
            )
            assert status == 200 and b"#EXT-X-ENDLIST" not in playlist
            status, answer = await call(api, "DELETE", url)
            assert status == 202 and answer["status"] == "stopping"
            record = await wait_job(api, job["id"], 30)
            assert record["status"] == "done" and record["ended"] == "stopped", record
            assert record["progress"]["segments_failed"] == 0
            status, playlist = await trio.to_thread.run_sync(
                request, api, "GET", f"{url}/144p/index.m3u8"
            )
            assert status == 200 and playlist.endswith(b"#EXT-X-ENDLIST\n")
            # the stopped session let go of the stream
            assert await trio.to_thread.run_sync(camera.cut.wait, 10)
            assert not camera.sent_all.is_set()
            status, answer = await call(api, "DELETE", url)
            assert status == 409 and answer["error"] == "not_stoppable"
    finally:
        camera.close()


def test_live_cli_on_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from node.cli.main import main

    clip = generate_clip(tmp_path / "clip.mp4", "320x180", 4.0)
    out = tmp_path / "out"
    args = ["live", str(clip), "--out", str(out), "--profiles", PROFILES, "--window", "1"]
    code = main([*args, "--json", "--data-dir", str(tmp_path / "nodes")])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0, summary
    assert summary["ended"] == "end of stream"
    assert summary["segments"] == {"total": 2, "published": 2, "skipped": 0}
    assert summary["tickets_sent"] > 0 and summary["ticket_ev_wei"] >= summary["fees_wei"] > 0
    entries, ended = read_media(out / "144p" / "index.m3u8")
    assert ended and [e.uri for e in entries] == ["seg_00001.ts"]
    assert main(["live", "ftp://example/x", "--out", str(out)]) == 2


async def test_slow_segments_move_the_session(tmp_path: Path) -> None:
    """A segment slower than latency_factor x its duration moves the session to the next best."""
    clip = generate_clip(tmp_path / "clip.mp4", "160x90", 6.0)
    plan = default_plan(2, GatewayConfig(profiles=PROFILES), ticket_ev=Fraction(10**9))
    ledger = await trio.to_thread.run_sync(embedded_ledger, plan)
    async with open_network(tmp_path / "nodes", plan, ledger) as net:
        config = LiveConfig(window=3, max_in_flight=1, latency_factor=1e-4)
        session = LiveSession(net.gateway, str(clip), tmp_path / "live", PROFILES, config)
        with trio.fail_after(30):
            report = await session.run()
        first, second = (o.address for o in net.orchestrators)
    served = [o.orchestrator for o in sorted(report.job.segments, key=lambda o: o.seq)]
    assert report.published == [0, 1, 2]
    assert served == [first, second, first] and report.failovers == 3  # one move per segment
