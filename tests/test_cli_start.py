"""The CLI starts without the heavy libraries: `castnet --help`, `log show` and `audit` import
neither libp2p, web3, PyAV nor onnxruntime (checked in a fresh interpreter's `sys.modules`), and
every command still parses with the module that registers it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from node.cli.commands import COMMANDS, module_of
from node.cli.main import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("libp2p", "web3", "av", "onnxruntime", "trio", "eth_account", "numpy")
PROBE = """
import contextlib, io, json, sys
from node.cli.main import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        code = main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
print(json.dumps({"code": code, "out": out.getvalue(),
                  "loaded": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def _probe(*argv: str) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=True)  # fmt: skip
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def small_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("start") / "small.castlog"
    assert main(["log", "synth", "-o", str(path), "--events", "40", "--seed", "5"]) == 0
    return path


def test_help_lists_every_command_without_heavy_imports() -> None:
    result = _probe("--help")
    assert result["code"] == 0
    for command in COMMANDS:
        assert f"    {command} " in str(result["out"]), command
    loaded = set(result["loaded"])  # type: ignore[arg-type]
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


@pytest.mark.parametrize(
    ("action", "shows"), [(("log", "show"), " JobPosted "), (("audit",), "clean: every signature")]
)
def test_log_show_and_audit_without_heavy_imports(
    small_log: Path, action: tuple[str, ...], shows: str
) -> None:
    result = _probe(*action, str(small_log))
    assert result["code"] == 0
    assert shows in str(result["out"])
    loaded = set(result["loaded"])  # type: ignore[arg-type]
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_each_module_registers_exactly_its_commands() -> None:
    full = build_parser(every=True)
    sub = next(a for a in full._actions if a.dest == "command")
    assert list(sub.choices) == list(COMMANDS)  # type: ignore[arg-type]
    for command in COMMANDS:
        parser = build_parser([command])
        chosen = next(a for a in parser._actions if a.dest == "command")
        # the chosen command's parser is the module's own (it has -h), the others are stand-ins
        own = {n for n, p in chosen.choices.items() if p.add_help}  # type: ignore[union-attr]
        assert own == {c for c in COMMANDS if module_of(c) == module_of(command)}, command


def test_a_command_word_after_options_is_found(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["-v", "audit", "--help"])
    assert exc.value.code == 0
    assert "--rpc URL" in capsys.readouterr().out


def test_an_unknown_command_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["transcode"])
    assert exc.value.code == 2
    assert "invalid choice: 'transcode'" in capsys.readouterr().err
