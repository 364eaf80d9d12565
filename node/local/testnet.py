"""A local multi-process testnet (blocking): anvil, the protocol contracts, and N `castnet run`
processes with a mix of roles, all on 127.0.0.1 under one folder.

    up(DIR, nodes=5)     anvil + deploy + fund + bond/register + start nodes; waits for offers
    status(DIR)          processes, chain round, stakes, the delegator's bond, the gateway's status
    transcode(DIR, FILE) a job through the gateway's HTTP API, waited for
    down(DIR)            stops the processes it started, by the pids it wrote (never by name)

Roles for N nodes: node0 the gateway, the last one the delegator (N >= 3), orchestrators between.
Everything a node needs is in DIR: `testnet.json` (what runs where), `contracts.json`,
`password`, and per node `nodeI.toml`, `nodeI/` (keystores, logs, data), `nodeI.log`.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from chain.anvil import Anvil, free_port, stop_pid
from chain.client import Chain, Protocol, ProtocolParams, deploy_protocol
from chain.errors import ChainError
from events.crypto import LocalKeySigner, to_checksum
from node.keystore import KeystoreError, create_keystore, load_keystore
from p2p.errors import IdentityError
from p2p.identity import load_or_create_identity, peer_id_of

STATE_FILE = "testnet.json"
TOKEN = 10**18
START_TIMEOUT_S = 120.0
KDF = {"kdf": "pbkdf2", "work": 50_000}  # local test accounts: quick to decrypt at each start


class TestnetError(Exception):
    """The testnet cannot do what was asked; the message says why."""


BONDED_SHARE_PPB = 480_000_000  # the nodes' bonds as a share of the token supply: 48%
SPARE_TOKENS = 10 * TOKEN  # stake token each account holds beyond its bond


@dataclass(frozen=True, slots=True)
class TestnetParams:
    nodes: int = 5
    block_time_s: float = 1.0
    round_length: int = 5  # blocks
    gateway_deposit: int = 10**18
    gateway_reserve: int = 10**18
    self_stake: int = 100 * TOKEN
    delegation: int = 50 * TOKEN
    ticket_ev: int = 5 * 10**14  # wei of expected value per ticket (pays the redemption gas)
    price_per_pixel: int = 10**7


def roles_for(nodes: int) -> list[str]:
    if nodes < 2:
        raise TestnetError("a testnet needs at least 2 nodes (a gateway and an orchestrator)")
    if nodes == 2:
        return ["gateway", "orchestrator"]
    return ["gateway", *["orchestrator"] * (nodes - 2), "delegator"]


def _state(root: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((root / STATE_FILE).read_text()))
    except FileNotFoundError:
        raise TestnetError(f"no testnet in {root} (start one with `castnet testnet up`)") from None
    except ValueError as exc:
        raise TestnetError(f"{root / STATE_FILE}: unreadable: {exc}") from None


def _write_json(path: Path, document: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2))
    os.replace(tmp, path)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # our own exited child is a zombie until reaped
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def up(root: Path, params: TestnetParams | None = None, say: Callable[[str], None] = print) -> dict:
    p = params or TestnetParams()
    roles = roles_for(p.nodes)
    root.mkdir(parents=True, exist_ok=True)
    if (root / STATE_FILE).exists():
        running = [n for n in _pids(_state(root)) if alive(n)]
        if running:
            raise TestnetError(f"a testnet is running in {root} (pids {running}): down it first")
        try:
            archive = _archive_previous(root)
        except OSError as exc:
            raise TestnetError(f"cannot move the stopped testnet in {root} aside: {exc}") from None
        say(f"reusing the keys of the testnet that was stopped in {root}; its chain went with "
            f"anvil, so its logs and node data moved to {archive}")  # fmt: skip
    state: dict[str, Any] = {"dir": str(root), "nodes": [], "params": asdict(p)}
    try:
        anvil = Anvil.start(block_time=p.block_time_s, log_file=root / "anvil.log", detach=True)
        state["anvil"] = {"pid": anvil.pid, "url": anvil.url}
        _write_json(root / STATE_FILE, state)
        say(f"anvil {anvil.url} (pid {anvil.pid}, a block every {p.block_time_s:g} s)")
        chain = Chain.rpc(anvil.url, anvil.dev_key)
        protocol = _deploy(root, chain, p, roles)
        say(f"contracts deployed: {root / 'contracts.json'}")
        password = _password(root)
        keys = _accounts(root, roles, password, protocol, p)
        _start_nodes(root, state, roles, keys, protocol, p, say)
    except (ChainError, OSError, TestnetError, KeystoreError, IdentityError) as exc:
        say(f"testnet up failed: {exc}; stopping what was started")
        _stop_started(root)
        raise TestnetError(str(exc)) from None
    except BaseException:  # Ctrl-C, or a bug: nothing it started may outlive it
        _stop_started(root)
        raise
    return state


def _stop_started(root: Path) -> None:
    if (root / STATE_FILE).exists():
        down(root, say=lambda _line: None)


def _password(root: Path) -> str:
    """The testnet's keystore password: the one a previous `up` wrote, else a new one."""
    path = root / "password"
    if path.exists():
        return path.read_text().strip()
    password = secrets.token_hex(16)
    path.write_text(password)
    return password


def _archive_previous(root: Path) -> Path:
    """Move what a stopped testnet left in `root` (state, logs, node data) into
    `root/previous-<UTC time>/`, keeping in place what the next `up` reuses: the password, each
    node's wallet keystore and p2p key. Nothing is deleted."""
    stamp = time.strftime("previous-%Y%m%dT%H%M%SZ", time.gmtime())
    archive = root / stamp
    for n in range(2, 1000):
        try:
            archive.mkdir()
            break
        except FileExistsError:  # two ups within a second
            archive = root / f"{stamp}-{n}"
    for item in sorted(root.iterdir()):
        if item == archive or item.name == "password" or item.name.startswith("previous-"):
            continue
        os.replace(item, archive / item.name)
    for kept in [*archive.glob("node*/*/keystore.json"), *archive.glob("node*/*/p2p.key")]:
        target = root / kept.relative_to(archive)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(kept, target)
    return archive


def _bonds(roles: list[str], p: TestnetParams) -> list[int]:
    """Stake token each node bonds: orchestrator i self-bonds i x self_stake, the delegator
    its delegation."""
    return [p.self_stake * i if role == "orchestrator" else
            p.delegation if role == "delegator" else 0
            for i, role in enumerate(roles)]  # fmt: skip


def _deploy(root: Path, chain: Chain, p: TestnetParams, roles: list[str]) -> Protocol:
    # the minter's defaults follow Livepeer's; the supply makes the nodes' bonds 48% of it,
    # near the 50% target, so a round's reward is a fraction of a percent of a bond
    supply = sum(_bonds(roles, p)) * 10**9 // BONDED_SHARE_PPB
    params = ProtocolParams(round_length=p.round_length, unbonding_period_rounds=2,
                            genesis_supply=supply)  # fmt: skip
    protocol = deploy_protocol(chain, chain.dev_key, params)
    _write_json(root / "contracts.json", {
        "chain_id": chain.chain_id, "rpc": str(chain.w3.provider.endpoint_uri),  # type: ignore[attr-defined]
        "contracts": protocol.addresses(), "params": asdict(params),
        "deployed_block": chain.block_number(),
    })  # fmt: skip
    return protocol


def _accounts(
    root: Path, roles: list[str], password: str, protocol: Protocol, p: TestnetParams
) -> list[bytes]:
    """A keystore per node, funded with gas money and stake token; orchestrators self-bond and
    register, the gateway funds its deposit and reserve."""
    chain, staking = protocol.chain, protocol.staking
    keys, bonds = [], _bonds(roles, p)
    for i, role in enumerate(roles):
        path = root / f"node{i}" / role / "keystore.json"
        if not path.exists():
            create_keystore(path, password, **KDF)  # type: ignore[arg-type]
        try:
            key = load_keystore(path, password)
        except KeystoreError as exc:
            raise TestnetError(f"{path} does not open with {root / 'password'} ({exc}): restore "
                               "that password file, or use another --dir") from None  # fmt: skip
        address = LocalKeySigner(key).address
        chain.transfer(chain.dev_key, address, 100 * TOKEN)
        staking.transfer_tokens(chain.dev_key, address, bonds[i] + SPARE_TOKENS)
        if role == "orchestrator":
            staking.bond(key, p.self_stake * i, address)
            staking.register(key, 100_000, 500_000)  # 10% reward cut, 50% fee share
        elif role == "gateway":
            protocol.fund_deposit_and_reserve(key, p.gateway_deposit, p.gateway_reserve)
        keys.append(key)
    return keys


def _config(root: Path, i: int, role: str, port: int, bootstrap: list[str], extra: str) -> Path:
    lines = [
        f'roles = ["{role}"]',
        f'data_dir = "node{i}"',
        "[p2p]",
        'network = "castnet-testnet"',
        f'listen = ["/ip4/127.0.0.1/tcp/{port}"]',
        f"bootstrap = {json.dumps(bootstrap)}",
        # every node starts at once: one may be up before node0 is; `up` waits for them all
        # and for the gateway to see every orchestrator's offer
        "require_bootstrap = false",
        "[ledger]",
        'kind = "rpc"',
        f'rpc_url = "{_state(root)["anvil"]["url"]}"',
        'contracts = "contracts.json"',
        "[metrics]",
        f'listen = "127.0.0.1:{free_port()}"',
        extra,
    ]
    path = root / f"node{i}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _start_nodes(
    root: Path,
    state: dict[str, Any],
    roles: list[str],
    keys: list[bytes],
    protocol: Protocol,
    p: TestnetParams,
    say: Callable[[str], None],
) -> None:
    orchestrators = [LocalKeySigner(k).address for k, r in zip(keys, roles, strict=True)
                     if r == "orchestrator"]  # fmt: skip
    # node0's address is known before it starts (its p2p key made now, as it would make it, or
    # the one a stopped testnet left), so every node starts at once and dials it until it answers
    port0 = free_port()
    peer0 = peer_id_of(load_or_create_identity(root / "node0" / roles[0])).to_base58()
    bootstrap0 = [f"/ip4/127.0.0.1/tcp/{port0}/p2p/{peer0}"]
    spawned: list[tuple[int, str, dict[str, Any]]] = []
    for i, role in enumerate(roles):
        if role == "gateway":
            api_port = free_port()
            extra = (f"[gateway]\nmin_offers = {len(orchestrators)}\n"
                     f"max_price_per_pixel = {2 * p.price_per_pixel}\n"
                     f'[api]\nlisten = "127.0.0.1:{api_port}"')  # fmt: skip
        elif role == "orchestrator":
            extra = (f'[orchestrator]\nprice_per_pixel = {p.price_per_pixel * (3 + i) // 4}\n'
                     f'ticket_ev = "{p.ticket_ev}"\nredeem_interval_s = 2')  # fmt: skip
        else:
            extra = (f'[delegator]\norchestrator = "{to_checksum(orchestrators[0])}"\n'
                     f"amount = {p.delegation}")  # fmt: skip
        config = _config(root, i, role, port0 if i == 0 else free_port(),
                         bootstrap0 if i else [], extra)  # fmt: skip
        pid = _spawn(root, i, config)
        node = {"name": f"node{i}", "role": role, "pid": pid, "config": str(config),
                "address": to_checksum(LocalKeySigner(keys[i]).address),
                "log": str(root / f"node{i}.log")}  # fmt: skip
        state["nodes"].append(node)
        _write_json(root / STATE_FILE, state)
        spawned.append((i, role, node))
    for entry in spawned:
        _started(root, state, entry, say)
    offers = _wait_offers(state, len(orchestrators))
    say(f"gateway API {state['api']}: {offers} offers converged")


def _started(
    root: Path,
    state: dict[str, Any],
    entry: tuple[int, str, dict[str, Any]],
    say: Callable[[str], None],
) -> None:
    i, role, node = entry
    service = _wait_service(root / f"node{i}", node["pid"], node["log"])
    node["addrs"] = service["roles"][role]["addrs"]
    node["metrics"] = service.get("metrics")
    if role == "gateway":
        state["api"] = service["api"]
        state["api_token_file"] = service.get("api_token_file")
    say(f"node{i} {role} {node['address']} pid {node['pid']}")
    _write_json(root / STATE_FILE, state)


def _spawn(root: Path, i: int, config: Path) -> int:
    argv = [sys.executable, "-m", "node.cli", "run", "--config", str(config),
            "--password-file", str(root / "password")]  # fmt: skip
    with open(root / f"node{i}.log", "ab") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True,
                                   cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    return process.pid


def _wait_service(data_dir: Path, pid: int, log: str) -> dict[str, Any]:
    path, deadline = data_dir / "service.json", time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if path.exists():
            service = json.loads(path.read_text())
            if service.get("pid") == pid:
                return dict(service)
        if not alive(pid):
            tail = Path(log).read_text(errors="replace").splitlines()[-5:]
            raise TestnetError(f"node (pid {pid}) exited at start: {' | '.join(tail)}")
        time.sleep(0.1)
    raise TestnetError(f"node (pid {pid}) did not start in {START_TIMEOUT_S:g} s; see {log}")


def _wait_offers(state: dict[str, Any], count: int) -> int:
    deadline, offers = time.monotonic() + START_TIMEOUT_S, 0
    while time.monotonic() < deadline:
        offers = int(request(state, "GET", "/v1/status")["gateway"]["offers"])
        if offers >= count:
            return offers
        time.sleep(0.25)
    raise TestnetError(f"the gateway saw {offers} of {count} offers in {START_TIMEOUT_S:g} s")


def request(state: dict[str, Any], method: str, path: str, body: bytes | None = None,
            content_type: str = "application/json") -> Any:  # fmt: skip
    """A call to the testnet gateway's API, with the token the gateway keeps in its data dir."""
    api = state["api"]
    url = urlsplit(api)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
    try:
        headers = {"Content-Type": content_type} if body is not None else {}
        if state.get("api_token_file"):
            token = Path(state["api_token_file"]).read_text().strip()
            headers["Authorization"] = f"Bearer {token}"
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        if response.status >= 400:
            raise TestnetError(f"{method} {path}: HTTP {response.status} {data[:300]!r}")
        return json.loads(data)
    except OSError as exc:
        raise TestnetError(f"the gateway API at {api} does not answer: {exc}") from None
    finally:
        conn.close()


def _pids(state: dict[str, Any]) -> list[int]:
    pids = [int(n["pid"]) for n in state.get("nodes", [])]
    if "anvil" in state:
        pids.append(int(state["anvil"]["pid"]))
    return pids


def status(root: Path) -> dict[str, Any]:
    state = _state(root)
    out: dict[str, Any] = {
        "dir": str(root),
        "anvil": {**state.get("anvil", {}), "alive": alive(int(state["anvil"]["pid"]))},
        "nodes": [
            {k: n.get(k) for k in ("name", "role", "pid", "address", "metrics")}
            | {"alive": alive(n["pid"])}
            for n in state["nodes"]
        ],
        "api": state.get("api"),
    }
    try:
        chain = Chain.rpc(state["anvil"]["url"], b"\x01" * 32)
        addresses = json.loads((root / "contracts.json").read_text())["contracts"]
        protocol = Protocol.at(chain, addresses)
        staking = protocol.staking
        out["chain"] = {"block": chain.block_number(), "round": protocol.current_round(),
                        "active": [{"address": to_checksum(a), "stake": staking.stake(a)}
                                   for a in staking.active_set()]}  # fmt: skip
        for node in out["nodes"]:
            address = bytes.fromhex(node["address"][2:])
            if node["role"] == "delegator":
                info = staking.delegator(address)
                node["bonded"], node["delegate"] = info.bonded, to_checksum(info.delegate or b"")
            elif node["role"] == "orchestrator":
                o = staking.orchestrator(address)
                node["stake"], node["last_reward_round"] = o.stake, o.last_reward_round
    except (ChainError, OSError, ValueError, KeyError) as exc:
        out["chain"] = {"error": str(exc)}
    if state.get("api"):
        try:
            gateway_status = request(state, "GET", "/v1/status")
            out["gateway"], out["gateway_status"] = gateway_status.get("gateway"), gateway_status
        except TestnetError as exc:
            out["gateway"] = {"error": str(exc)}
    return out


def transcode(root: Path, source: Path, timeout_s: float = 300.0,
              say: Callable[[str], None] = print) -> dict[str, Any]:  # fmt: skip
    state = _state(root)
    if not state.get("api"):
        raise TestnetError("this testnet has no gateway API")
    try:
        body = source.read_bytes()
    except OSError as exc:
        raise TestnetError(f"{source}: {exc}") from None
    job = request(state, "POST", "/v1/transcode", body, "video/mp4")
    say(f"job {job['id']} accepted")
    deadline, last = time.monotonic() + timeout_s, ""
    while time.monotonic() < deadline:
        record = request(state, "GET", f"/v1/jobs/{job['id']}")
        progress = record.get("progress", {})
        line = f"{record['status']} {progress.get('segments_done', 0)}/" \
               f"{progress.get('segments_total', '?')} segments"  # fmt: skip
        if line != last:
            say(f"  {line}")
            last = line
        if record["status"] in ("done", "failed"):
            return dict(record)
        time.sleep(0.5)
    raise TestnetError(f"job {job['id']} did not finish in {timeout_s:g} s")


def down(root: Path, say: Callable[[str], None] = print) -> list[int]:
    """Stop the nodes, then anvil, by the pids this testnet recorded; the data stays."""
    state = _state(root)
    stopped = []
    for pid in _pids(state):  # nodes first, anvil last
        if alive(pid) and stop_pid(pid):
            stopped.append(pid)
    say(f"stopped {len(stopped)} process(es): {stopped}")
    return stopped
