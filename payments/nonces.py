"""Replay protection: the sender nonces seen for each recipient_rand_hash, kept only while its
params are live. Forgetting them afterwards is safe because expired params are refused anyway."""

from __future__ import annotations

from events.crypto import to_checksum
from payments.errors import TicketReplay, TooManyTickets

# go-livepeer's bound on nonces per recipient rand; the sender must fetch new params after that.
DEFAULT_MAX_NONCES_PER_RAND = 600


class SeenNonces:
    """Nonces per recipient_rand_hash, each set bounded and dropped at its expiration block."""

    __slots__ = ("_by_rand", "_max_per_rand")

    def __init__(self, max_per_rand: int = DEFAULT_MAX_NONCES_PER_RAND) -> None:
        self._max_per_rand = max_per_rand
        self._by_rand: dict[bytes, tuple[int, set[int]]] = {}

    def check(self, rand_hash: bytes, sender: bytes, nonce: int) -> None:
        """Raise TicketReplay if `nonce` was seen for `rand_hash`, TooManyTickets if it is full."""
        entry = self._by_rand.get(rand_hash)
        if entry is None:
            return
        seen = entry[1]
        if nonce in seen:
            raise TicketReplay(
                f"sender {to_checksum(sender)} already used nonce {nonce} with "
                f"recipient_rand_hash {rand_hash.hex()[:16]}"
            )
        if len(seen) >= self._max_per_rand:
            raise TooManyTickets(
                f"sender {to_checksum(sender)} used all {self._max_per_rand} nonces of "
                f"recipient_rand_hash {rand_hash.hex()[:16]}: fetch new ticket params"
            )

    def add(self, rand_hash: bytes, nonce: int, expiration_block: int) -> None:
        """Record `nonce` as used; call only after `check` passed."""
        entry = self._by_rand.get(rand_hash)
        if entry is None:
            self._by_rand[rand_hash] = (expiration_block, {nonce})
        else:
            entry[1].add(nonce)

    def prune(self, block: int) -> int:
        """Forget every rand whose params expired at or before `block`; return how many."""
        expired = [r for r, (expiry, _) in self._by_rand.items() if expiry <= block]
        for rand in expired:
            del self._by_rand[rand]
        return len(expired)

    def __len__(self) -> int:
        """How many recipient rand hashes are tracked."""
        return len(self._by_rand)
