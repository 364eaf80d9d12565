"""Shared fixtures: deterministic keys and authors."""

from __future__ import annotations

from collections.abc import Iterator

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


@pytest.fixture(params=["embedded", "anvil"])
def evm(request: pytest.FixtureRequest) -> Chain:
    """A chain client on each backend: the in-process EVM and anvil over JSON-RPC. Tests on
    anvil share its state, so each deploys its own contracts."""
    if request.param == "embedded":
        return Chain.embedded()
    node = request.getfixturevalue("anvil")
    return Chain.rpc(node.url, node.dev_key)
