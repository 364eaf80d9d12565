"""Shared fixtures: deterministic keys and authors."""

from __future__ import annotations

import pytest

from events.author import Author
from events.crypto import LocalKeySigner, keccak256


def key(n: int) -> bytes:
    return keccak256(b"castnet-test-key/%d" % n)


@pytest.fixture
def authors() -> list[Author]:
    return [Author(LocalKeySigner(key(i))) for i in range(4)]
