"""Model manifests: what a model is, where its bytes are, and how frames must be shaped for it.

A manifest is a small TOML file beside the `.onnx` file it names; models shipped inside installed
packages get their manifests from `inference.registry`.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inference.errors import InvalidManifest, ModelNotFound, ModelUnreadable

PIPELINE_KINDS = ("detect-faces", "detect-text", "filter", "upscale", "style", "matte")
# pipelines whose output is a video of the input's frames (the others give detections)
VIDEO_KINDS = frozenset({"filter", "upscale", "style", "matte"})
# the multistyle model's 26 styles by index; the package numbers them, these names are castnet's
STYLE_NAMES = (
    "pastel", "bold-ink", "charcoal", "shards", "crimson", "fauve", "cells", "primary",
    "pencil", "camo", "sepia", "etching", "lavender", "glass", "frost", "mosaic",
    "strokes", "grid", "woodcut", "starry", "ember", "cutout", "pop", "dusk",
    "indigo", "tapestry",
)  # fmt: skip
# NWHC: width-major images, as the Caffe-born MTCNN weights expect
LAYOUTS = ("NCHW", "NHWC", "NWHC")
DTYPES = ("float32", "uint8")
CHANNEL_ORDERS = ("RGB", "BGR")


@dataclass(frozen=True, slots=True)
class Normalization:
    """tensor = (pixel * scale - mean) / std, per channel, in `channels` order."""

    scale: float = 1 / 255
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    channels: str = "RGB"

    def __post_init__(self) -> None:
        if self.channels not in CHANNEL_ORDERS:
            raise InvalidManifest(
                f"channels must be one of {CHANNEL_ORDERS}, not {self.channels!r}"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or any(s == 0 for s in self.std):
            raise InvalidManifest("normalization needs 3 means and 3 non-zero stds")
        if self.scale == 0:
            raise InvalidManifest("normalization scale must not be 0")


@dataclass(frozen=True, slots=True)
class ModelFile:
    """One ONNX graph of a model (a cascade such as MTCNN has several), pinned by its sha256.

    `pixels` ("uint8" or "float32"): load the graph so that it takes pixel values of that type,
    the manifest's normalization folded into its first convolution (`inference.folding`).
    `layout` ("NHWC" for a fully convolutional graph of an NWHC model): load the graph so that it
    takes images in that layout, its kernels transposed instead (`inference.layouts`)."""

    role: str
    path: Path
    sha256: str
    pixels: str | None = None
    layout: str | None = None

    def read_verified(self, model: str) -> bytes:
        """The file's bytes, refused unless they hash to the pinned sha256."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError as exc:
            raise ModelNotFound(f"model {model!r}: file {self.path} does not exist") from exc
        except OSError as exc:
            raise ModelUnreadable(f"model {model!r}: cannot read {self.path}: {exc}") from exc
        digest = hashlib.sha256(data).hexdigest()
        if digest != self.sha256.lower():
            raise ModelUnreadable(
                f"model {model!r}: {self.path.name} has sha256 {digest[:16]}..., manifest pins"
                f" {self.sha256[:16]}...; refusing to load it"
            )
        return data


@dataclass(frozen=True, slots=True)
class ModelManifest:
    """A registered model: pipeline kind, files, input layout and size, normalization, units."""

    name: str
    kind: str
    files: tuple[ModelFile, ...]
    output: str
    layout: str = "NCHW"
    dtype: str = "float32"
    size: tuple[int, int] | None = None  # fixed input (height, width); None follows the frame
    multiple: int = 1  # input sides must be multiples of this (pipelines pad to it)
    normalization: Normalization = field(default_factory=Normalization)
    unit: str = "pixel"
    source: str = "local file"
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name or any(c.isspace() for c in self.name):
            raise InvalidManifest(f"model name {self.name!r} must be non-empty without spaces")
        if self.kind not in PIPELINE_KINDS:
            raise InvalidManifest(
                f"model {self.name!r}: kind {self.kind!r} not in {PIPELINE_KINDS}"
            )
        if self.layout not in LAYOUTS:
            raise InvalidManifest(f"model {self.name!r}: layout {self.layout!r} not in {LAYOUTS}")
        if self.dtype not in DTYPES:
            raise InvalidManifest(f"model {self.name!r}: dtype {self.dtype!r} not in {DTYPES}")
        if not self.files:
            raise InvalidManifest(f"model {self.name!r}: no files")
        for f in self.files:
            if f.layout is not None and (f.layout, self.layout) != ("NHWC", "NWHC"):
                raise InvalidManifest(
                    f"model {self.name!r}: file {f.role!r} can be loaded NHWC only from NWHC,"
                    f" not {f.layout!r} from {self.layout!r}"
                )
        if self.multiple < 1:
            raise InvalidManifest(
                f"model {self.name!r}: multiple must be >= 1, not {self.multiple}"
            )

    @property
    def sizes(self) -> str:
        """The input sizes the model accepts, in words (for listings and offers)."""
        if self.size is not None:
            return f"{self.size[1]}x{self.size[0]} only"
        if self.multiple > 1:
            return f"any, sides multiples of {self.multiple}"
        return "any"

    def file(self, role: str) -> ModelFile:
        for f in self.files:
            if f.role == role:
                return f
        raise InvalidManifest(f"model {self.name!r} has no {role!r} file")

    @property
    def installed(self) -> bool:
        return all(f.path.is_file() for f in self.files)

    @property
    def file_bytes(self) -> int:
        """Bytes of all model files on disk (0 for missing ones): the basis of memory estimates."""
        return sum(f.path.stat().st_size for f in self.files if f.path.is_file())


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    except FileNotFoundError as exc:
        raise ModelNotFound(f"model file {path} does not exist") from exc
    except OSError as exc:
        raise ModelUnreadable(f"cannot read model file {path}: {exc}") from exc
    return digest.hexdigest()


def load_manifest(path: Path) -> ModelManifest:
    """Parse a TOML manifest; `file` is relative to the manifest's folder."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ModelNotFound(f"manifest {path} does not exist") from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidManifest(f"manifest {path}: cannot parse: {exc}") from exc
    try:
        return manifest_from_mapping(data, path.parent)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidManifest(f"manifest {path}: {type(exc).__name__}: {exc}") from exc


def manifest_from_mapping(data: Mapping[str, Any], base: Path) -> ModelManifest:
    """Build a manifest from parsed TOML (keys as in `manifest_toml`)."""
    norm = data.get("normalization", {})
    size = data.get("size")
    return ModelManifest(
        name=str(data["name"]),
        kind=str(data["kind"]),
        files=(ModelFile("main", base / str(data["file"]), str(data["sha256"])),),
        output=str(data.get("output", "image")),
        layout=str(data.get("layout", "NCHW")),
        dtype=str(data.get("dtype", "float32")),
        size=(int(size[0]), int(size[1])) if size else None,
        multiple=int(data.get("multiple", 1)),
        normalization=Normalization(
            scale=float(norm.get("scale", 1 / 255)),
            mean=_triple(norm.get("mean", (0.0, 0.0, 0.0))),
            std=_triple(norm.get("std", (1.0, 1.0, 1.0))),
            channels=str(norm.get("channels", "RGB")),
        ),
        unit=str(data.get("unit", "pixel")),
        source=str(data.get("source", "local file")),
        description=str(data.get("description", "")),
    )


def manifest_toml(manifest: ModelManifest) -> str:
    """TOML text for a single-file manifest, with the file named relative to its folder."""
    n = manifest.normalization
    main = manifest.file("main")
    lines = [
        f"name = {_q(manifest.name)}",
        f"kind = {_q(manifest.kind)}",
        f"file = {_q(main.path.name)}",
        f"sha256 = {_q(main.sha256)}",
        f"output = {_q(manifest.output)}",
        f"layout = {_q(manifest.layout)}",
        f"dtype = {_q(manifest.dtype)}",
        f"unit = {_q(manifest.unit)}",
        f"description = {_q(manifest.description)}",
    ]
    if manifest.size is not None:
        lines.append(f"size = [{manifest.size[0]}, {manifest.size[1]}]")
    if manifest.multiple != 1:
        lines.append(f"multiple = {manifest.multiple}")
    lines += [
        "",
        "[normalization]",
        f"scale = {n.scale!r}",
        f"mean = [{', '.join(repr(float(v)) for v in n.mean)}]",
        f"std = [{', '.join(repr(float(v)) for v in n.std)}]",
        f"channels = {_q(n.channels)}",
    ]
    return "\n".join(lines) + "\n"


def manifest_for_onnx(
    path: Path, kind: str, name: str | None = None, **fields: Any
) -> ModelManifest:
    """A manifest for a bare `.onnx` file, pinned to the file's current sha256."""
    return ModelManifest(
        name=name or path.stem,
        kind=kind,
        files=(ModelFile("main", path, sha256_file(path)),),
        output=fields.pop("output", "image"),
        **fields,
    )


def _triple(values: Any) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in values)
    return (a, b, c)


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
