"""Compile the Vyper contracts in chain/contracts into chain/artifacts/<Name>.json (ABI + bytecode).

    .venv/bin/python -m chain.compile          # rewrite the committed artifacts
The artifacts are committed; tests/test_chain_contracts.py recompiles and compares."""

from __future__ import annotations

import json
import sys
from pathlib import Path

CONTRACTS = Path(__file__).resolve().parent / "contracts"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
NAMES = ("Rounds", "TicketBroker", "StakeToken", "Bonding")


def compile_contract(name: str) -> dict[str, object]:
    # the compiler is imported here: nodes only load the committed artifacts
    import vyper
    from vyper.compiler import compile_code

    source = (CONTRACTS / f"{name}.vy").read_text()
    out = compile_code(source, output_formats=["abi", "bytecode"])
    return {"contract": name, "compiler": f"vyper {vyper.__version__}", "abi": out["abi"],
            "bytecode": out["bytecode"]}  # fmt: skip


def artifact_text(name: str) -> str:
    return json.dumps(compile_contract(name), indent=1, sort_keys=True) + "\n"


def load_artifact(name: str) -> dict[str, object]:
    return json.loads((ARTIFACTS / f"{name}.json").read_text())


def main() -> int:
    ARTIFACTS.mkdir(exist_ok=True)
    for name in NAMES:
        (ARTIFACTS / f"{name}.json").write_text(artifact_text(name))
        print(f"wrote {ARTIFACTS / name}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
