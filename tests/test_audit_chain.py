"""`castnet audit DATA_DIR --rpc URL --contracts FILE`: ChainObserved events that match the
chain are confirmed; a forged amount, a block that is not the transaction's, and a transaction
that does not exist are each reported, and the audit fails."""

from __future__ import annotations

import dataclasses
import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from chain.anvil import Anvil
from chain.client import Chain, deploy_protocol
from chain.logs import LogDecoder
from events.author import Author
from events.crypto import LocalKeySigner, keccak256
from node.cli.main import main
from storage.store import EventStore

SENDER = keccak256(b"audit-chain/sender")


def _observations(anvil: Anvil, tmp_path: Path) -> tuple[list, Path]:
    chain = Chain.rpc(anvil.url, anvil.dev_key)
    protocol = deploy_protocol(chain, chain.dev_key)
    contracts = tmp_path / "contracts.json"
    contracts.write_text(json.dumps({"contracts": protocol.addresses()}))
    chain.transfer(chain.dev_key, LocalKeySigner(SENDER).address, 10**19)
    receipt = protocol.fund_deposit_and_reserve(SENDER, 10**18, 10**17)
    decoder = LogDecoder(chain.w3, protocol.addresses())
    bodies = [decoder.decode(entry) for entry in receipt["logs"]]
    assert [b.what for b in bodies if b] == ["deposit", "reserve"]
    return [b for b in bodies if b], contracts


def _log(tmp_path: Path, bodies: list) -> Path:
    data_dir = tmp_path / "node"
    author = Author(LocalKeySigner(keccak256(b"audit-chain/observer")))
    with EventStore.open_dir(data_dir) as store:
        store.append([author.sign(body, 1_000 + n) for n, body in enumerate(bodies)])
    return data_dir


def test_true_chain_events_are_confirmed_and_forged_ones_reported(
    anvil: Anvil, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bodies, contracts = _observations(anvil, tmp_path)
    args = ["--rpc", anvil.url, "--contracts", str(contracts), "--json"]
    assert main(["audit", str(_log(tmp_path / "true", bodies)), *args]) == 0
    chain = json.loads(capsys.readouterr().out)["chain"]
    assert chain == {"checked": 2, "confirmed": 2, "problems": []}

    deposit = bodies[0]
    forged = [
        dataclasses.replace(deposit, args=(deposit.args[0], deposit.args[1] * 10)),
        dataclasses.replace(deposit, block_hash=keccak256(b"another block")),
        dataclasses.replace(deposit, tx_hash=keccak256(b"no such transaction")),
    ]
    assert main(["audit", str(_log(tmp_path / "forged", forged)), *args]) == 1
    chain = json.loads(capsys.readouterr().out)["chain"]
    assert (chain["checked"], chain["confirmed"]) == (3, 0)
    amount, block, missing = chain["problems"]
    assert "the chain says deposit" in amount and str(10**19) in amount
    assert "the log says block" in block
    assert "is not on the chain" in missing


def test_audit_rpc_needs_a_deployment_and_a_chain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = _log(tmp_path, [])
    assert main(["audit", str(data_dir), "--rpc", "http://127.0.0.1:9"]) == 2
    assert "--contracts" in capsys.readouterr().err
    (tmp_path / "c.json").write_text("{}")
    code = main(["audit", str(data_dir), "--rpc", "http://127.0.0.1:9", "--contracts",
                 str(tmp_path / "c.json")])  # fmt: skip
    assert code == 2 and "cannot reach the chain" in capsys.readouterr().err


class _FailingReceipts(BaseHTTPRequestHandler):
    """A JSON-RPC proxy in front of anvil whose receipt lookups fail as a broken node's would."""

    upstream = ""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = json.loads(body)
        if request.get("method") == "eth_getTransactionReceipt":
            error = {"code": -32603, "message": "backend unavailable"}
            answer = json.dumps({"jsonrpc": "2.0", "id": request["id"], "error": error}).encode()
        else:
            forward = urllib.request.Request(
                self.upstream, body, {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(forward, timeout=10) as reply:
                answer = reply.read()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


def test_a_failing_rpc_is_not_reported_as_events_missing_from_the_chain(
    anvil: Anvil, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bodies, contracts = _observations(anvil, tmp_path)
    handler = type("Handler", (_FailingReceipts,), {"upstream": anvil.url})
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{proxy.server_address[1]}"
        code = main(["audit", str(_log(tmp_path, bodies)), "--rpc", url,
                     "--contracts", str(contracts)])  # fmt: skip
    finally:
        proxy.shutdown()
        proxy.server_close()
    captured = capsys.readouterr()
    assert code == 2
    assert "the RPC failed" in captured.err and "backend unavailable" in captured.err
    assert "not on the chain" not in captured.out + captured.err
