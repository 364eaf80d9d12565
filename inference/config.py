"""How inference runs on this node (`[orchestrator.inference]`), in a module that loads no model
code: reading a node's configuration must not import onnx and onnxruntime."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_BUDGET = 2 << 30  # bytes of loaded models kept warm
DEFAULT_BATCH = 4  # frames per model run where the model allows


@dataclass(frozen=True, slots=True)
class InferenceConfig:
    """How inference runs here: provider preference, threads, memory budget, models, encoding."""

    provider: str = "auto"  # auto, cpu, cuda, tensorrt
    threads: int = 0  # intra-op threads per session; 0: one per physical core
    device_id: int = 0
    memory_budget: int = DEFAULT_BUDGET  # bytes of loaded models kept warm (estimated)
    models_dir: Path | None = None  # extra *.toml manifests
    batch: int = DEFAULT_BATCH  # frames per model run where the model allows
    preset: str = "veryfast"  # x264 preset for filter/upscale output
    encoder: str = "software"
