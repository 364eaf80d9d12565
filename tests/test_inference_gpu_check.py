"""bench/gpu_check.py: one line and exit 0 without a GPU; its report builder, row checks and
provider reporting on the CPU; and a full rehearsal with the CPU standing in for CUDA."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from inference.detections import Box, FrameDetections
from inference.engine import InferenceConfig, InferenceEngine
from inference.errors import ProviderUnavailable
from inference.pipelines import PipelineResult
from inference.providers import CPU, CUDA, choose_providers

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"


@pytest.fixture(scope="module")
def check() -> ModuleType:
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def no_gpu(check: ModuleType) -> str:
    present, reason = check.gpu_presence(0)
    if present:
        pytest.skip("an NVIDIA GPU is here: run bench/gpu_check.py itself")
    return str(reason)


def run_script(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def test_without_a_gpu_it_says_so_in_one_line_and_exits_0(no_gpu: str, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    done = run_script("--out", str(out))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("gpu_check: no GPU here") and no_gpu in lines[0]
    report = json.loads(out.read_text())
    assert report["gpu"] is False and report["ok"] is False and report["pipelines"] == []


def test_provider_selection_with_the_cpu_only(no_gpu: str) -> None:
    choice = choose_providers("auto")
    assert choice.name == "cpu" and choice.providers == ((CPU, {}),)
    with pytest.raises(ProviderUnavailable, match="CUDA is not usable here"):
        choose_providers("cuda")


def test_sessions_report_their_real_provider_and_binding(check: ModuleType) -> None:
    engine = InferenceEngine(InferenceConfig(provider="cpu"))
    model = engine.cache.get(engine.resolve("detect-faces", "mtcnn"))
    sessions = check.runner_providers(model)
    assert set(sessions) == {"pnet", "rnet", "onet"}
    for info in sessions.values():
        assert info["provider"] == CPU and info["providers"] == [CPU]
        assert info["io_binding"] is False


def result(provider: str, boxes: list[list[Box]], fps: float) -> PipelineResult:
    found = tuple(FrameDetections(i, i, i / 25, tuple(b)) for i, b in enumerate(boxes))
    return PipelineResult("detect-faces", "mtcnn", provider, len(boxes), 64, 48, 64, 48,
                          len(boxes) * 64 * 48, len(boxes) / fps, detections=found)  # fmt: skip


def test_rows_pass_only_on_cuda_with_binding_and_agreeing_boxes(check: ModuleType) -> None:
    face = Box(10, 10, 30, 30, 0.99)
    near = Box(11, 10, 31, 30, 0.98)  # IoU ~0.9 with `face`
    cpu = result(CPU, [[face], [face], []], fps=10)
    gpu = result(CUDA, [[near], [face], []], fps=40)
    on_cuda = {"pnet": {"provider": CUDA, "providers": [CUDA, CPU], "io_binding": True}}
    row = check.compare(("detect-faces", "mtcnn", "clip.mp4"), cpu, gpu, on_cuda)
    assert row["ok"] and row["problems"] == []
    assert row["speedup"] == 4.0 and row["boxes"] == {"cpu": 2, "cuda": 2, "agreement": 1.0}

    fell_back = {"pnet": {"provider": CPU, "providers": [CPU], "io_binding": False}}
    row = check.compare(("detect-faces", "mtcnn", "clip.mp4"), cpu, gpu, fell_back)
    assert not row["ok"] and row["problems"] == [f"session pnet ran on {CPU}, not {CUDA}"]

    unbound = {"pnet": {"provider": CUDA, "providers": [CUDA], "io_binding": False}}
    row = check.compare(("detect-faces", "mtcnn", "clip.mp4"), cpu, gpu, unbound)
    assert row["problems"] == ["session pnet ran without I/O binding"]

    missed = result(CUDA, [[], [Box(40, 5, 60, 25, 0.9)], []], fps=40)
    row = check.compare(("detect-faces", "mtcnn", "clip.mp4"), cpu, missed, on_cuda)
    assert row["boxes"]["agreement"] == 0.0
    assert row["problems"] == ["only 0% of the CPU boxes were found on CUDA"]


def test_report_verdict(check: ModuleType) -> None:
    good = {"ok": True}
    kwargs = {"reason": "1 CUDA device(s)", "provider_reason": "ok", "decode": None, "seconds": 1}
    assert check.build_report(gpu=True, rows=[good], **kwargs)["ok"] is True
    assert check.build_report(gpu=True, rows=[good, {"ok": False}], **kwargs)["ok"] is False
    assert check.build_report(gpu=True, rows=[], **kwargs)["ok"] is False
    skipped = check.build_report(gpu=True, rows=[good], skipped=["upscale: budget"], **kwargs)
    assert skipped["ok"] is False and skipped["skipped"] == ["upscale: budget"]
    report = check.build_report(gpu=False, rows=[], **kwargs)
    assert report["ok"] is False and "onnxruntime" in report["environment"]


def test_rehearsal_runs_every_step_and_flags_the_cpu(no_gpu: str, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    done = run_script("--rehearse", "--frames", "3", "--only", "mtcnn,sharpen-u8", "--out",
                      str(out), timeout=240)  # fmt: skip
    assert done.returncode == 1, done.stderr
    report = json.loads(out.read_text())
    assert report["rehearsal"] is True and report["gpu"] is False and report["ok"] is False
    rows = {(r["model"], tuple(r["input"])) for r in report["pipelines"]}
    assert rows == {("mtcnn", (176, 144)), ("mtcnn", (1280, 720)), ("sharpen-u8", (1280, 720))}
    for row in report["pipelines"]:
        assert row["frames"] == 3 and row["cpu"]["provider"] == CPU
        assert all(f"not {CUDA}" in p for p in row["problems"])
        assert row.get("boxes", {}).get("agreement", 1.0) == 1.0
    filtered = next(r for r in report["pipelines"] if r["model"] == "sharpen-u8")
    assert filtered["video"]["identical"] is True
    decode = report["decode"]
    assert decode["software"]["frames"] == 3 and decode["software"]["hardware"] is False
    assert decode["ok"] is False and "error" in decode["cuda"]
