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


# Inside node/, the same rule one level down: the roles stand on the shared node core, the
# composition
# (config, service, api, local networks) on the roles, and only the CLI sees everything.
CORE = {"amounts", "chain_ledger", "jsonview", "keystore", "ledger", "progress", "protocol", "view",
        "writer", "audit", "errors"}  # fmt: skip
NODE_ALLOWED = {
    "core": CORE,
    "gateway": CORE | {"gateway"},
    "orchestrator": CORE | {"orchestrator"},
    "config": CORE | {"gateway", "orchestrator"},
    "api": CORE | {"api", "config", "gateway"},
    "service": CORE | {"api", "config", "gateway", "orchestrator"},
    "local": CORE | {"local", "gateway", "orchestrator"},
}


# modules that a part was split into, by the part they belong to
SPLIT = {"config_api": "config", "config_values": "config"}


def _node_part(path: Path) -> str:
    rel = path.relative_to(ROOT / "node").with_suffix("")
    name = SPLIT.get(rel.parts[0], rel.parts[0])
    return "core" if name in CORE else name


def test_node_roles_import_only_what_sits_below_them() -> None:
    bad = []
    for path, module in _node_imports():
        part = _node_part(path)
        if part == "cli" or path.name == "__init__.py":
            continue
        if module not in NODE_ALLOWED[part] | {part}:
            bad.append(f"{path.relative_to(ROOT)} ({part}) imports node.{module}")
    assert not bad, bad


def test_only_the_cli_imports_the_cli() -> None:
    bad = [
        str(p.relative_to(ROOT))
        for p, m in _node_imports()
        if m == "cli" and _node_part(p) != "cli"
    ]
    assert not bad, bad


def _node_imports() -> list[tuple[Path, str]]:
    found = []
    for path in sorted((ROOT / "node").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            parts = [n.split(".")[1] for n in names if n.startswith("node.")]
            found += [(path, SPLIT.get(part, part)) for part in parts]
    return found
