"""`castnet inference models|run|synth-model`: ONNX pipelines on local video files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from inference.engine import InferenceConfig, InferenceEngine
from inference.errors import InferenceError
from inference.pipelines import PIPELINES, VIDEO_KINDS, PipelineResult
from inference.providers import PREFERENCES
from inference.synthetic import conv3x3_model, resize2x_model, write_model
from media.encoders import X264_PRESETS
from media.progress import Progress
from node.cli.ai_options import add_option_flags, options_from_args
from node.cli.commands import command_help

SYNTHETIC = {
    "sharpen": ("filter", lambda: conv3x3_model(), {}),
    "sharpen-u8": ("filter", lambda: conv3x3_model(dtype="uint8"), {"dtype": "uint8"}),
    "nearest2x": ("upscale", lambda: resize2x_model("nearest"), {}),
    "linear2x": ("upscale", lambda: resize2x_model("linear"), {}),
}


def register(sub: Any) -> None:
    group = sub.add_parser("inference", help=command_help("inference"))
    cmds = group.add_subparsers(dest="inference_command", required=True, metavar="ACTION")

    p = cmds.add_parser("models", help="list the model registry and the provider in use")
    _engine_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=cmd_models)

    p = cmds.add_parser("run", help="run PIPELINE on every frame of INPUT")
    p.add_argument("pipeline", choices=PIPELINES)
    p.add_argument("input", help="video file, URL, or a lavfi graph with --format lavfi")
    p.add_argument("--model", help="registered model name, or a .onnx / .toml path")
    p.add_argument("--out", type=Path, help="detections as JSON lines, or the output video")
    p.add_argument("--format", help="input format for PyAV, e.g. lavfi, mpegts")
    p.add_argument("--batch", type=int, default=4, help="frames per model run (default 4)")
    p.add_argument("--preset", default="veryfast", choices=X264_PRESETS, help="x264 preset")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    add_option_flags(p, local=True)
    _engine_options(p)
    p.set_defaults(run=cmd_run)

    p = cmds.add_parser("synth-model", help="write a tiny generated model and its manifest")
    p.add_argument("name", choices=sorted(SYNTHETIC))
    p.add_argument("--out", type=Path, required=True, help="models folder (for --models-dir)")
    p.set_defaults(run=cmd_synth_model)


def _engine_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models-dir", type=Path, help="folder of *.toml model manifests")
    p.add_argument("--provider", default="auto", choices=PREFERENCES, help="execution provider")
    p.add_argument(
        "--threads", type=int, default=0, help="threads per model (0: one per physical core)"
    )


def _engine(args: argparse.Namespace) -> InferenceEngine:
    config = InferenceConfig(
        provider=args.provider,
        threads=args.threads,
        models_dir=args.models_dir,
        batch=getattr(args, "batch", 4),
        preset=getattr(args, "preset", "veryfast"),
    )
    return InferenceEngine(config)


def _fail(message: str) -> int:
    print(f"castnet: {message}", file=sys.stderr)
    return 2


def cmd_models(args: argparse.Namespace) -> int:
    try:
        engine = _engine(args)
    except InferenceError as exc:
        return _fail(str(exc))
    models = engine.models()
    if args.json:
        out = {
            "provider": engine.provider,
            "provider_reason": engine.choice.reason,
            "models": [m.as_json() for m in models],
        }
        print(json.dumps(out))
        return 0
    print(f"provider: {engine.provider} ({engine.choice.reason})")
    for m in models:
        state = "installed" if m.installed else "MISSING"
        print(
            f"  {m.name:<15} {m.kind:<13} {state:<9} {m.bytes / 1e6:>7.2f} MB  {m.source};"
            f" sizes: {m.sizes}"
        )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    if args.pipeline in VIDEO_KINDS and args.out is None:
        return _fail(f"{args.pipeline} writes a video: give --out PATH")
    if args.batch < 1:
        return _fail("--batch must be >= 1")
    try:
        options = options_from_args(args)
    except ValueError as exc:
        return _fail(str(exc))
    bar_format = "{l_bar}{bar}| {n:.1f}/{total_fmt} s [{elapsed}<{remaining}]"
    with tqdm(desc=args.pipeline, file=sys.stderr, disable=None, bar_format=bar_format) as bar:

        def on_progress(progress: Progress) -> None:
            if progress.total_seconds and bar.total is None:
                bar.total = round(progress.total_seconds, 2)
            bar.n = round(progress.seconds, 2)
            bar.refresh()

        try:
            result = _engine(args).run_pipeline(
                args.pipeline,
                args.input,
                model=args.model,
                out=args.out,
                format=args.format,
                on_progress=on_progress,
                options=options,
            )
        except InferenceError as exc:
            bar.leave = False
            return _fail(str(exc))
    if args.json:
        print(json.dumps(result.summary()))
    else:
        _print_summary(result)
    return 0


def _print_summary(result: PipelineResult) -> None:
    print(
        f"{result.pipeline} with {result.model} on {result.provider}: {result.frames} frames"
        f" {result.width}x{result.height} in {result.wall_seconds:.2f} s ({result.fps:.1f} fps),"
        f" {result.units} pixels"
    )
    if result.detections:
        with_boxes = sum(1 for d in result.detections if d.boxes)
        boxes = sum(len(d.boxes) for d in result.detections)
        print(f"  {boxes} boxes on {with_boxes} of {result.frames} frames")
    if result.out is not None:
        print(f"  wrote {result.out}")


def cmd_synth_model(args: argparse.Namespace) -> int:
    kind, build, fields = SYNTHETIC[args.name]
    try:
        manifest = write_model(args.out, args.name, kind, build(), **fields)
    except OSError as exc:
        return _fail(f"cannot write {args.out}: {exc}")
    print(f"wrote {manifest.file('main').path} and {args.name}.toml ({kind})")
    return 0
