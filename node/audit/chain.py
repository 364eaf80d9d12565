"""Check a log's `ChainObserved` events against the chain (blocking): each must name a transaction
whose receipt is in the recorded block, that block must still be on the chain, and the log at the
recorded index must be the protocol event the body reports, with the same arguments.

"This event is not on the chain" is a verdict; "the RPC failed" is not one: a transport or node
error while checking raises ChainError (the audit cannot say), never a problem against the log."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from web3.exceptions import TransactionNotFound

from chain.client import Chain
from chain.errors import ChainError
from chain.logs import LogDecoder
from events import kinds as k
from events.crypto import to_checksum
from events.envelope import decode
from storage.sources import open_log

NO_TX = bytes(32)


@dataclass
class ChainAudit:
    checked: int = 0
    confirmed: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems


def _contracts(path: Path) -> dict[str, str]:
    try:
        document = json.loads(path.read_text())
        addresses = document.get("contracts", document)
        if not isinstance(addresses, dict) or not addresses:
            raise ValueError("no contract addresses")
        return {str(name): str(address) for name, address in addresses.items()}
    except (OSError, ValueError, AttributeError) as exc:
        raise ChainError(f"{path}: not a castnet deployment file: {exc}") from None


def audit_chain(source: str | Path, rpc_url: str, contracts: Path) -> ChainAudit:
    """Raises ChainError when the chain or the deployment file cannot be used at all."""
    chain = Chain.rpc(rpc_url, b"\x01" * 32)
    decoder = LogDecoder(chain.w3, _contracts(contracts))
    report = ChainAudit()
    receipts: dict[bytes, Any] = {}
    canonical: dict[int, bytes] = {}
    with open_log(source) as log:
        for position, raw in log.rows:
            event = decode(raw)
            if event.kind != k.ChainObserved.KIND:
                continue
            body = k.read_body(event)
            if not isinstance(body, k.ChainObserved):
                continue
            report.checked += 1
            where = f"event {position} ({to_checksum(event.author)} #{event.seq}, {body.what})"
            problem = _check(chain, decoder, body, receipts, canonical)
            if problem:
                report.problems.append(f"{where}: {problem}")
            else:
                report.confirmed += 1
    return report


def _check(
    chain: Chain,
    decoder: LogDecoder,
    body: k.ChainObserved,
    receipts: dict[bytes, Any],
    canonical: dict[int, bytes],
) -> str:
    if body.tx_hash == NO_TX:
        return "no transaction to check (zero hash)"
    if body.tx_hash not in receipts:
        try:
            receipts[body.tx_hash] = chain.w3.eth.get_transaction_receipt(body.tx_hash)
        except TransactionNotFound:
            receipts[body.tx_hash] = None
        except Exception as exc:  # transport or node error: no verdict either way
            raise _rpc_failed("the receipt of 0x" + body.tx_hash.hex(), exc) from None
    receipt = receipts[body.tx_hash]
    if receipt is None:
        return f"transaction 0x{body.tx_hash.hex()} is not on the chain"
    if (
        int(receipt["blockNumber"]) != body.block_number
        or bytes(receipt["blockHash"]) != body.block_hash
    ):
        return (f"transaction is in block {receipt['blockNumber']}, the log says block "
                f"{body.block_number} 0x{body.block_hash.hex()[:12]}")  # fmt: skip
    if body.block_number not in canonical:
        try:
            block = chain.w3.eth.get_block(body.block_number)
        except Exception as exc:
            raise _rpc_failed(f"block {body.block_number}", exc) from None
        canonical[body.block_number] = bytes(block["hash"])
    if canonical[body.block_number] != body.block_hash:
        return f"block {body.block_number} is no longer on the chain (reorganized away)"
    entry = next((e for e in receipt["logs"] if int(e["logIndex"]) == body.log_index), None)
    if entry is None:
        return f"the transaction has no log at index {body.log_index}"
    observed = decoder.decode(entry)
    if observed is None:
        return "the log there is not a protocol event this deployment reports"
    if observed.what != body.what or tuple(observed.args) != tuple(body.args):
        return f"the chain says {observed.what}{_show(observed.args)}, the log {_show(body.args)}"
    return ""


def _rpc_failed(what: str, exc: Exception) -> ChainError:
    return ChainError(f"the RPC failed while reading {what} ({type(exc).__name__}: {exc}); "
                      "nothing was decided about the log")  # fmt: skip


def _show(args: tuple[Any, ...]) -> str:
    return "(" + ", ".join("0x" + a.hex() if isinstance(a, bytes) else str(a) for a in args) + ")"
