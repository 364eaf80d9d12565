"""`castnet run`: keystores (round trip, wrong password, password sources), config validation, and
the service as real OS processes: a gateway and an orchestrator joined by a bootstrap multiaddr
transcode a clip submitted over HTTP, serve the HLS output, and resume from their data dirs after
SIGTERM (winning tickets redeemed after an orchestrator restart, an interrupted job finished
after a gateway restart, every log auditing clean)."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import ExitStack, asynccontextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import trio
from api_client import request, upload, wait_job, wait_status

from node.audit.log import audit_path
from node.cli.main import main
from node.config import ConfigError, build_config, load_config, merge
from node.keystore import (
    PASSWORD_ENV,
    KeystoreError,
    WrongPassword,
    create_keystore,
    keystore_address,
    load_keystore,
    resolve_password,
)
from node.local.demo import generate_clip
from node.service import NO_CHAIN, shifted_listen
from p2p.identity import load_or_create_identity, peer_id_of
from storage.tickets import TICKETS_DB
from tests.anvil_chain import GATEWAY_ECONOMICS, orchestrator_economics, protocol_on_anvil

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "correct horse battery staple"
FAST_KDF: dict[str, Any] = {"kdf": "pbkdf2", "work": 1000}  # tests only: cheap to decrypt
_POLL_S = 0.05  # another process's files offer nothing to wait on


# -- keystore --------------------------------------------------------------------------------


def test_keystore_round_trip_and_wrong_password(tmp_path: Path) -> None:
    key = bytes(range(1, 33))
    path = tmp_path / "k" / "key.json"
    address = create_keystore(path, PASSWORD, key, **FAST_KDF)
    assert path.stat().st_mode & 0o777 == 0o600
    assert keystore_address(path) == address
    assert load_keystore(path, PASSWORD) == key
    with pytest.raises(WrongPassword, match="wrong password"):
        load_keystore(path, PASSWORD + "!")
    with pytest.raises(KeystoreError, match="not overwriting"):
        create_keystore(path, PASSWORD, **FAST_KDF)
    scrypt = create_keystore(tmp_path / "s.json", PASSWORD, kdf="scrypt", work=2**10)
    assert keystore_address(tmp_path / "s.json") == scrypt
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(KeystoreError, match="not a keystore"):
        load_keystore(tmp_path / "junk.json", PASSWORD)
    with pytest.raises(KeystoreError, match="castnet keys new"):
        load_keystore(tmp_path / "missing.json", PASSWORD)


def test_password_sources_in_order(tmp_path: Path) -> None:
    file = tmp_path / "pw"
    file.write_text("from-file\n")
    env = {PASSWORD_ENV: "from-env"}
    assert resolve_password(file, env) == "from-file"
    assert resolve_password(None, env) == "from-env"
    answers = iter(["typed", "typed"])
    got = resolve_password(None, {}, interactive=True, confirm=True, prompt=lambda _: next(answers))
    assert got == "typed"
    with pytest.raises(KeystoreError, match="--password-file FILE, set CASTNET_PASSWORD"):
        resolve_password(None, {}, interactive=False)
    answers = iter(["one", "two"])
    with pytest.raises(KeystoreError, match="do not match"):
        resolve_password(None, {}, interactive=True, confirm=True, prompt=lambda _: next(answers))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(KeystoreError, match="is empty"):
        resolve_password(tmp_path / "empty", env)


def test_run_without_a_chain_says_so_in_one_line_and_exits_2(tmp_path: Path) -> None:
    """No fake chain to fall back on: `castnet run` needs ledger.kind embedded or rpc."""
    config = tmp_path / "node.toml"
    config.write_text('roles = ["gateway"]\ndata_dir = "data"\n')
    argv = [sys.executable, "-m", "node.cli", "run", "--config", str(config), "--init-keys"]
    env = {**os.environ, PASSWORD_ENV: PASSWORD}
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines == [f"castnet run: {NO_CHAIN}"], lines
    assert 'ledger.kind = "embedded"' in lines[0] and "ledger.rpc_url" in lines[0]
    assert not (tmp_path / "data").exists()  # refused before making keys or folders
    assert build_config({"roles": ["gateway"], "data_dir": "d"}, tmp_path).ledger.kind == ""


def test_keys_cli_new_show_and_wrong_password(tmp_path: Path, capsys: Any) -> None:
    config = tmp_path / "node.toml"
    config.write_text('roles = ["gateway", "orchestrator"]\ndata_dir = "d"\n'
                      '[ledger]\nkind = "embedded"\n')  # fmt: skip
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD)
    args = ["keys", "new", "--config", str(config), "--password-file", str(pw), "--json"]
    assert main([*args, "--kdf", "pbkdf2", "--work", "1000"]) == 0
    created = json.loads(capsys.readouterr().out)["created"]
    assert [c["role"] for c in created] == ["gateway", "orchestrator"]
    assert main(["keys", "show", "--config", str(config), "--json", "--check",
                 "--password-file", str(pw)]) == 0  # fmt: skip
    shown = json.loads(capsys.readouterr().out)["keys"]
    assert [s["address"] for s in shown] == [c["address"] for c in created]
    pw.write_text("not the password")
    code = main(["keys", "show", "--config", str(config), "--check", "--password-file", str(pw)])
    assert code == 2 and "wrong password" in capsys.readouterr().err
    code = main(["run", "--config", str(config), "--password-file", str(pw)])
    assert code == 2 and "wrong password" in capsys.readouterr().err


# -- config ----------------------------------------------------------------------------------

GOOD = {"roles": ["gateway"], "data_dir": "d"}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"data_dir": "d"}, "roles must name at least one"),
        ({**GOOD, "roles": ["gateway", "miner"]}, "unknown role 'miner'"),
        ({**GOOD, "roles": ["gateway", "gateway"]}, "listed twice"),
        ({"roles": ["gateway"]}, "data_dir is required"),
        ({**GOOD, "colour": "blue"}, "unknown key 'colour' in the top level"),
        ({**GOOD, "gateway": {"profile": "360p"}}, "unknown key 'profile' in \\[gateway\\]"),
        ({**GOOD, "gateway": {"profiles": "999x"}}, "gateway.profiles '999x'"),
        ({**GOOD, "gateway": {"preset": "warp"}}, "gateway.preset 'warp'"),
        ({**GOOD, "orchestrator": {"price_per_pixel": "cheap"}}, "is not a number"),
        ({**GOOD, "orchestrator": {"price_per_pixel": "-1"}}, "must not be negative"),
        ({**GOOD, "orchestrator": {"capacity": 0}}, "capacity must be an integer >= 1"),
        ({**GOOD, "ledger": {"kind": "ether"}}, "ledger.kind 'ether'"),
        ({**GOOD, "ledger": {"kind": "rpc"}}, "needs ledger.rpc_url"),
        ({**GOOD, "ledger": {"deposit": "1.5"}}, "whole number of wei"),
        (
            {**GOOD, "ledger": {"funded": ["0x" + "11" * 20]}},
            "unknown key 'funded' in \\[ledger\\]",
        ),
        ({**GOOD, "p2p": {"network": "a/b"}}, "bad network id"),
        ({**GOOD, "api": {"listen": "localhost"}}, "must be HOST:PORT"),
        (
            {**GOOD, "api": {"listen": "0.0.0.0:8935", "require_token": False}},
            "not a loopback address: api.require_token = false is allowed on loopback only",
        ),
        ({**GOOD, "api": {"require_token": False, "token": "t" * 16}}, "contradicts"),
        ({**GOOD, "api": {"require_token": "no"}}, "api.require_token must be true or false"),
        ({**GOOD, "api": {"live_schemes": ["file"]}}, "api.live_schemes: 'file' is not one of"),
        ({**GOOD, "api": {"live_allow_networks": ["lan"]}}, "api.live_allow_networks: 'lan'"),
        ({**GOOD, "api": {"body_timeout_s": 0}}, "api.body_timeout_s must be a number >= 0.1"),
        ({**GOOD, "api": {"max_client_connections": 0}}, "api.max_client_connections must be"),
        ({**GOOD, "api": {"listen": "[::]:1", "token": "short"}}, "at least 16 characters"),
        ({**GOOD, "api": {"token_file": "nope"}}, "api.token_file: cannot read"),
        ({**GOOD, "delegator": {"orchestrator": "0xzz"}}, "not a hex address"),
    ],
)
def test_config_errors_name_the_key(raw: dict[str, Any], message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config(raw, tmp_path)


def test_config_file_flags_and_defaults(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("t" * 32 + "\n")
    path = tmp_path / "node.toml"
    path.write_text(
        'roles = ["orchestrator", "gateway"]\ndata_dir = "data"\n'
        '[orchestrator]\nprice_per_pixel = "3/2"\n'
        '[api]\nlisten = "0.0.0.0:9000"\ntoken_file = "token"\n'
        '[p2p]\nlisten = ["/ip4/127.0.0.1/tcp/4000"]\n'
    )
    flags = {"p2p": {"network": "other", "bootstrap": None}, "gateway": {"profiles": "240p"}}
    config = load_config(path, flags)
    assert config.roles == ("gateway", "orchestrator")
    assert config.data_dir == tmp_path / "data"
    assert config.keystore("gateway") == tmp_path / "data" / "gateway" / "keystore.json"
    assert config.orchestrator.price_per_pixel == Fraction(3, 2)
    assert config.api.token == "t" * 32 and not config.api.loopback
    assert config.p2p.network == "other" and config.gateway.profiles == "240p"
    assert shifted_listen(config.p2p.listen, 1) == ("/ip4/127.0.0.1/tcp/4001",)
    assert shifted_listen(("/ip4/127.0.0.1/tcp/0",), 2) == ("/ip4/127.0.0.1/tcp/0",)
    assert merge({"a": {"b": 1, "c": 2}}, {"a": {"b": None, "c": 3}}) == {"a": {"b": 1, "c": 3}}
    (tmp_path / "bad.toml").write_text("roles = [")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(tmp_path / "bad.toml")


# -- two processes -------------------------------------------------------------------------


class NodeProcess:
    def __init__(self, process: trio.Process, lines: list[str], stderr: Path) -> None:
        self.process = process
        self.lines = lines
        self.stderr = stderr  # the node's log lines, for a failure's message

    def err(self) -> str:
        return self.stderr.read_text(errors="replace")[-3000:]

    def value(self, prefix: str) -> str:
        return next(line.split()[1] for line in self.lines if line.startswith(prefix))

    @property
    def p2p_addr(self) -> str:
        return next(line.split()[1] for line in self.lines if line.strip().startswith("listening"))


@asynccontextmanager
async def node_process(config: Path, password_file: Path) -> AsyncIterator[NodeProcess]:
    """`python -m node.cli run` until it prints `ready`; SIGTERM at the end, which must exit 0."""
    async with node_processes([config], password_file) as (node,):
        yield node


@asynccontextmanager
async def node_processes(
    configs: Sequence[Path], password_file: Path
) -> AsyncIterator[list[NodeProcess]]:
    """Several `castnet run` processes started at once (their start-ups overlap), each until it
    prints `ready`; SIGTERM at the end, last started first, each of which must exit 0."""
    argv = [sys.executable, "-m", "node.cli", "run", "--password-file", str(password_file)]
    processes: list[trio.Process] = []
    logs = [config.with_suffix(f".{n}.err") for n, config in enumerate(configs)]
    try:
        for config, log in zip(configs, logs, strict=True):
            with log.open("ab") as err:
                processes.append(await trio.lowlevel.open_process(
                    [*argv, "--config", str(config)], cwd=ROOT, stdout=subprocess.PIPE,
                    stderr=err,
                ))  # fmt: skip
        nodes: list[NodeProcess | None] = [None] * len(processes)

        async def until_ready(index: int, process: trio.Process) -> None:
            assert process.stdout is not None
            buffer = b""
            while b"\nready\n" not in buffer:
                chunk = await process.stdout.receive_some(4096)
                assert chunk, f"node exited early: {buffer!r} {logs[index].read_text()[-3000:]}"
                buffer += chunk
            nodes[index] = NodeProcess(process, buffer.decode().splitlines(), logs[index])

        with trio.fail_after(40 * len(processes)):  # as if started one after another
            async with trio.open_nursery() as nursery:
                for index, process in enumerate(processes):
                    nursery.start_soon(until_ready, index, process)
        started = [node for node in nodes if node is not None]
        yield started
        for node in reversed(started):
            await stop(node)
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()  # only this test's own process, by its handle
                await process.wait()


def bootstrap_addr(role_dir: Path, port: int) -> str:
    """The address a node will be reachable at, known before it starts: its p2p identity made
    in advance (as the node makes it on a first start) and a fixed port. Peers that bootstrap
    from it can then start at the same time as it (`node_processes`)."""
    peer = peer_id_of(load_or_create_identity(role_dir)).to_base58()
    return f"/ip4/127.0.0.1/tcp/{port}/p2p/{peer}"


async def stop(node: NodeProcess) -> None:
    if node.process.returncode is None:
        node.process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            assert await node.process.wait() == 0, node.err()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ticket_states(data_dir: Path) -> dict[str, int]:
    path = data_dir / TICKETS_DB
    if not path.exists():
        return {}
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return dict(db.execute("SELECT state, COUNT(*) FROM tickets GROUP BY state").fetchall())


async def wait_for(predicate: Any, timeout: float) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(_POLL_S)


def write_config(path: Path, roles: Sequence[str], body: str) -> Path:
    path.write_text(f'roles = {json.dumps(list(roles))}\ndata_dir = "{path.stem}"\n{body}')
    return path


@pytest.fixture
def chain() -> Iterator[ExitStack]:
    """Where a test enters the chain it starts (anvil is stopped after the test)."""
    with ExitStack() as stack:
        yield stack


async def test_gateway_and_orchestrator_processes_transcode_over_http_and_resume(
    tmp_path: Path, chain: ExitStack
) -> None:
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD)
    clip = generate_clip(tmp_path / "clip.mp4", "320x180", 4.0)
    gw_store = tmp_path / "gw" / "gateway" / "keystore.json"
    orch_store = tmp_path / "orch" / "orchestrator" / "keystore.json"
    create_keystore(gw_store, PASSWORD, **FAST_KDF)
    create_keystore(orch_store, PASSWORD, **FAST_KDF)
    keys = [load_keystore(path, PASSWORD) for path in (gw_store, orch_store)]
    ledger = chain.enter_context(protocol_on_anvil(tmp_path, keys[:1], keys[1:]))
    economics = orchestrator_economics("1.5e10")  # wei per pixel, for this ladder
    network = '[p2p]\nnetwork = "proc-test"\n'
    gw_port = free_port()  # fixed, so the orchestrator can redial a restarted gateway
    gw_conf = write_config(tmp_path / "gw.toml", ["gateway"], ledger + network
                           + f'listen = ["/ip4/127.0.0.1/tcp/{gw_port}"]\n'
                           f'[gateway]\nprofiles = "180p:300k,144p"\n{GATEWAY_ECONOMICS}'
                           '[api]\nlisten = "127.0.0.1:0"\n')  # fmt: skip

    def orch_conf(gateway_addr: str, redeem_s: float, with_gateway: bool = False) -> Path:
        # started with the gateway: it dials the gateway until it answers (no `ready` wait)
        wait = "require_bootstrap = false\n" if with_gateway else ""
        body = (f'{ledger}{network}bootstrap = ["{gateway_addr}"]\n{wait}'
                f'[orchestrator]\n{economics}'
                f'redeem_interval_s = {redeem_s}\n')  # fmt: skip
        return write_config(tmp_path / "orch.toml", ["orchestrator"], body)

    orch_dir = tmp_path / "orch" / "orchestrator"
    gw_addr = bootstrap_addr(tmp_path / "gw" / "gateway", gw_port)
    first = [gw_conf, orch_conf(gw_addr, 3600, with_gateway=True)]
    async with node_processes(first, pw) as (gateway, orch):
        assert gateway.p2p_addr == gw_addr
        api = gateway.value("api ")
        # the node made its API token and showed it once
        token = (tmp_path / "gw" / "gateway" / "api-token").read_text().strip()
        assert any(line.startswith("API token (new") and line.endswith(token)
                   for line in gateway.lines)  # fmt: skip
        status, _ = await trio.to_thread.run_sync(request, api, "GET", "/v1/status")
        assert status == 401
        # 1. an orchestrator in another process, on the same contracts (anvil over JSON-RPC);
        #    it keeps its winning tickets queued (redemption every hour)
        job = await trio.to_thread.run_sync(upload, api, clip.read_bytes(), None, token)
        record = await wait_job(api, job["id"], 90, token)
        assert record["status"] == "done", json.dumps(record, indent=1)
        assert record["progress"]["segments_done"] == record["progress"]["segments_total"] == 2
        assert record["orchestrators"] == ["0x" + orch.value("orchestrator ")[2:].lower()]
        status, master = await trio.to_thread.run_sync(
            request, api, "GET", record["playlist"], None, None, token
        )
        assert status == 200 and b"180p_300k/index.m3u8" in master and b"144p/" in master
        seg_url = f"/v1/jobs/{job['id']}/144p/seg_00001.ts"
        status, segment = await trio.to_thread.run_sync(
            request, api, "GET", seg_url, None, None, token
        )
        assert status == 200 and segment[:1] == b"\x47"  # an MPEG-TS sync byte
        await stop(orch)
        pending = ticket_states(orch_dir)
        assert pending.get("pending", 0) >= 1 and "redeemed" not in pending, pending
        # 2. the orchestrator restarts and redeems the tickets its durable queue kept
        async with node_process(orch_conf(gateway.p2p_addr, 0.2), pw) as orch:
            await wait_for(lambda: "pending" not in ticket_states(orch_dir), 30)
            assert ticket_states(orch_dir) == {"redeemed": pending["pending"]}
            # 3. a job interrupted by stopping the gateway is finished by the restarted one
            second = await trio.to_thread.run_sync(upload, api, clip.read_bytes(), None, token)
            await wait_status(api, second["id"], ("running", "done"), 30, token)
            await stop(gateway)
            on_disk = json.loads((tmp_path / "gw" / "gateway" / "jobs" / second["id"]
                                  / "job.json").read_text())  # fmt: skip
            async with node_process(gw_conf, pw) as again:
                api2 = again.value("api ")
                interrupted = on_disk["status"] != "done"
                assert ("resumed 1 unfinished job(s)" in again.lines) == interrupted
                assert not any(line.endswith(token) for line in again.lines)  # shown once
                done = await wait_job(api2, second["id"], 90, token)
                assert done["status"] == "done", done
                assert done["runs"] == on_disk["runs"] + interrupted
                old = await wait_job(api2, job["id"], 5, token)  # the first job is still served
                status, body = await trio.to_thread.run_sync(
                    request, api2, "GET", old["playlist"], None, None, token
                )
                assert status == 200 and body == master
    for data_dir in (tmp_path / "gw" / "gateway", orch_dir):
        report = audit_path(data_dir)
        assert report.clean, [p.describe() for p in report.problems]
        assert report.events > 10
