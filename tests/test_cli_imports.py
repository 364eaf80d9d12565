"""A command's parser and its configuration load without the node's heavy stack, so a typo in a
flag or a config file is reported at once (it took 4-6 s when reading a config imported libp2p,
onnx and onnxruntime)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("libp2p", "onnx", "onnxruntime", "node.service", "node.gateway.role", "p2p.node")


def loaded_after(statement: str) -> list[str]:
    """The HEAVY modules a fresh interpreter holds after `statement`."""
    probe = f"import sys; {statement}; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=True)  # fmt: skip
    return done.stdout.split()


def test_reading_a_config_loads_no_network_or_model_code() -> None:
    assert loaded_after("import node.config") == []


def test_the_run_and_node_commands_load_their_stack_only_to_run() -> None:
    assert loaded_after("import node.cli.run, node.cli.node") == []
    # and the stack is there once a command runs it
    assert "libp2p" in loaded_after("from p2p.host import quiet_libp2p")
