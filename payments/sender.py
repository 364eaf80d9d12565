"""The sender (a gateway): keeps one session per set of ticket params and signs tickets against
it with strictly increasing nonces, refusing params it should not pay under."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from events.crypto import ZERO_ADDRESS, Signer
from payments.errors import InvalidParams, ParamsExpired, UnknownSession, format_wei
from payments.funds import check_covers, check_not_unlocking
from payments.interfaces import ChainView, SenderFunds
from payments.params import TicketParams
from payments.ticket import UINT256_LIMIT, SignedTicket, Ticket, sign_ticket


@dataclass(frozen=True, slots=True)
class SenderConfig:
    """A sender's limits: the most EV per ticket and per batch it will pay (wei), the share of its
    deposit one face value may take (`deposit / deposit_multiplier`), and how many blocks before
    expiry it stops using params."""

    max_ev: Fraction
    max_total_ev: Fraction
    deposit_multiplier: int = 1
    expiry_buffer_blocks: int = 1


class _Session:
    __slots__ = ("nonce", "params")

    def __init__(self, params: TicketParams, nonce: int) -> None:
        self.params = params
        self.nonce = nonce


class Sender:
    """Creates signed tickets for the sessions it holds; a session's id is its params'
    recipient_rand_hash (one nonce sequence per rand, as the recipient tracks them)."""

    def __init__(self, signer: Signer, config: SenderConfig, funds: SenderFunds) -> None:
        self._signer = signer
        self._config = config
        self._funds = funds
        self._sessions: dict[bytes, _Session] = {}

    @property
    def address(self) -> bytes:
        return self._signer.address

    def start_session(self, params: TicketParams, nonce: int = 0) -> bytes:
        """Begin (or restart) paying under `params`; the first ticket gets `nonce + 1`."""
        self._sessions[params.recipient_rand_hash] = _Session(params, nonce)
        return params.recipient_rand_hash

    def end_session(self, session_id: bytes) -> None:
        self._sessions.pop(session_id, None)

    def prune(self, block: int) -> int:
        """Drop sessions whose params expired at or before `block`; return how many."""
        dead = [k for k, s in self._sessions.items() if s.params.expiration_block <= block]
        for key in dead:
            del self._sessions[key]
        return len(dead)

    def nonce(self, session_id: bytes) -> int:
        """The nonce of the last ticket created in the session (0 before the first)."""
        return self._session(session_id).nonce

    def ev(self, session_id: bytes) -> Fraction:
        return self._session(session_id).params.ev()

    def validate_params(self, params: TicketParams, now: ChainView, count: int = 1) -> None:
        """Raise unless this sender may send `count` tickets under `params` at `now`."""
        if params.recipient == ZERO_ADDRESS:
            raise InvalidParams("ticket params name the zero address as recipient")
        if params.expiration_block - now.block <= self._config.expiry_buffer_blocks:
            raise ParamsExpired(
                f"ticket params expire at block {params.expiration_block}, too close to the "
                f"current block {now.block} (buffer {self._config.expiry_buffer_blocks})"
            )
        ev = params.ev()
        if ev <= 0:
            return  # free work: nothing at stake
        if not 0 <= params.face_value < UINT256_LIMIT or not 0 < params.win_prob < UINT256_LIMIT:
            raise InvalidParams("ticket params face value and win_prob must be uint256")
        if ev > self._config.max_ev:
            raise InvalidParams(
                f"ticket EV {format_wei(ev)} wei exceeds the max EV "
                f"{format_wei(self._config.max_ev)} wei"
            )
        if ev * count > self._config.max_total_ev:
            raise InvalidParams(
                f"{count} tickets of EV {format_wei(ev)} wei exceed the max total EV "
                f"{format_wei(self._config.max_total_ev)} wei"
            )
        info = self._funds.sender_info(self.address, params.recipient)
        check_not_unlocking(self.address, info, now.round)
        limit = info.deposit // self._config.deposit_multiplier
        check_covers(self.address, params.face_value, limit, "deposit share")

    def create_tickets(self, session_id: bytes, count: int, now: ChainView) -> list[SignedTicket]:
        """`count` tickets signed under the session's params, nonces strictly increasing."""
        session = self._session(session_id)
        params = session.params
        self.validate_params(params, now, count)
        tickets = []
        for _ in range(count):
            session.nonce += 1
            ticket = Ticket(
                recipient=params.recipient,
                sender=self.address,
                face_value=params.face_value,
                win_prob=params.win_prob,
                sender_nonce=session.nonce,
                recipient_rand_hash=params.recipient_rand_hash,
                creation_round=params.creation_round,
                creation_round_block_hash=params.creation_round_block_hash,
            )
            sig = sign_ticket(self._signer, ticket.hash())
            tickets.append(
                SignedTicket(
                    ticket, sig, params.seed, params.expiration_block, params.price_per_pixel
                )
            )
        return tickets

    def _session(self, session_id: bytes) -> _Session:
        try:
            return self._sessions[session_id]
        except KeyError:
            raise UnknownSession(f"no sender session {session_id.hex()[:16]}") from None
