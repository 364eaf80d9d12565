"""Pipeline options: validated and normalised before any model runs.

Options travel over the wire with an AI job, so every normalised value is plain JSON, except the
local image paths (`style_image`, a `background` path) that only a local run may use. Parsing a
parsed mapping again gives it back unchanged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from inference.errors import InvalidOptions, UnknownPipeline
from inference.manifest import STYLE_NAMES

OPTION_PIPELINES = ("style", "matte")
PLAIN_PIPELINES = ("detect-faces", "detect-text", "filter", "upscale")
DEFAULT_STYLE = STYLE_NAMES[0]
DEFAULT_BACKGROUND = "#00ff00"
BLUR = "blur"
MIN_SIDE, MAX_SIDE = 32, 4096  # bounds of an inference size
MAX_PATH = 4096

_KEYS = {
    "style": ("infer_size", "style", "blend", "style_image"),
    "matte": ("infer_size", "background"),
}
_SIZE = re.compile(r"^\s*(\d{1,5})\s*[xX]\s*(\d{1,5})\s*$")
_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")


def parse_options(
    pipeline: str, raw: Mapping[str, Any] | None, *, allow_paths: bool = True
) -> dict[str, Any]:
    """The options of `pipeline`, checked and normalised (defaults filled in).

    With `allow_paths=False` (options that came from a peer), local image paths are refused.
    """
    if pipeline not in OPTION_PIPELINES and pipeline not in PLAIN_PIPELINES:
        raise UnknownPipeline(f"unknown pipeline {pipeline!r}")
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise InvalidOptions(f"{pipeline} options must be a mapping, not {type(raw).__name__}")
    if pipeline in PLAIN_PIPELINES:
        if raw:
            raise InvalidOptions(f"{pipeline} takes no options (got {', '.join(map(str, raw))})")
        return {}
    known = _KEYS[pipeline]
    unknown = [str(key) for key in raw if key not in known]
    if unknown:
        raise InvalidOptions(
            f"unknown {pipeline} option {unknown[0]!r}; {pipeline} takes {', '.join(known)}"
        )
    options: dict[str, Any] = {}
    if raw.get("infer_size") is not None:
        options["infer_size"] = _size_text(raw["infer_size"])
    if pipeline == "style":
        options.update(_style(raw, allow_paths))
    else:
        options["background"] = _background(raw.get("background", DEFAULT_BACKGROUND), allow_paths)
    return options


def infer_size(options: Mapping[str, Any]) -> tuple[int, int] | None:
    """(width, height) of a parsed `infer_size`, or None to infer at the input's size."""
    text = options.get("infer_size")
    if text is None:
        return None
    width, height = (int(v) for v in str(text).split("x"))
    return width, height


def style_weights_of(options: Mapping[str, Any]) -> dict[str, float]:
    """{style name: weight} (weights sum to 1) of parsed options that name styles."""
    if "blend" in options:
        return dict(options["blend"])
    return {options.get("style", DEFAULT_STYLE): 1.0}


def colour_rgb(text: str) -> tuple[int, int, int]:
    """(r, g, b) of a parsed "#rrggbb" colour."""
    return int(text[1:3], 16), int(text[3:5], 16), int(text[5:7], 16)


def _size_text(value: Any) -> str:
    match = _SIZE.match(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidOptions(f"infer_size must be WIDTHxHEIGHT such as 320x180, not {value!r}")
    width, height = int(match[1]), int(match[2])
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise InvalidOptions(
            f"infer_size {width}x{height} is out of range: each side {MIN_SIDE} to {MAX_SIDE}"
        )
    return f"{width}x{height}"


def _style(raw: Mapping[str, Any], allow_paths: bool) -> dict[str, Any]:
    given = [key for key in ("style", "blend", "style_image") if raw.get(key) is not None]
    if len(given) > 1:
        raise InvalidOptions(f"give one of style, blend or style_image, not {' and '.join(given)}")
    if not given or given[0] == "style":
        return {"style": _style_name(raw.get("style", DEFAULT_STYLE))}
    if given[0] == "blend":
        return {"blend": _blend(raw["blend"])}
    return {"style_image": _local_image("style_image", raw["style_image"], allow_paths)}


def _style_name(value: Any) -> str:
    if not isinstance(value, str) or value.strip().lower() not in STYLE_NAMES:
        raise InvalidOptions(f"unknown style {value!r}; styles: {', '.join(STYLE_NAMES)}")
    return value.strip().lower()


def _blend(value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping) or not value:
        raise InvalidOptions("blend must map style names to weights, e.g. {'pastel': 0.5, ...}")
    weights: dict[str, float] = {}
    for name, weight in value.items():
        style = _style_name(name)
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise InvalidOptions(f"blend weight of {style!r} must be a number, not {weight!r}")
        if not math.isfinite(weight) or weight < 0:
            raise InvalidOptions(f"blend weight of {style!r} must be finite and >= 0, not {weight}")
        weights[style] = weights.get(style, 0.0) + float(weight)
    total = sum(weights.values())
    if total <= 0:
        raise InvalidOptions("blend weights must not all be 0")
    return {name: weight / total for name, weight in sorted(weights.items()) if weight > 0}


def _background(value: Any, allow_paths: bool) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidOptions(
            f"background must be '#rrggbb', 'blur' or an image path, not {value!r}"
        )
    text = value.strip()
    if _COLOUR.match(text):
        return text.lower()
    if text.lower() == BLUR:
        return BLUR
    if text.startswith("#"):
        raise InvalidOptions(f"background colour must be '#rrggbb' (six hex digits), not {text!r}")
    return _local_image("background", text, allow_paths)


def _local_image(key: str, value: Any, allow_paths: bool) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_PATH:
        raise InvalidOptions(f"{key} must be a local image path, not {value!r}")
    if not allow_paths:
        raise InvalidOptions(f"{key} names a local image; images are not accepted from peers")
    path = Path(value).expanduser()
    if not path.is_file():
        raise InvalidOptions(f"{key} image {value} does not exist")
    return str(path)
