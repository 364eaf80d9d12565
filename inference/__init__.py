"""castnet inference layer (see DESIGN.md): ONNX models on decoded video frames.

A compute library: it may use `media/` to decode and encode, and knows nothing of events, peers or
money. Start with `InferenceEngine` (registry, execution provider, warm-model cache) and its
`run_pipeline`.
"""

from inference.detections import Box, FrameDetections
from inference.engine import (
    InferenceConfig,
    InferenceEngine,
    ModelInfo,
    available_models,
    run_pipeline,
)
from inference.errors import InferenceError
from inference.pipelines import PIPELINES, PipelineResult

__all__ = [
    "PIPELINES",
    "Box",
    "FrameDetections",
    "InferenceConfig",
    "InferenceEngine",
    "InferenceError",
    "ModelInfo",
    "PipelineResult",
    "available_models",
    "run_pipeline",
]
