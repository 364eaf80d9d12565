"""Video effects: the `style` and `matte` pipelines' per-frame work, built from a loaded model and
parsed options. Each keeps the input's size: it infers at `infer_size` (or the input's size) and
scales the result back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from inference.errors import UnknownPipeline
from inference.matte import Matte, matte_effect
from inference.options import infer_size, parse_options
from inference.sessions import LoadedModel
from inference.style import ArbitraryStyle, StyleNet, style_effect

EFFECTS = ("style", "matte")
Effect = StyleNet | ArbitraryStyle | Matte


def video_effect(
    pipeline: str,
    model: LoadedModel,
    width: int,
    height: int,
    options: Mapping[str, Any] | None = None,
) -> Effect:
    """The effect of `pipeline` for frames of width x height; raises on bad options or a model
    whose inputs do not fit."""
    parsed = parse_options(pipeline, options)
    work = infer_size(parsed)
    if pipeline == "style":
        return style_effect(model, width, height, parsed, work)
    if pipeline == "matte":
        return matte_effect(model, width, height, parsed, work)
    raise UnknownPipeline(f"{pipeline!r} is not a video effect; effects: {', '.join(EFFECTS)}")
