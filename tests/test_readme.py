"""The README's command blocks run as written. A block marked `<!-- runnable -->` on the line before
its ```sh fence runs in a fresh folder with bash (`set -euo pipefail`), `castnet` from this checkout
on the PATH, and a time limit (`<!-- runnable timeout=120 -->`); it passes when every command in it
exits 0. Blocks that are not marked say why in the README (a command that runs the whole suite, say)
or are covered by a named test; `test_every_command_block_is_runnable_or_explained` keeps that
honest."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(
    r"(?P<mark><!-- (?P<kind>runnable|not-runnable)(?P<opts>[^>]*)-->\n)?```sh\n(?P<body>.*?)```",
    re.S,
)


def _blocks() -> list[tuple[str, str, str, str]]:
    """(id, kind, options, body) of every sh block; the id is the heading above it and a number."""
    text = README.read_text()
    found = []
    for n, match in enumerate(FENCE.finditer(text)):
        heading = re.findall(r"^#+ (.+)$", text[: match.start()], re.M)
        where = re.sub(r"\W+", "-", heading[-1].lower()).strip("-") if heading else "top"
        found.append((f"{n}-{where}", match["kind"] or "", match["opts"] or "", match["body"]))
    return found


BLOCKS = _blocks()
RUNNABLE = [b for b in BLOCKS if b[1] == "runnable"]


def test_every_command_block_is_runnable_or_explained() -> None:
    unmarked = [block_id for block_id, kind, _, _ in BLOCKS if not kind]
    assert not unmarked, f"README blocks neither runnable nor explained: {unmarked}"
    for block_id, kind, opts, _ in BLOCKS:
        if kind == "not-runnable":
            assert opts.strip(), f"{block_id}: say why it is not run here"
    assert len(RUNNABLE) >= len(BLOCKS) // 2, "most blocks must run as written"


@pytest.mark.parametrize(
    ("block_id", "kind", "opts", "body"), RUNNABLE, ids=[b[0] for b in RUNNABLE]
)
def test_readme_block_runs_as_written(
    tmp_path: Path, block_id: str, kind: str, opts: str, body: str
) -> None:
    timeout = int(re.search(r"timeout=(\d+)", opts)[1]) if "timeout=" in opts else 60
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
        "CASTNET_PASSWORD": "readme-password",
        "CASTNET_REPO": str(ROOT),
    }
    script = "set -euo pipefail\n" + body
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, (
        f"README block {block_id} failed ({done.returncode}):\n{body}\n"
        f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
    )
