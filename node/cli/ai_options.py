"""The style/matte option flags (`--style`, `--blend`, `--background`, `--infer-size`, and
`--style-image` where the model runs on this machine) shared by `castnet inference run`,
`castnet ai` and `castnet live`, and the options mapping they give (checked later by
inference.options, where the pipeline is known)."""

from __future__ import annotations

import argparse
from typing import Any

from node.gateway.ai_jobs import parse_blend

FLAGS = ("style", "style_image", "background", "infer_size", "blend")


def add_option_flags(parser: argparse.ArgumentParser, *, local: bool) -> None:
    """The option flags in a group of `parser`; `local`: the model runs on this machine, so a
    picture may be the style or the background (never sent to a peer)."""
    group = parser.add_argument_group("style and matte options")
    group.add_argument("--style", help="style: one of the 26 named styles (see docs/ai.md)")
    group.add_argument("--blend", help="style: a blend of named styles, e.g. mosaic=0.7,starry=0.3")
    if local:
        group.add_argument("--style-image", help="style: any picture as the style")
    background = "'#rrggbb', 'blur' or a picture" if local else "'#rrggbb' or 'blur'"
    group.add_argument("--background", help=f"matte: {background} (default #00ff00)")
    group.add_argument(
        "--infer-size", help="style/matte: infer at WxH (e.g. 320x180) and scale back up"
    )


def options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The options the flags give (ValueError, naming the flag, for a blend that does not
    parse)."""
    options: dict[str, Any] = {}
    for flag in FLAGS:
        value = getattr(args, flag, None)
        if value is not None:
            options[flag] = value
    if "blend" in options:
        try:
            options["blend"] = parse_blend(options["blend"])
        except ValueError as exc:
            raise ValueError(f"--{exc}") from None
    return options
