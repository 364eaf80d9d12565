"""anvil, the local EVM node of multi-process testnets and of the JSON-RPC tests (blocking).

    with Anvil.start() as anvil:                       # a free port on 127.0.0.1, automine
        chain = Chain.rpc(anvil.url, anvil.dev_key)
    anvil = Anvil.start(port=8545, block_time=1, log_file=path, detach=True)   # a testnet's
    anvil.stop()                                        # by its pid: terminate, then kill

The binary comes from `make testnet-deps` (npm package `@foundry-rs/anvil` in `.testnet/`), or
`CASTNET_ANVIL`, or PATH. Its accounts come from its default test mnemonic.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from eth_account import Account

from chain.errors import ChainError

ROOT = Path(__file__).resolve().parents[1]
LOCAL_BINARY = ROOT / ".testnet/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
DEV_MNEMONIC = "test test test test test test test test test test test junk"  # anvil's default
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0


def dev_key(index: int = 0) -> bytes:
    """The private key of anvil's pre-funded account `index` (its default mnemonic)."""
    Account.enable_unaudited_hdwallet_features()
    account = Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    return bytes(account.key)


def find_binary() -> Path:
    candidates = [os.environ.get("CASTNET_ANVIL", ""), str(LOCAL_BINARY), shutil.which("anvil")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise ChainError("anvil is not installed: run `make testnet-deps` (or set CASTNET_ANVIL)")


EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
PORTS_BELOW_EPHEMERAL = 12_000  # how far below the ephemeral range ports are picked


def free_port() -> int:
    """A TCP port nothing listens on at 127.0.0.1 now, for a process to listen on later.

    Picked below the kernel's ephemeral range: the kernel takes outgoing connections' local ports
    from that range, so a port it hands out there (bind to port 0) can be taken by any process's
    outgoing connection before the listener binds it (seen with the suite's tests run two at a
    time: a testnet node failed with "Address already in use")."""
    low = ephemeral_low()
    picker = random.SystemRandom()
    for _ in range(200):
        port = picker.randrange(max(1024, low - PORTS_BELOW_EPHEMERAL), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # every pick taken: the kernel's choice, as before
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ephemeral_low() -> int:
    """The lowest port of the kernel's ephemeral range (Linux; 32768, its default, elsewhere)."""
    try:
        return max(2048, int(EPHEMERAL_RANGE.read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        return 32768


def _answers(url_port: int) -> bool:
    """Whether something accepts TCP connections on the port (anvil listens once ready)."""
    try:
        with socket.create_connection(("127.0.0.1", url_port), timeout=0.2):
            return True
    except OSError:
        return False


class Anvil:
    """One anvil process that we started; `stop()` ends it by its pid, never by name."""

    def __init__(self, process: subprocess.Popen[bytes], port: int) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.pid = process.pid
        self.dev_key = dev_key(0)

    @classmethod
    def start(
        cls,
        port: int | None = None,
        block_time: float | None = None,
        log_file: Path | None = None,
        chain_id: int = 31337,
        detach: bool = False,
    ) -> Anvil:
        """Start anvil on 127.0.0.1 and wait until it accepts connections. `block_time` None
        mines a block per transaction; `detach` keeps it running after this process exits."""
        binary = find_binary()
        port = port or free_port()
        if _answers(port):
            raise ChainError(f"port {port} on 127.0.0.1 is already in use")
        args = [str(binary), "--host", "127.0.0.1", "--port", str(port), "--chain-id",
                str(chain_id), "--silent" if log_file is None else "--quiet"]  # fmt: skip
        if block_time is not None:
            args += ["--block-time", f"{block_time:g}"]
        out: IO[bytes] | int = subprocess.DEVNULL
        if log_file is not None:
            out = open(log_file, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=detach,
            )
        except OSError as exc:
            raise ChainError(f"cannot start anvil ({binary}): {exc}") from None
        finally:
            if not isinstance(out, int):
                out.close()
        anvil = cls(process, port)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(port):
            if process.poll() is not None:
                raise ChainError(f"anvil exited with code {process.returncode} at start")
            if time.monotonic() > deadline:
                anvil.stop()
                raise ChainError(f"anvil did not answer on port {port} in {START_TIMEOUT_S:g} s")
            time.sleep(0.05)
        return anvil

    def stop(self) -> None:
        stop_pid(self.pid, self.process)

    def __enter__(self) -> Anvil:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def stop_pid(pid: int, process: subprocess.Popen[bytes] | None = None) -> bool:
    """End the process `pid` (SIGTERM, then SIGKILL after a bounded wait); whether it ran."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process is not None:
            if process.poll() is not None:
                return True
        elif not _alive(pid):
            return True
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    if process is not None:
        process.wait(timeout=STOP_TIMEOUT_S)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours still answers kill(0): reap it
        done, _status = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True
