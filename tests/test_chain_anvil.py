"""The anvil launcher: it starts on a free port, answers JSON-RPC with the pre-funded dev
account, and `stop()` ends exactly the process it started; a missing binary says how to fix it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chain import anvil as anvil_module
from chain.anvil import Anvil, dev_key, find_binary
from chain.client import Chain
from chain.errors import ChainError
from events.crypto import LocalKeySigner


def test_anvil_starts_answers_and_stops_by_pid(tmp_path: Path) -> None:
    find_binary()  # fails loudly: `make test` installs anvil (make testnet-deps)
    log_file = tmp_path / "anvil.log"
    node = Anvil.start(block_time=None, log_file=log_file)
    try:
        chain = Chain.rpc(node.url, node.dev_key)
        assert chain.chain_id == 31337
        assert chain.balance(LocalKeySigner(dev_key(0)).address) > 10**21  # pre-funded
        chain.mine(5)
        assert chain.block_number() == 5
    finally:
        node.stop()
    assert node.process.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.kill(node.pid, 0)
    with pytest.raises(ChainError, match="cannot reach the chain"):
        Chain.rpc(node.url, node.dev_key)


def test_a_missing_binary_names_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CASTNET_ANVIL", str(tmp_path / "nothing"))
    monkeypatch.setattr(anvil_module, "LOCAL_BINARY", tmp_path / "nothing-either")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ChainError, match="make testnet-deps"):
        Anvil.start()
