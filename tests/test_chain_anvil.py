"""The anvil launcher: it starts on a free port, answers JSON-RPC with the pre-funded dev
account, and `stop()` ends exactly the process it started; a missing binary says how to fix it."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from chain import anvil as anvil_module
from chain.anvil import Anvil, dev_key, ephemeral_low, find_binary, free_port
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


def test_free_ports_come_from_below_the_ephemeral_range_and_are_free() -> None:
    """Outgoing connections take their local ports from the kernel's ephemeral range, so a port
    picked there may be gone before its listener binds it; `free_port` picks below it."""
    low = ephemeral_low()
    ports = [free_port() for _ in range(20)]
    assert all(1024 <= port < low for port in ports), ports
    assert len(set(ports)) > 15  # picked at random, not one port over and over
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))  # nothing listens there
