"""Protocol logs as `ChainObserved` bodies: which contract events the node reports, and how.

Logs are routed by (contract address, topic 0) and decoded with the committed ABIs through web3's
`process_log`. Events without a report here (UnlockCancelled, ReserveClaimed, the token's
transfers, OrchestratorRegistered, WithdrawStake, ...) change no state the fold
keeps and are ignored; a watched contract absent from the addresses given is not watched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from web3 import Web3

from chain.compile import load_artifact
from chain.errors import ChainError
from events.kinds import CHAIN_ARGS, ChainObserved


class LogDecodeError(ChainError):
    """A log from a watched contract that its ABI cannot decode."""


def _address(value: str) -> bytes:
    return bytes.fromhex(value[2:])


def _sender_amount(args: Mapping[str, Any]) -> tuple[Any, ...]:
    return _address(args["sender"]), args["amount"]


@dataclass(frozen=True, slots=True)
class Report:
    """How one contract event becomes a ChainObserved body: its `what` and its args."""

    contract: str
    event: str
    what: str
    args: Callable[[Mapping[str, Any]], tuple[Any, ...]]


REPORTS: tuple[Report, ...] = (
    Report("Rounds", "NewRound", "round", lambda a: (a["round"],)),
    Report("TicketBroker", "DepositFunded", "deposit", lambda a: _sender_amount(a)),
    Report("TicketBroker", "ReserveFunded", "reserve", lambda a: _sender_amount(a)),
    Report("TicketBroker", "Unlock", "unlock",
           lambda a: (_address(a["sender"]), a["withdrawRound"])),
    Report("TicketBroker", "Withdrawal", "withdraw",
           lambda a: (_address(a["sender"]), a["deposit"], a["reserve"])),
    # what the broker paid, not the face value: the fold takes it from the sender's funds
    Report("TicketBroker", "WinningTicketRedeemed", "redemption",
           lambda a: (_address(a["sender"]), _address(a["recipient"]), a["paid"],
                      bytes(a["ticketHash"]))),
    Report("Bonding", "Bond", "bonded",
           lambda a: (_address(a["delegator"]), _address(a["orchestrator"]),
                      _address(a["oldOrchestrator"]), a["amount"], a["bonded"])),
    Report("Bonding", "Unbond", "unbonded",
           lambda a: (_address(a["delegator"]), _address(a["orchestrator"]), a["amount"],
                      a["bonded"])),
    Report("Bonding", "Rebond", "rebonded",
           lambda a: (_address(a["delegator"]), _address(a["orchestrator"]), a["amount"],
                      a["bonded"])),
    Report("Bonding", "Reward", "reward",
           lambda a: (_address(a["orchestrator"]), a["amount"])),
    Report("Bonding", "MinterParameters", "minter",
           lambda a: (a["inflation"], a["inflationChange"], a["targetBondingRate"],
                      a["roundLength"])),
    # withdrawing fees claims the earnings: the bond's baseline moves to the round's end
    Report("Bonding", "WithdrawFees", "fees_withdrawn",
           lambda a: (_address(a["delegator"]), a["amount"])),
    Report("Bonding", "EarningsFactor", "factor",
           lambda a: (_address(a["orchestrator"]), a["round"], a["rewardFactor"],
                      a["commission"])),
    Report("Bonding", "RoundRewards", "inflation",
           lambda a: (a["round"], a["inflation"], a["mintable"], a["activeStake"],
                      a["bondingRate"], a["totalSupply"])),
)  # fmt: skip
WATCHED = tuple(sorted({r.contract for r in REPORTS}))


class LogDecoder:
    """Decodes the reported events of the contracts at `addresses` (name -> address)."""

    def __init__(self, w3: Web3, addresses: Mapping[str, str]) -> None:
        self._routes: dict[tuple[str, str], tuple[Any, Report]] = {}
        for report in REPORTS:
            if report.contract not in addresses:
                continue
            if report.what not in CHAIN_ARGS:
                raise ChainError(f"{report.event} reports unknown ChainObserved {report.what!r}")
            address = Web3.to_checksum_address(addresses[report.contract])
            abi = load_artifact(report.contract)["abi"]
            event = w3.eth.contract(address=address, abi=abi).events[report.event]()
            self._routes[(address.lower(), _hex(event.topic))] = (event, report)
        self.addresses = tuple(sorted({Web3.to_checksum_address(a) for a, _ in self._routes}))
        self.topics = tuple(sorted({t for _, t in self._routes}))

    def decode(self, log: Mapping[str, Any]) -> ChainObserved | None:
        """The report of one raw log (as eth_getLogs returns it); None if it is not reported."""
        topics = log.get("topics") or ()
        if not topics:
            return None
        route = self._routes.get((str(log["address"]).lower(), _hex(topics[0])))
        if route is None:
            return None
        event, report = route
        try:
            args = report.args(event.process_log(log)["args"])
        except Exception as exc:
            raise LogDecodeError(
                f"{report.contract}.{report.event} log {_hex(log['transactionHash'])}:"
                f"{log['logIndex']} does not decode: {exc}"
            ) from None
        return ChainObserved(
            report.what,
            int(log["blockNumber"]),
            bytes(log["blockHash"]),
            bytes(log["transactionHash"]),
            int(log["logIndex"]),
            args,
        )


def _hex(value: Any) -> str:
    """A topic or hash as lower-case 0x hex, whether web3 gave bytes or a string."""
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    text = str(value).lower()
    return text if text.startswith("0x") else "0x" + text
