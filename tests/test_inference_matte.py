"""The `matte` pipeline on a real clip: MODNet's alpha is high on the face that detect-faces finds
and low in the corners; the background becomes a colour, a blur or a picture, while the person
stays; size, frames and timestamps are kept. PNG frames are saved under tests/output/ai/."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from inference.detections import Box
from inference.engine import InferenceConfig, InferenceEngine
from inference.errors import InvalidOptions
from inference.matte import Matte, default_work_size
from node.cli.main import main
from tests.ai_clips import carphone, decode, fed_shapes, mad, save

FRAMES = 2
CORNER = 16  # side of the corner squares checked; in carphone all but the bottom right (the
# speaker's jacket) are background


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return carphone(tmp_path_factory.mktemp("matte") / "carphone.mp4", FRAMES)


@pytest.fixture(scope="module")
def engine() -> InferenceEngine:
    return InferenceEngine(InferenceConfig(provider="cpu", preset="ultrafast", batch=2))


@pytest.fixture(scope="module")
def source(clip: Path) -> tuple[list[np.ndarray], list[float]]:
    return decode(clip)


@pytest.fixture(scope="module")
def faces(engine: InferenceEngine, clip: Path) -> list[Box]:
    """The face on each frame, as detect-faces finds it."""
    found = engine.run_pipeline("detect-faces", str(clip)).detections
    assert [len(d.boxes) for d in found] == [1] * FRAMES
    return [d.boxes[0] for d in found]


def inside(image: np.ndarray, box: Box) -> np.ndarray:
    """The central half of a face box: face only (the box's edges catch hair and headrest)."""
    w, h = (box.x2 - box.x1) / 4, (box.y2 - box.y1) / 4
    return image[int(box.y1 + h) : int(box.y2 - h), int(box.x1 + w) : int(box.x2 - w)]


def corners(image: np.ndarray) -> list[np.ndarray]:
    """The background corners: top left, top right, bottom left."""
    c = CORNER
    return [image[:c, :c], image[:c, -c:], image[-c:, :c]]


def test_alpha_is_high_on_the_face_and_low_in_the_corners(
    engine: InferenceEngine, source: tuple[list[np.ndarray], list[float]], faces: list[Box]
) -> None:
    loaded = engine.cache.get(engine.resolve("matte"))
    assert loaded.manifest.name == "modnet"
    matte = Matte(loaded, 176, 144, "#00ff00", default_work_size(176, 144))
    pictures = [av.VideoFrame.from_ndarray(image, format="rgb24") for image in source[0]]
    _, output = matte.infer(matte.prepare(pictures))
    alphas = matte.alphas(output)
    assert alphas.shape == (FRAMES, 144, 176)
    for alpha, face in zip(alphas, faces, strict=True):
        whole = alpha[int(face.y1) : int(face.y2), int(face.x1) : int(face.x2)]
        assert float(whole.mean()) > 0.75 and float(inside(alpha, face).mean()) > 0.95
        assert max(float(corner.mean()) for corner in corners(alpha)) < 0.05
    save("matte-alpha", (alphas[0] * 255 + 0.5).astype(np.uint8))


def test_background_colour_fills_the_corners_and_keeps_the_face(
    engine: InferenceEngine,
    clip: Path,
    source: tuple[list[np.ndarray], list[float]],
    faces: list[Box],
    tmp_path: Path,
) -> None:
    out = tmp_path / "blue.mp4"
    result = engine.run_pipeline("matte", str(clip), out=out, options={"background": "#0000ff"})
    assert (result.model, result.frames) == ("modnet", FRAMES)
    images, times = decode(out)
    assert len(images) == FRAMES and images[0].shape == (144, 176, 3)
    assert times == pytest.approx(source[1], abs=1e-3)
    blue = np.zeros((CORNER, CORNER, 3), np.uint8)
    blue[..., 2] = 255
    for image, original, face in zip(images, source[0], faces, strict=True):
        assert max(mad(corner, blue) for corner in corners(image)) < 30
        assert mad(inside(image, face), inside(original, face)) < 15
    save("matte-input", source[0][0])
    save("matte-blue", images[0])


def test_blur_and_picture_backgrounds(
    engine: InferenceEngine,
    clip: Path,
    source: tuple[list[np.ndarray], list[float]],
    faces: list[Box],
) -> None:
    blurred, _ = decode(
        engine.run_pipeline("matte", str(clip), options={"background": "blur"}).video or b""
    )
    original = source[0][0]
    # the blurred corners keep the scene's colours but lose its detail
    for corner, before in zip(corners(blurred[0]), corners(original), strict=True):
        assert mad(corner.mean(axis=(0, 1)), before.mean(axis=(0, 1))) < 25
    detail = [float(np.abs(np.diff(c.astype(np.int16), axis=1)).mean()) for c in corners(original)]
    smooth = [
        float(np.abs(np.diff(c.astype(np.int16), axis=1)).mean()) for c in corners(blurred[0])
    ]
    assert sum(smooth) < 0.6 * sum(detail)
    assert mad(inside(blurred[0], faces[0]), inside(original, faces[0])) < 15
    save("matte-blur", blurred[0])

    checks = np.zeros((120, 160, 3), np.uint8)
    checks[(np.arange(120)[:, None] // 20 + np.arange(160)[None] // 20) % 2 == 1] = (250, 200, 0)
    picture = save("matte-picture-background", checks)
    placed, _ = decode(
        engine.run_pipeline("matte", str(clip), options={"background": str(picture)}).video or b""
    )
    # the picture covers the frame (scaled by 1.2, centred): its colours fill the corners
    assert mad(placed[0][:CORNER, :CORNER].mean(axis=(0, 1)), checks[:8, :8].mean(axis=(0, 1))) < 40
    assert mad(inside(placed[0], faces[0]), inside(original, faces[0])) < 15
    save("matte-picture", placed[0])


def test_infer_size_runs_smaller_and_scales_back(
    engine: InferenceEngine, faces: list[Box], tmp_path: Path
) -> None:
    clip = carphone(tmp_path / "carphone-352x288.mp4", 2, scale=2)
    with fed_shapes(engine, "matte") as fed:
        full = engine.run_pipeline("matte", str(clip))
        full_shapes, fed[:] = set(fed), []
        small = engine.run_pipeline("matte", str(clip), options={"infer_size": "264x216"})
    images, _ = decode(small.video or b"")
    original, _ = decode(clip)
    full_images, _ = decode(full.video or b"")
    save("matte-green-352x288", full_images[0])
    assert len(images) == 2 and images[0].shape == (288, 352, 3)
    green = np.zeros((2 * CORNER, 2 * CORNER, 3), np.uint8)
    green[..., 1] = 255
    face = Box(*(2 * v for v in (faces[0].x1, faces[0].y1, faces[0].x2, faces[0].y2)), 1.0)
    for image, before in zip(images + full_images, original + original, strict=True):
        big = [image[: 2 * CORNER, : 2 * CORNER], image[: 2 * CORNER, -2 * CORNER :]]
        assert max(mad(corner, green) for corner in big) < 30
        assert mad(inside(image, face), inside(before, face)) < 15
    # the model ran on 264x216 padded to 288x224 (MODNet takes sides in multiples of 32), not
    # on the frame's 352x288
    assert {shape[2:] for shape in full_shapes} == {(288, 352)}
    assert {shape[2:] for shape in fed} == {(224, 288)}
    save("matte-green-352x288-infer-264x216", images[0])


def test_bad_backgrounds_fail_before_any_output(
    engine: InferenceEngine, clip: Path, tmp_path: Path
) -> None:
    out = tmp_path / "never.mp4"
    with pytest.raises(InvalidOptions, match="six hex digits"):
        engine.run_pipeline("matte", str(clip), out=out, options={"background": "#00ff0"})
    with pytest.raises(InvalidOptions, match="does not exist"):
        engine.run_pipeline("matte", str(clip), out=out, options={"background": "nope.png"})
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(InvalidOptions, match="not a readable picture"):
        engine.run_pipeline("matte", str(clip), out=out, options={"background": str(garbage)})
    assert not out.exists()


def test_cli_replaces_the_background(
    clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli-matte.mp4"
    argv = ["inference", "run", "matte", str(clip), "--out", str(out), "--provider", "cpu",
            "--background", "#0000ff", "--json"]  # fmt: skip
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "modnet"
    images, _ = decode(out)
    blue = np.zeros((CORNER, CORNER, 3), np.uint8)
    blue[..., 2] = 255
    assert len(images) == FRAMES and mad(images[0][:CORNER, :CORNER], blue) < 30
    assert main([*argv[:-3], "--background", "#00f"]) == 2
    assert "six hex digits" in capsys.readouterr().err


def test_tiny_and_thin_frames_are_matted_at_their_size(engine: InferenceEngine) -> None:
    for size in ("22x16", "402x34"):
        graph = f"testsrc2=size={size}:rate=10:duration=0.1"
        result = engine.run_pipeline("matte", graph, format="lavfi", options={"background": "blur"})
        images, _ = decode(result.video or b"")
        width, height = (int(v) for v in size.split("x"))
        assert len(images) == 1 and images[0].shape == (height, width, 3)
