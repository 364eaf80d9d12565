"""The `style` pipeline on a real clip: 26 named styles, blends and any-picture style keep the
input's size, frames and timestamps and change the picture a lot; options are checked before any
work. PNG frames of each effect are saved under tests/output/ai/."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from inference.engine import InferenceConfig, InferenceEngine
from inference.errors import InferenceError, InvalidOptions, UnknownPipeline
from inference.options import parse_options
from inference.pipelines import VIDEO_KINDS
from inference.speed import measure_fps
from inference.style import STYLE_NAMES, StyleNet
from node.cli.main import main
from node.protocol import VIDEO_PIPELINES
from tests.ai_clips import carphone, decode, fed_shapes, mad, save

FRAMES = 4


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return carphone(tmp_path_factory.mktemp("style") / "carphone.mp4", FRAMES)


@pytest.fixture(scope="module")
def engine() -> InferenceEngine:
    return InferenceEngine(InferenceConfig(provider="cpu", preset="ultrafast", batch=3))


@pytest.fixture(scope="module")
def source(clip: Path) -> tuple[list[np.ndarray], list[float]]:
    return decode(clip)


@pytest.fixture(scope="module")
def mosaic(engine: InferenceEngine, clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("styled") / "mosaic.mp4"
    result = engine.run_pipeline("style", str(clip), out=out, options={"style": "mosaic"})
    assert (result.model, result.frames) == ("multistyle26", FRAMES)
    assert (result.output_width, result.output_height) == (176, 144)
    assert result.units == FRAMES * 176 * 144
    return out


def test_style_keeps_size_frames_and_timestamps_and_changes_the_picture(
    mosaic: Path, source: tuple[list[np.ndarray], list[float]]
) -> None:
    inputs, times = source
    styled, styled_times = decode(mosaic)
    assert len(styled) == FRAMES
    assert styled[0].shape == inputs[0].shape == (144, 176, 3)
    assert styled_times == pytest.approx(times, abs=1e-3)
    diffs = [mad(a, b) for a, b in zip(inputs, styled, strict=True)]
    assert min(diffs) > 25, diffs  # a restyle, not a tint: tens of levels on average
    save("input", inputs[0])
    save("style-mosaic", styled[0])


def test_styles_differ_and_a_blend_lies_between(
    engine: InferenceEngine, clip: Path, mosaic: Path
) -> None:
    a = decode(mosaic)[0][0]
    other = engine.run_pipeline("style", str(clip), options={"style": "starry"})
    b = decode(other.video or b"")[0][0]
    blend = engine.run_pipeline("style", str(clip), options={"blend": {"mosaic": 1, "starry": 1}})
    mixed = decode(blend.video or b"")[0][0]
    apart = mad(a, b)
    assert apart > 20
    assert mad(mixed, a) < apart and mad(mixed, b) < apart
    save("style-starry", b)
    save("style-blend-mosaic-starry", mixed)


def test_every_named_style_changes_the_frame(
    engine: InferenceEngine, source: tuple[list[np.ndarray], list[float]]
) -> None:
    frame = av.VideoFrame.from_ndarray(source[0][0], format="rgb24")
    loaded = engine.cache.get(engine.resolve("style", "multistyle26"))
    outputs = {}
    for name in STYLE_NAMES:
        net = StyleNet(loaded, 176, 144, {name: 1.0})
        image = net.to_frames(net.infer(net.prepare([frame])))[0].to_ndarray(format="rgb24")
        outputs[name] = image
        save(f"styles/{STYLE_NAMES.index(name):02d}-{name}", image)
    assert all(mad(image, source[0][0]) > 12 for image in outputs.values())
    # no two names give the same picture
    firsts = [outputs[n] for n in STYLE_NAMES]
    closest = min(mad(firsts[i], firsts[j]) for i in range(26) for j in range(i + 1, 26))
    assert closest > 3


def test_any_picture_as_the_style(
    engine: InferenceEngine, clip: Path, source: tuple[list[np.ndarray], list[float]]
) -> None:
    stripes = np.zeros((200, 300, 3), np.uint8)
    stripes[:, ::20] = (255, 40, 0)
    stripes[::25] = (0, 60, 255)
    picture = save("style-picture", stripes)
    result = engine.run_pipeline(
        "style", str(clip), options={"style_image": str(picture), "infer_size": "176x144"}
    )
    assert result.model == "arbitrary-style"
    styled, _ = decode(result.video or b"")
    assert len(styled) == FRAMES and styled[0].shape == (144, 176, 3)
    assert mad(styled[0], source[0][0]) > 20
    save("style-any-picture", styled[0])


def test_infer_size_runs_smaller_and_scales_back(
    engine: InferenceEngine, clip: Path, source: tuple[list[np.ndarray], list[float]]
) -> None:
    with fed_shapes(engine, "style") as fed:
        engine.run_pipeline("style", str(clip), options={"style": "mosaic"})
        full_shapes, fed[:] = set(fed), []
        small = engine.run_pipeline(
            "style", str(clip), options={"style": "mosaic", "infer_size": "88x72"}
        )
    images, _ = decode(small.video or b"")
    assert len(images) == FRAMES and images[0].shape == (144, 176, 3)
    assert mad(images[0], source[0][0]) > 20
    # the model ran on a quarter of the pixels, not on the frame's 176x144
    assert {shape[2:] for shape in full_shapes if len(shape) == 4} == {(144, 176)}
    assert {shape[2:] for shape in fed if len(shape) == 4} == {(72, 88)}
    save("style-mosaic-infer-88x72", images[0])


def test_options_are_checked_and_normalised() -> None:
    assert parse_options("style", None) == {"style": STYLE_NAMES[0]}
    assert parse_options("style", {"style": " Mosaic ", "infer_size": "320X180"}) == {
        "style": "mosaic",
        "infer_size": "320x180",
    }
    blend = parse_options("style", {"blend": {"mosaic": 3, "starry": 1, "sepia": 0}})
    assert blend == {"blend": {"mosaic": 0.75, "starry": 0.25}}
    assert parse_options("style", blend) == blend  # parsing is idempotent
    assert json.loads(json.dumps(blend)) == blend  # plain JSON for the wire
    assert parse_options("matte", {}) == {"background": "#00ff00"}
    assert parse_options("matte", {"background": "#00AAff"}) == {"background": "#00aaff"}
    assert parse_options("matte", {"background": "blur"}) == {"background": "blur"}
    assert parse_options("filter", None) == {} and parse_options("detect-faces", {}) == {}
    bad = [
        ("style", {"colour": "red"}, "unknown style option 'colour'"),
        ("style", {"style": "picasso"}, "unknown style 'picasso'"),
        ("style", {"style": "mosaic", "blend": {"sepia": 1}}, "not style and blend"),
        ("style", {"blend": {"mosaic": -1}}, ">= 0"),
        ("style", {"blend": {"mosaic": 0}}, "must not all be 0"),
        ("style", {"blend": {"mosaic": "half"}}, "must be a number"),
        ("style", {"blend": []}, "blend must map"),
        ("style", {"infer_size": "320"}, "WIDTHxHEIGHT"),
        ("style", {"infer_size": "8x8"}, "out of range"),
        ("style", {"style_image": "/no/such/picture.png"}, "does not exist"),
        ("matte", {"background": "#12345"}, "six hex digits"),
        ("matte", {"background": 7}, "background must be"),
        ("matte", {"style": "mosaic"}, "unknown matte option 'style'"),
        ("upscale", {"infer_size": "64x64"}, "upscale takes no options"),
    ]
    for pipeline, raw, message in bad:
        with pytest.raises(InvalidOptions, match=message):
            parse_options(pipeline, raw)
    with pytest.raises(InvalidOptions, match="not accepted from peers"):
        parse_options("matte", {"background": __file__}, allow_paths=False)
    with pytest.raises(UnknownPipeline):
        parse_options("paint", {})
    assert issubclass(InvalidOptions, InferenceError)


def test_bad_options_and_mismatched_models_fail_before_any_output(
    engine: InferenceEngine, clip: Path, tmp_path: Path
) -> None:
    out = tmp_path / "never.mp4"
    with pytest.raises(InvalidOptions, match="unknown style"):
        engine.run_pipeline("style", str(clip), out=out, options={"style": "nope"})
    with pytest.raises(InvalidOptions, match="give style_image"):
        engine.run_pipeline("style", str(clip), out=out, model="arbitrary-style")
    text = tmp_path / "not-a-picture.png"
    text.write_text("hello")
    with pytest.raises(InvalidOptions, match="not a readable picture"):
        engine.run_pipeline("style", str(clip), out=out, options={"style_image": str(text)})
    assert list(tmp_path.iterdir()) == [text]


def test_video_kinds_are_the_protocols_video_pipelines() -> None:
    assert {"filter", "upscale", "style", "matte"} == VIDEO_KINDS
    assert VIDEO_PIPELINES == VIDEO_KINDS


def test_measured_speed_follows_the_inference_size(engine: InferenceEngine) -> None:
    loaded = engine.cache.get(engine.resolve("style"))
    full = measure_fps(loaded, "style", 320, 180, {"style": "mosaic"}, frames=2)
    small = measure_fps(loaded, "style", 320, 180, {"style": "mosaic", "infer_size": "160x90"}, 2)
    assert 0 < full < small < 10_000
    with pytest.raises(InvalidOptions, match="unknown style"):
        measure_fps(loaded, "style", 320, 180, {"style": "nope"})
    with pytest.raises(InferenceError, match="frames must be"):
        measure_fps(loaded, "style", 320, 180, frames=0)
    faces = engine.cache.get(engine.resolve("detect-faces"))
    assert measure_fps(faces, "detect-faces", 176, 144, frames=2) > 0
    with pytest.raises(InvalidOptions, match="takes no options"):
        measure_fps(faces, "detect-faces", 176, 144, {"style": "mosaic"})


def test_cli_runs_styles_and_refuses_bad_options(
    clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inference", "models", "--json", "--provider", "cpu"]) == 0
    listed = {m["name"]: m for m in json.loads(capsys.readouterr().out)["models"]}
    assert listed["multistyle26"]["pipeline"] == listed["arbitrary-style"]["pipeline"] == "style"
    assert listed["modnet"]["sizes"] == "any, sides multiples of 32"
    assert all(listed[name]["installed"] for name in ("multistyle26", "arbitrary-style", "modnet"))
    out = tmp_path / "cli-style.mp4"
    base = ["inference", "run", "style", str(clip), "--out", str(out), "--provider", "cpu"]
    assert main([*base, "--blend", "mosaic=0.5,starry=0.5", "--infer-size", "88x72", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames"] == FRAMES and summary["output"] == [176, 144]
    assert len(decode(out)[0]) == FRAMES
    out.unlink()
    for extra, message in [
        (["--style", "picasso"], "unknown style 'picasso'"),
        (["--blend", "mosaic=half"], "--blend weight 'half' of 'mosaic' is not a number"),
        (["--style", "mosaic", "--blend", "starry=1"], "not style and blend"),
        (["--infer-size", "big"], "infer_size must be WIDTHxHEIGHT"),
        (["--background", "blur"], "unknown style option 'background'"),
    ]:
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("castnet: ") and message in err and len(err.splitlines()) == 1
    assert not out.exists()
    argv = ["inference", "run", "filter", str(clip), "--out", str(out), "--style", "mosaic"]
    assert main(argv) == 2
    assert "filter takes no options" in capsys.readouterr().err


@pytest.mark.parametrize("size", ["22x16", "402x34"])
def test_tiny_and_thin_frames_are_styled_at_their_size(engine: InferenceEngine, size: str) -> None:
    graph = f"testsrc2=size={size}:rate=10:duration=0.3"
    result = engine.run_pipeline("style", graph, format="lavfi", options={"style": "grid"})
    images, _ = decode(result.video or b"")
    width, height = (int(v) for v in size.split("x"))
    assert len(images) == 3 and images[0].shape == (height, width, 3)
