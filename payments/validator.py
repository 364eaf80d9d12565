"""Stateless checks of one received ticket, in the order that names the real fault: addressed to
us, from a real sender, params not expired, signed by the sender, params issued by us."""

from __future__ import annotations

from events.crypto import ZERO_ADDRESS, to_checksum
from payments.errors import InvalidSender, ParamsExpired, UnknownRandHash, WrongRecipient
from payments.ticket import SignedTicket, Ticket, rand_hash, verify_ticket_signature


def validate_ticket(recipient: bytes, signed: SignedTicket, block: int) -> bytes:
    """Raise the specific PaymentError for the first check `signed` fails; return its hash.

    The signature is checked before the rand (`check_rand`) so that a tampered ticket is
    reported as tampered, not as someone else's params."""
    ticket = signed.ticket
    if ticket.recipient != recipient:
        raise WrongRecipient(
            f"ticket pays {to_checksum(ticket.recipient)}, not us ({to_checksum(recipient)})"
        )
    if ticket.sender == ZERO_ADDRESS:
        raise InvalidSender("ticket sender is the zero address")
    if signed.expiration_block <= block:
        raise ParamsExpired(
            f"ticket params expired at block {signed.expiration_block}; current block is {block}"
        )
    ticket_hash = ticket.hash()
    verify_ticket_signature(ticket_hash, signed.sig, ticket.sender)
    return ticket_hash


def check_rand(ticket: Ticket, recipient_rand: int) -> None:
    """Raise UnknownRandHash unless `recipient_rand` (re-derived by the recipient from its secret
    and the ticket's params) hashes to the ticket's recipient_rand_hash."""
    if rand_hash(recipient_rand) != ticket.recipient_rand_hash:
        raise UnknownRandHash(
            f"recipient_rand_hash {ticket.recipient_rand_hash.hex()} was not issued by us for "
            f"these params (sender {to_checksum(ticket.sender)})"
        )
