"""`castnet media transcode|verify` through its argparse tree, as an operator runs it."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import av
import pytest

from node.cli import media
from node.cli.main import main
from tests.media_fixtures import lavfi, video_file


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="castnet")
    media.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.run(args))


def test_transcode_json_then_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = str(video_file("cli.mp4", size="640x360", duration=4, audio="aac"))
    out = tmp_path / "out"
    code = run(["media", "transcode", source, "--out", str(out), "--profiles", "360p,240p",
                "--preset", "ultrafast", "--json"])  # fmt: skip
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["master"] == str(out / "master.m3u8") and summary["segments"] == 2
    assert summary["duration"] == pytest.approx(4.0) and summary["wall_seconds"] > 0
    assert [(r["name"], r["width"], r["height"], r["frames"]) for r in summary["renditions"]] == [
        ("360p", 640, 360, 120),
        ("240p", 426, 240, 120),
    ]
    for r in summary["renditions"]:
        files = (out / r["name"]).glob("seg_*.ts")
        assert r["bytes"] == sum(f.stat().st_size for f in files)
        assert r["pixels"] == r["frames"] * r["width"] * r["height"]

    assert run(["media", "verify", str(out), "--source", source]) == 0
    text = capsys.readouterr().out
    assert "360p" in text and "240p" in text and text.strip().endswith("verified")

    assert run(["media", "verify", str(out), "--source", source, "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["ok"] and [v["frames"] for v in verdict["renditions"]] == [120, 120]


def test_text_summary_and_failed_verification(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    graph = lavfi("320x240", 30, 2)
    assert run(["media", "transcode", graph, "--format", "lavfi", "--out", str(out),
                "--profiles", "240p,144p", "--preset", "ultrafast"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert text.startswith(f"wrote {out / 'master.m3u8'}: 1 segments, 2.00 s")
    shutil.copy(out / "144p" / "seg_00000.ts", out / "240p" / "seg_00000.ts")  # wrong size
    assert run(["media", "verify", str(out), "--source", graph, "--source-format", "lavfi"]) == 1
    text = capsys.readouterr().out
    assert "FAIL" in text and "resolution: frames are 192x144, expected 320x240" in text


def test_errors_exit_2_with_one_line_and_no_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    out = tmp_path / "out"
    assert run(["media", "transcode", str(notes), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("castnet: ") and "Traceback" not in err and not out.exists()
    assert run(["media", "transcode", str(notes), "--out", str(out), "--profiles", "999x"]) == 2
    assert "cannot parse profile" in capsys.readouterr().err
    assert run(["media", "verify", str(tmp_path), "--source", str(notes)]) == 2
    assert "master.m3u8" in capsys.readouterr().err


def test_sample_writes_a_clip_to_try_things_on(tmp_path: Path) -> None:
    out = tmp_path / "clip.mp4"
    assert main(["media", "sample", str(out), "--size", "320x180", "--seconds", "2"]) == 0
    with av.open(str(out)) as clip:
        video = clip.streams.video[0]
        assert (video.codec_context.width, video.codec_context.height) == (320, 180)
        assert clip.streams.audio and float(clip.duration / av.time_base) == pytest.approx(2, 0.1)
    assert main(["media", "sample", str(out)]) == 2  # never overwrites
    assert main(["media", "sample", str(tmp_path / "x.mp4"), "--size", "big"]) == 2
