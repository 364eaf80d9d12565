"""Shared fixtures: deterministic keys and authors, the chain backends, and a way to deploy
contracts once per module and give each test the chain as it was right after the deployment."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from chain.anvil import Anvil, find_binary
from chain.client import Chain
from events.author import Author
from events.crypto import LocalKeySigner, keccak256


def key(n: int) -> bytes:
    return keccak256(b"castnet-test-key/%d" % n)


@pytest.fixture
def authors() -> list[Author]:
    return [Author(LocalKeySigner(key(i))) for i in range(4)]


@pytest.fixture(scope="session")
def anvil() -> Iterator[Anvil]:
    """One anvil process for the session (`make test` installs anvil first)."""
    find_binary()  # fails loudly: `make test` installs anvil (make testnet-deps)
    with Anvil.start() as node:
        yield node


def _chain_on(request: pytest.FixtureRequest) -> Chain:
    if request.param == "embedded":
        return Chain.embedded()
    node = request.getfixturevalue("anvil")
    return Chain.rpc(node.url, node.dev_key)


@pytest.fixture(params=["embedded", "anvil"])
def evm(request: pytest.FixtureRequest) -> Chain:
    """A chain client on each backend: the in-process EVM and anvil over JSON-RPC. Tests on
    anvil share its state, so each deploys its own contracts."""
    return _chain_on(request)


@pytest.fixture(scope="module", params=["embedded", "anvil"])
def module_evm(request: pytest.FixtureRequest) -> Chain:
    """`evm` for a module that deploys its contracts once: each test enters `reverted(chain)`."""
    return _chain_on(request)


@contextmanager
def reverted(chain: Chain) -> Iterator[Chain]:
    """The chain as it is now, for the block; afterwards every block and transaction the block
    made is undone (eth-tester's snapshots, anvil's evm_snapshot / evm_revert)."""
    if chain.tester is not None:
        mark = chain.tester.take_snapshot()
    else:
        mark = chain.w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    try:
        yield chain
    finally:
        with chain.lock:
            if chain.tester is not None:
                chain.tester.revert_to_snapshot(mark)
            else:
                answer = chain.w3.provider.make_request("evm_revert", [mark])  # type: ignore[arg-type]
                assert answer.get("result") is True, answer
            chain._nonces.clear()  # the chain's nonces went back with it
