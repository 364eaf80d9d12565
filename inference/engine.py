"""The inference library's front door: one engine holds the registry, the provider choice and
the warm-model cache; the node asks it what it can offer and runs pipelines on it from threads."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference.config import InferenceConfig as InferenceConfig
from inference.errors import InferenceError, UnknownPipeline
from inference.manifest import ModelManifest
from inference.options import parse_options
from inference.pipelines import PIPELINES, PipelineResult, execute
from inference.providers import ProviderChoice, choose_providers
from inference.registry import Registry
from inference.sessions import SessionCache, WarmModel
from media.progress import ProgressCallback
from media.source import Source

log = logging.getLogger("castnet.inference")
ARBITRARY_STYLE = "arbitrary-style"  # the style model that takes any picture as the style


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A registry entry as listed to users and advertised to peers."""

    name: str
    kind: str
    installed: bool
    warm: bool
    bytes: int
    source: str
    description: str
    sizes: str = "any"  # the input sizes the model accepts, in words

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pipeline": self.kind,
            "installed": self.installed,
            "warm": self.warm,
            "bytes": self.bytes,
            "source": self.source,
            "description": self.description,
            "sizes": self.sizes,
        }


class InferenceEngine:
    """Registry + provider choice + session cache. Its methods block: call them from a thread."""

    def __init__(self, config: InferenceConfig | None = None, registry: Registry | None = None):
        self.config = config or InferenceConfig()
        if self.config.batch < 1:
            raise InferenceError("batch must be >= 1")
        self.choice: ProviderChoice = choose_providers(
            self.config.provider, threads=self.config.threads, device_id=self.config.device_id
        )
        self.registry = registry or Registry.default(self.config.models_dir)
        self.cache = SessionCache(self.choice, self.config.memory_budget)
        log.debug("inference provider: %s (%s)", self.choice.name, self.choice.reason)

    @property
    def provider(self) -> str:
        """ "cpu", "cuda" or "tensorrt": what sessions are created with."""
        return self.choice.name

    def models(self) -> list[ModelInfo]:
        return [
            ModelInfo(
                m.name,
                m.kind,
                m.installed,
                self.cache.is_warm(m.name),
                m.file_bytes,
                m.source,
                m.description,
                m.sizes,
            )
            for m in self.registry
        ]

    def available(self) -> list[ModelInfo]:
        """Models whose files are installed: what this node can offer."""
        return [m for m in self.models() if m.installed]

    def warm(self) -> list[WarmModel]:
        """Models loaded now, which start without a load delay."""
        return self.cache.warm()

    def capabilities(self) -> list[dict[str, Any]]:
        """For an offer: each installed model as {pipeline, model, warm, provider}."""
        return [
            {"pipeline": m.kind, "model": m.name, "warm": m.warm, "provider": self.provider}
            for m in self.available()
        ]

    def load(self, name: str) -> None:
        """Warm a model up now (load its sessions), so a later job starts at once."""
        self.cache.get(self.registry.get(name))

    def resolve(
        self,
        pipeline: str,
        model: str | Path | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> ModelManifest:
        """The model to run: `model` when given, else the default for the pipeline (for a style
        after a picture, the arbitrary-style model)."""
        if pipeline not in PIPELINES:
            raise UnknownPipeline(
                f"unknown pipeline {pipeline!r}; use one of {', '.join(PIPELINES)}"
            )
        if model is None and pipeline == "style" and options and options.get("style_image"):
            model = ARBITRARY_STYLE
        return self.registry.resolve(pipeline, model)

    def run_pipeline(
        self,
        pipeline: str,
        source: Source,
        *,
        model: str | Path | None = None,
        out: Path | None = None,
        format: str | None = None,
        on_progress: ProgressCallback | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> PipelineResult:
        """Run `pipeline` over a video (path, URL or bytes). Detections land in the result (and in
        `out` as JSON lines); video outputs go to `out`, or into `result.video` as MPEG-TS bytes.
        `options` are the pipeline's (`inference.options`), checked before the model loads."""
        parsed = parse_options(pipeline, options) if pipeline in PIPELINES else None
        loaded = self.cache.get(self.resolve(pipeline, model, parsed))
        return execute(
            pipeline,
            loaded,
            source,
            out=out,
            batch=self.config.batch,
            preset=self.config.preset,
            encoder=self.config.encoder,
            format=format,
            on_progress=on_progress,
            options=parsed,
        )


def run_pipeline(
    pipeline: str,
    source: Source,
    model: str | Path | None = None,
    out: Path | None = None,
    progress: ProgressCallback | None = None,
    *,
    engine: InferenceEngine | None = None,
    **options: Any,
) -> PipelineResult:
    """One-shot convenience for the node (blocking: call it from a thread): run a pipeline on a
    fresh default engine, or on `engine`; `progress` is called as frames complete."""
    return (engine or InferenceEngine()).run_pipeline(
        pipeline, source, model=model, out=out, on_progress=progress, **options
    )


def available_models(engine: InferenceEngine | None = None) -> list[ModelInfo]:
    """The installed models (with their warm flags) that this node can offer."""
    return (engine or InferenceEngine()).available()
