"""The one exception hierarchy of `inference/`: every failure a caller can act on is an
`InferenceError`, with a message that names the model or input at fault."""

from __future__ import annotations


class InferenceError(Exception):
    """Base of every error `inference/` raises on bad models, bad input or bad arguments."""


class ModelNotFound(InferenceError):
    """No model of that name is registered, or its file is missing on disk."""


class ModelUnreadable(InferenceError):
    """A model file cannot be read, fails its sha256 check, or is not a valid ONNX graph."""


class InvalidManifest(InferenceError):
    """A model manifest is malformed: missing fields, unknown pipeline kind, bad normalization."""


class ShapeMismatch(InferenceError):
    """The model's inputs or outputs do not fit the pipeline or the frames it is given."""


class ProviderUnavailable(InferenceError):
    """An execution provider was asked for explicitly but is not usable on this machine."""


class InputUnreadable(InferenceError):
    """The video input cannot be opened or decoded (missing, empty, corrupt, no video)."""


class UnknownPipeline(InferenceError):
    """The pipeline name is not one of the pipelines `inference/` provides."""


class OutputFailed(InferenceError):
    """Writing the pipeline's output (video or detection lines) failed; nothing partial is left."""


class InvalidOptions(InferenceError):
    """A pipeline's options are unknown or out of range (a style name, a colour, a size, a path)."""
