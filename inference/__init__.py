"""castnet inference layer (see DESIGN.md): ONNX models on decoded video frames.

A compute library: it may use `media/` to decode and encode, and knows nothing of events, peers or
money. Start with `InferenceEngine` (registry, execution provider, warm-model cache) and its
`run_pipeline`.

The names below are loaded on first use: a node that only reads `inference.manifest` or
`inference.options` (every node, through its protocol) does not import onnxruntime, scipy or PyAV.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "Box": "inference.detections",
    "FrameDetections": "inference.detections",
    "InferenceConfig": "inference.engine",
    "InferenceEngine": "inference.engine",
    "ModelInfo": "inference.engine",
    "available_models": "inference.engine",
    "run_pipeline": "inference.engine",
    "InferenceError": "inference.errors",
    "PIPELINES": "inference.pipelines",
    "PipelineResult": "inference.pipelines",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'inference' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
