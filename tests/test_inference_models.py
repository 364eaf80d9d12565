"""Model registry, manifests, execution providers and the warm/cold session cache, real models."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np
import pytest

from inference.engine import InferenceConfig, InferenceEngine
from inference.errors import (
    InvalidManifest,
    ModelNotFound,
    ModelUnreadable,
    ProviderUnavailable,
    ShapeMismatch,
)
from inference.manifest import ModelFile, ModelManifest, load_manifest, manifest_toml, sha256_file
from inference.providers import CPU, choose_providers, cuda_status
from inference.registry import Registry, builtin_manifests
from inference.sessions import SessionCache, load_model
from inference.synthetic import conv3x3_model, resize2x_model, write_model
from inference.tensors import from_tensor, to_tensor


def test_only_the_gpu_onnxruntime_distribution_is_installed() -> None:
    # onnxruntime and onnxruntime-gpu install the same module: both at once breaks one of them
    assert importlib.metadata.version("onnxruntime-gpu")
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.distribution("onnxruntime")


def test_shipped_models_are_installed_and_match_their_pinned_hashes() -> None:
    manifests = {m.name: m for m in builtin_manifests()}
    assert manifests["mtcnn"].kind == "detect-faces"
    assert manifests["ppocr-det"].kind == "detect-text"
    assert manifests["multistyle26"].kind == manifests["arbitrary-style"].kind == "style"
    assert manifests["modnet"].kind == "matte"
    assert manifests["modnet"].sizes == "any, sides multiples of 32"
    assert manifests["arbitrary-style"].sizes == "384x384 only"
    for manifest in manifests.values():
        assert manifest.installed, manifest.name
        for file in manifest.files:
            assert sha256_file(file.path) == file.sha256


def test_provider_is_chosen_explicitly_and_reported() -> None:
    cpu = choose_providers("cpu", threads=2)
    assert [name for name, _ in cpu.providers] == [CPU]
    assert cpu.session_options().intra_op_num_threads == 2
    auto = choose_providers("auto")
    usable, reason = cuda_status(0)
    assert reason
    assert auto.name == ("cuda" if usable else "cpu")
    if not usable:
        with pytest.raises(ProviderUnavailable, match="CUDA is not usable"):
            choose_providers("cuda")
    with pytest.raises(ProviderUnavailable):
        choose_providers("metal")


def test_sessions_really_run_on_the_chosen_provider() -> None:
    engine = InferenceEngine()
    engine.load("mtcnn")
    (warm,) = engine.warm()
    expected = "CUDAExecutionProvider" if engine.provider == "cuda" else CPU
    assert (warm.name, warm.provider) == ("mtcnn", expected)


def test_local_manifests_round_trip_and_resolve(tmp_path: Path) -> None:
    made = write_model(tmp_path, "sharpen", "filter", conv3x3_model(), description="3x3 sharpen")
    loaded = load_manifest(tmp_path / "sharpen.toml")
    assert loaded == made
    registry = Registry.default(tmp_path)
    assert registry.resolve("filter").name == "sharpen"
    assert registry.resolve("filter", "sharpen") == made
    assert registry.resolve("filter", str(tmp_path / "sharpen.onnx")).file("main").sha256 == (
        made.file("main").sha256
    )
    with pytest.raises(InvalidManifest, match="is for filter, not upscale"):
        registry.resolve("upscale", "sharpen")
    with pytest.raises(InvalidManifest, match="already registered"):
        registry.add(made)


def test_missing_model_and_missing_file_are_clear_errors(tmp_path: Path) -> None:
    registry = Registry.default()
    with pytest.raises(ModelNotFound, match=r"no model named 'nope'.*mtcnn"):
        registry.get("nope")
    with pytest.raises(ModelNotFound, match="no installed model for upscale"):
        registry.resolve("upscale")
    ghost = ModelManifest("ghost", "filter", (ModelFile("main", tmp_path / "x.onnx", "00"),), "img")
    with pytest.raises(ModelNotFound, match="does not exist"):
        load_model(ghost, choose_providers("cpu"))


def test_hash_mismatch_and_corrupt_model_are_refused(tmp_path: Path) -> None:
    choice = choose_providers("cpu")
    made = write_model(tmp_path, "sharpen", "filter", conv3x3_model())
    path = made.file("main").path
    path.write_bytes(conv3x3_model(kernel=np.ones((3, 3), np.float32)))  # same size, new weights
    with pytest.raises(ModelUnreadable, match="sha256"):
        load_model(made, choice)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07not a protobuf" * 50)
    bad = ModelManifest(
        "garbage", "filter", (ModelFile("main", garbage, sha256_file(garbage)),), ""
    )
    with pytest.raises(ModelUnreadable, match="not a loadable ONNX model"):
        load_model(bad, choice)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(resize2x_model()[:60])
    cut = ModelManifest(
        "cut", "upscale", (ModelFile("main", truncated, sha256_file(truncated)),), ""
    )
    with pytest.raises(ModelUnreadable):
        load_model(cut, choice)


def test_malformed_manifests_are_invalid(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('name = "a"\nkind = "paint"\nfile = "a.onnx"\nsha256 = "0"\n')
    with pytest.raises(InvalidManifest, match="kind 'paint'"):
        load_manifest(tmp_path / "a.toml")
    (tmp_path / "b.toml").write_text('name = "b"\nkind = "filter"\n')
    with pytest.raises(InvalidManifest, match="KeyError"):
        load_manifest(tmp_path / "b.toml")
    (tmp_path / "c.toml").write_text("name = [unclosed")
    with pytest.raises(InvalidManifest, match="cannot parse"):
        load_manifest(tmp_path / "c.toml")
    made = write_model(tmp_path / "d", "m", "filter", conv3x3_model(), layout="NHWC")
    text = manifest_toml(made).replace('layout = "NHWC"', 'layout = "HWNC"')
    (tmp_path / "d" / "m.toml").write_text(text)
    with pytest.raises(InvalidManifest, match="layout"):
        load_manifest(tmp_path / "d" / "m.toml")


def test_cache_loads_cold_models_once_and_evicts_least_recent(tmp_path: Path) -> None:
    a = write_model(tmp_path, "a", "filter", conv3x3_model())
    b = write_model(tmp_path, "b", "upscale", resize2x_model())
    c = write_model(tmp_path, "c", "filter", conv3x3_model(dtype="uint8"), dtype="uint8")
    budget = max(m.file_bytes for m in (a, b, c)) * 3 * 2  # room for two of them
    cache = SessionCache(choose_providers("cpu"), budget=budget)
    first = cache.get(a)
    assert cache.get(a) is first and cache.loads == 1
    cache.get(b)
    assert [w.name for w in cache.warm()] == ["a", "b"]
    cache.get(a)  # a is now the most recent
    cache.get(c)
    assert [w.name for w in cache.warm()] == ["a", "c"]
    assert not cache.is_warm("b") and cache.loads == 3
    assert cache.evict("a") and not cache.is_warm("a")
    # an evicted model still runs for whoever holds it
    out = first.runner().run(np.zeros((1, 3, 4, 4), np.float32))
    assert out[0].shape == (1, 3, 4, 4)


def test_engine_lists_capabilities_with_warm_flags(tmp_path: Path) -> None:
    write_model(tmp_path, "sharpen", "filter", conv3x3_model())
    engine = InferenceEngine(InferenceConfig(provider="cpu", models_dir=tmp_path))
    caps = {c["model"]: c for c in engine.capabilities()}
    assert set(caps) == {
        "mtcnn",
        "ppocr-det",
        "multistyle26",
        "arbitrary-style",
        "modnet",
        "sharpen",
    }
    assert not any(c["warm"] for c in caps.values())
    engine.load("sharpen")
    caps = {c["model"]: c for c in engine.capabilities()}
    assert caps["sharpen"]["warm"] and caps["sharpen"]["pipeline"] == "filter"
    assert caps["sharpen"]["provider"] == "cpu"


def test_tensors_round_trip_through_every_layout() -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    for layout, shape in (("NCHW", (2, 3, 5, 7)), ("NHWC", (2, 5, 7, 3)), ("NWHC", (2, 7, 5, 3))):
        for dtype in ("float32", "uint8"):
            manifest = ModelManifest(
                "t", "filter", (ModelFile("main", Path("x"), "0"),), "", layout=layout, dtype=dtype
            )
            tensor = to_tensor(images, manifest)
            assert tensor.shape == shape and tensor.dtype == np.dtype(dtype)
            assert np.array_equal(from_tensor(tensor, manifest), images)
    nchw = ModelManifest("t", "filter", (ModelFile("main", Path("x"), "0"),), "")
    with pytest.raises(ShapeMismatch, match="1 channels"):
        from_tensor(np.zeros((1, 1, 4, 4), np.float32), nchw)
