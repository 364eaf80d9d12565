"""DESIGN.md's layering, enforced: pure packages do no I/O, compute libraries know no network."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IO_MODULES = {"trio", "socket", "sqlite3", "web3", "av", "onnxruntime", "libp2p", "requests",
              "httpx", "os", "io", "pathlib", "subprocess", "threading", "time", "asyncio",
              "shutil", "tempfile", "urllib", "http", "random"}  # fmt: skip
LAYERS = ["events", "storage", "payments", "chain", "media", "inference", "p2p", "node"]
# what each package may import from the project (besides itself)
ALLOWED = {
    "events": set(),
    "payments": {"events"},
    "media": set(),
    "inference": {"media"},
    "storage": {"events"},
    "chain": {"events", "payments"},
    "p2p": {"events", "storage"},
    "node": set(LAYERS),
}


def _imports(package: str) -> list[tuple[Path, str]]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [(path, alias.name.split(".")[0]) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append((path, node.module.split(".")[0]))
    return found


@pytest.mark.parametrize("package", ["events", "payments"])
def test_pure_packages_do_no_io(package: str) -> None:
    bad = [f"{p.relative_to(ROOT)} imports {m}" for p, m in _imports(package) if m in IO_MODULES]
    assert not bad, bad


@pytest.mark.parametrize("package", LAYERS)
def test_packages_import_only_layers_below(package: str) -> None:
    project = set(LAYERS)
    bad = [
        f"{p.relative_to(ROOT)} imports {m}"
        for p, m in _imports(package)
        if m in project and m != package and m not in ALLOWED[package]
    ]
    assert not bad, bad


def test_pure_packages_have_no_async_code() -> None:
    for package in ("events", "payments"):
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            assert not any(isinstance(n, ast.AsyncFunctionDef) for n in ast.walk(tree)), path
