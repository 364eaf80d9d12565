"""The recipient (an orchestrator): quotes ticket params to senders and accepts their tickets,
returning the credit each is worth and queueing the winners for redemption."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from events.crypto import ADDRESS_LEN, ZERO_ADDRESS
from payments.errors import InvalidParams, UnknownRandHash
from payments.funds import available_funds, check_covers, check_not_unlocking, max_float
from payments.interfaces import ChainView, SenderFunds
from payments.nonces import DEFAULT_MAX_NONCES_PER_RAND, SeenNonces
from payments.params import (
    ParamsPolicy,
    TicketParams,
    face_value_for,
    recipient_rand,
    win_prob_for,
)
from payments.queue import RedemptionQueue
from payments.ticket import SignedTicket, WinningTicket, is_winning, rand_hash
from payments.validator import check_rand, validate_ticket


@dataclass(frozen=True, slots=True)
class Receipt:
    """An accepted ticket: its hash, who paid, the credit it is worth (its EV, wei), the price it
    was quoted at, and the winning ticket when it won (already queued if a queue is attached)."""

    ticket_hash: bytes
    sender: bytes
    credit: Fraction
    price_per_pixel: Fraction
    winning: WinningTicket | None


class Recipient:
    """Ticket params and ticket acceptance for one recipient address.

    `secret` keys the HMAC that makes params self-authenticating, so no issued params are
    stored; only the nonces of live params are (bounded, see `SeenNonces`)."""

    def __init__(
        self,
        address: bytes,
        secret: bytes,
        policy: ParamsPolicy,
        funds: SenderFunds,
        queue: RedemptionQueue | None = None,
        max_nonces_per_rand: int = DEFAULT_MAX_NONCES_PER_RAND,
    ) -> None:
        if len(secret) < 32:
            raise ValueError("a recipient secret needs at least 32 bytes")
        self.address = address
        self._secret = secret
        self._policy = policy
        self._funds = funds
        self._queue = queue
        self._nonces = SeenNonces(max_nonces_per_rand)
        self._pruned_at = -1

    def ticket_params(
        self, sender: bytes, price_per_pixel: Fraction, seed: bytes, now: ChainView
    ) -> TicketParams:
        """Fresh params for `sender` at `price_per_pixel` wei; `seed` must be 32 random bytes
        from the caller (payments reads no entropy). Free work (price 0) gets zero-value params."""
        if len(sender) != ADDRESS_LEN or sender == ZERO_ADDRESS:
            raise InvalidParams("ticket params need a non-zero 20-byte sender address")
        if price_per_pixel < 0:
            raise InvalidParams(f"price per pixel must not be negative, got {price_per_pixel}")
        face_value = win_prob = 0
        if price_per_pixel > 0:
            info = self._funds.sender_info(sender, self.address)
            check_not_unlocking(sender, info, now.round)
            float_ = max_float(info, now.pool_size, self._pending(sender))
            face_value = face_value_for(self._policy, sender, now.gas_price, float_)
            win_prob = win_prob_for(self._policy.ev, face_value)
        expiration_block = now.block + self._policy.validity_blocks
        rand = recipient_rand(
            self._secret,
            seed,
            sender,
            face_value,
            win_prob,
            expiration_block,
            price_per_pixel,
            now.round,
            now.round_block_hash,
        )
        return TicketParams(
            recipient=self.address,
            face_value=face_value,
            win_prob=win_prob,
            recipient_rand_hash=rand_hash(rand),
            seed=seed,
            expiration_block=expiration_block,
            price_per_pixel=price_per_pixel,
            creation_round=now.round,
            creation_round_block_hash=now.round_block_hash,
        )

    def receive(self, signed: SignedTicket, now: ChainView) -> Receipt:
        """Accept one ticket or raise the PaymentError naming why not (see `validate_ticket`,
        then: replayed nonce, sender unlocking or short of funds)."""
        if now.block > self._pruned_at:
            self._nonces.prune(now.block)
            self._pruned_at = now.block
        ticket = signed.ticket
        ticket_hash = validate_ticket(self.address, signed, now.block)
        try:
            rand = recipient_rand(
                self._secret,
                signed.seed,
                ticket.sender,
                ticket.face_value,
                ticket.win_prob,
                signed.expiration_block,
                signed.price_per_pixel,
                ticket.creation_round,
                ticket.creation_round_block_hash,
            )
        except InvalidParams as exc:
            raise UnknownRandHash(f"ticket params cannot be ours: {exc}") from None
        check_rand(ticket, rand)
        self._nonces.check(ticket.recipient_rand_hash, ticket.sender, ticket.sender_nonce)
        if ticket.face_value > 0:
            info = self._funds.sender_info(ticket.sender, self.address)
            check_not_unlocking(ticket.sender, info, now.round)
            funds = available_funds(info, now.pool_size, self._pending(ticket.sender))
            check_covers(ticket.sender, ticket.face_value, funds, "deposit plus reserve share")
        winning = None
        if is_winning(signed.sig, rand, ticket.win_prob):
            winning = WinningTicket(ticket, signed.sig, rand, signed.expiration_block)
            if self._queue is not None:
                self._queue.add(winning)  # durable before the nonce is spent
        self._nonces.add(ticket.recipient_rand_hash, ticket.sender_nonce, signed.expiration_block)
        return Receipt(ticket_hash, ticket.sender, ticket.ev(), signed.price_per_pixel, winning)

    def _pending(self, sender: bytes) -> int:
        return 0 if self._queue is None else self._queue.pending_face_value(sender)
