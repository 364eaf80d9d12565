"""Loaded models: sessions that run batches (with I/O binding on a GPU) and a cache that keeps the
recently used ones warm within a memory budget and loads cold ones on demand."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from inference.config import DEFAULT_BUDGET
from inference.errors import InferenceError, ModelUnreadable, ShapeMismatch
from inference.folding import fold_pixels
from inference.layouts import height_major
from inference.manifest import ModelManifest
from inference.providers import CPU, ProviderChoice

log = logging.getLogger("castnet.inference")

# A loaded session holds its weights, optimized copies of them and arena slack: measured 2-3x the
# file size on CPU for the shipped models.
MEMORY_FACTOR = 3


class ModelRunner:
    """One onnxruntime session; `run` feeds a whole batch to a single-input model, `run_feeds`
    feeds every input of a model that takes more (an image and style weights)."""

    def __init__(
        self,
        model: str,
        session: ort.InferenceSession,
        device_id: int,
        pixels: str | None = None,
        layout: str | None = None,
    ) -> None:
        self.model, self.session, self.device_id = model, session, device_id
        # the pixel type the session takes as it is (normalization folded in), None: tensors
        self.pixels = pixels
        # the image layout the session takes when it is not the manifest's (None: the manifest's)
        self.layout = layout
        inputs = session.get_inputs()
        if not inputs:
            raise ShapeMismatch(f"model {model!r} has no inputs")
        self.input_names = [i.name for i in inputs]
        self.input_shapes: list[list[int | str | None]] = [list(i.shape) for i in inputs]
        self.input_name = inputs[0].name
        self.input_shape: list[int | str | None] = list(inputs[0].shape)
        self.input_type: str = inputs[0].type
        self.output_names = [o.name for o in session.get_outputs()]
        self.output_shapes = [list(o.shape) for o in session.get_outputs()]
        self.provider: str = session.get_providers()[0]
        self.io_binding = self.provider != CPU
        # wall seconds inside onnxruntime and runs made, over the runner's life: a pipeline step's
        # busy time minus these is its own pre- or post-processing (benches read the difference)
        self.seconds = 0.0
        self.runs = 0
        self._count = threading.Lock()

    def fixed_dim(self, axis: int) -> int | None:
        """The input's size on `axis` when the model fixes it, None when it is dynamic."""
        value = self.input_shape[axis] if axis < len(self.input_shape) else None
        return value if isinstance(value, int) and value > 0 else None

    def check_feed(self, shape: tuple[int, ...]) -> None:
        """Refuse a feed whose rank or fixed dimensions differ from the model's input."""
        if len(self.input_names) != 1:
            raise ShapeMismatch(
                f"model {self.model!r} has {len(self.input_names)} inputs; this pipeline feeds"
                " one image"
            )
        if len(shape) != len(self.input_shape):
            raise ShapeMismatch(
                f"model {self.model!r} takes a rank-{len(self.input_shape)} input"
                f" {self.input_shape}, the pipeline feeds {list(shape)}"
            )
        for axis, size in enumerate(shape):
            fixed = self.fixed_dim(axis)
            if fixed is not None and fixed != size and not (axis == 0 and size <= fixed):
                raise ShapeMismatch(
                    f"model {self.model!r} input {self.input_shape} does not fit frames shaped"
                    f" {list(shape)} (axis {axis}: model {fixed}, frames {size})"
                )

    def run(self, feed: np.ndarray) -> list[np.ndarray]:
        return self.run_feeds({self.input_name: feed})

    def run_feeds(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        started = time.perf_counter()
        try:
            if self.io_binding:
                # Inputs are copied to the device once; outputs stay there until fetched together.
                binding = self.session.io_binding()
                for name, value in feeds.items():
                    binding.bind_cpu_input(name, np.ascontiguousarray(value))
                for name in self.output_names:
                    binding.bind_output(name, "cuda", self.device_id)
                self.session.run_with_iobinding(binding)
                return list(binding.copy_outputs_to_cpu())
            return list(self.session.run(self.output_names, feeds))
        except Exception as exc:  # onnxruntime's pybind errors share no useful base class
            raise InferenceError(f"model {self.model!r}: inference failed: {exc}") from exc
        finally:
            with self._count:
                self.seconds += time.perf_counter() - started
                self.runs += 1


@dataclass(slots=True)
class LoadedModel:
    """A model's sessions (one per file role), the provider really running them, and their cost."""

    manifest: ModelManifest
    runners: dict[str, ModelRunner]
    provider: str
    memory_estimate: int
    load_seconds: float

    def runner(self, role: str = "main") -> ModelRunner:
        return self.runners[role]

    @property
    def intra_op_threads(self) -> int:
        """The intra-op threads its sessions were created with (default: one per physical core)."""
        session = next(iter(self.runners.values())).session
        return session.get_session_options().intra_op_num_threads


@dataclass(frozen=True, slots=True)
class WarmModel:
    """What the node advertises about a loaded model."""

    name: str
    kind: str
    provider: str
    memory_estimate: int


def load_model(manifest: ModelManifest, choice: ProviderChoice) -> LoadedModel:
    """Verify every file's hash, then create its session; any failure is a `ModelUnreadable`."""
    started = time.perf_counter()
    runners: dict[str, ModelRunner] = {}
    for file in manifest.files:
        data = file.read_verified(manifest.name)
        if file.pixels is not None:
            data = fold_pixels(data, manifest.normalization, file.pixels, manifest.name)
        if file.layout is not None:
            data = height_major(data, manifest.name)
        try:
            session = choice.create_session(data)
        except Exception as exc:  # onnxruntime raises InvalidProtobuf, Fail, ... for bad graphs
            reason = str(exc).splitlines()[0][:300]
            raise ModelUnreadable(
                f"model {manifest.name!r}: {file.path.name} is not a loadable ONNX model: {reason}"
            ) from exc
        runners[file.role] = ModelRunner(
            manifest.name, session, choice.device_id, file.pixels, file.layout
        )
    provider = next(iter(runners.values())).provider
    return LoadedModel(
        manifest=manifest,
        runners=runners,
        provider=provider,
        memory_estimate=manifest.file_bytes * MEMORY_FACTOR,
        load_seconds=time.perf_counter() - started,
    )


class SessionCache:
    """Least-recently-used loaded models within `budget` bytes (estimated); safe across threads.

    A model in use keeps its sessions alive even if evicted here: eviction only drops the cache's
    reference, so a running pipeline is never pulled from under.
    """

    def __init__(self, choice: ProviderChoice, budget: int = DEFAULT_BUDGET) -> None:
        self.choice, self.budget = choice, budget
        self._loaded: OrderedDict[tuple[str, tuple[str, ...]], LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0

    def get(self, manifest: ModelManifest) -> LoadedModel:
        """The warm model, or load it cold (evicting the least recently used to fit)."""
        key = (manifest.name, tuple(f.sha256 for f in manifest.files))
        with self._lock:
            if (model := self._loaded.get(key)) is not None:
                self._loaded.move_to_end(key)
                return model
            model = load_model(manifest, self.choice)
            self.loads += 1
            while self._loaded and self.used + model.memory_estimate > self.budget:
                evicted_key, _ = self._loaded.popitem(last=False)
                log.info("evicted model %s to fit %s", evicted_key[0], manifest.name)
            self._loaded[key] = model
            log.debug(
                "loaded model %s on %s in %.2f s", manifest.name, model.provider, model.load_seconds
            )
            return model

    @property
    def used(self) -> int:
        return sum(m.memory_estimate for m in self._loaded.values())

    def warm(self) -> list[WarmModel]:
        """Loaded models, most recently used last."""
        with self._lock:
            return [
                WarmModel(m.manifest.name, m.manifest.kind, m.provider, m.memory_estimate)
                for m in self._loaded.values()
            ]

    def is_warm(self, name: str) -> bool:
        with self._lock:
            return any(key[0] == name for key in self._loaded)

    def evict(self, name: str) -> bool:
        with self._lock:
            keys = [key for key in self._loaded if key[0] == name]
            for key in keys:
                del self._loaded[key]
            return bool(keys)
