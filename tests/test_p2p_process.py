"""Separate OS processes running `castnet node start`: three converge through a bootstrap
multiaddr; a node SIGKILLed in the middle of catching up restarts, catches up and audits clean."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from node.audit.log import audit_path
from node.local.synth import synth_events
from storage.store import DB_NAME, EventStore

ROOT = Path(__file__).resolve().parents[1]
_POLL_S = 0.05  # another process's store offers no event to wait on


class NodeProcess:
    def __init__(self, process: trio.Process, addr: str) -> None:
        self.process = process
        self.addr = addr


@asynccontextmanager
async def node_process(data_dir: Path, bootstrap: Sequence[str] = ()) -> AsyncIterator[NodeProcess]:
    """`castnet node start` in its own process; yields once it prints its multiaddr. The caller
    may SIGKILL it; otherwise it gets SIGTERM and must exit 0."""
    argv = [sys.executable, "-m", "node.cli.node", "node", "start"]
    argv += ["--data-dir", str(data_dir)]
    if bootstrap:
        argv += ["--bootstrap", *bootstrap]
    process = await trio.lowlevel.open_process(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        assert process.stdout is not None
        buffer = b""
        with trio.fail_after(30):
            while b"listening " not in buffer or not buffer.endswith(b"\n"):
                chunk = await process.stdout.receive_some(4096)
                assert chunk, f"node exited early: {buffer!r}"
                buffer += chunk
        addr = buffer.split(b"listening ")[1].split(b"\n")[0].decode()
        yield NodeProcess(process, addr)
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(20):
                assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()  # only this test's own process, by its handle
            await process.wait()


def count(data_dir: Path) -> int:
    path = data_dir / DB_NAME
    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        try:
            return int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
        except sqlite3.OperationalError:  # schema not created yet
            return 0


async def wait_count(data_dir: Path, at_least: int, timeout: float = 60) -> None:
    with trio.fail_after(timeout):
        while count(data_dir) < at_least:
            await trio.sleep(_POLL_S)


def import_log(data_dir: Path, events: list) -> None:
    with EventStore.open_dir(data_dir) as store:
        store.append(events)


async def test_three_processes_converge_through_a_bootstrap_address(tmp_path: Path) -> None:
    dirs = [tmp_path / name for name in ("a", "b", "c")]
    for seed, d in enumerate(dirs):
        import_log(d, list(synth_events(200, 3, seed=seed)))
    async with node_process(dirs[0]) as a:  # noqa: SIM117 (B and C need its address)
        async with node_process(dirs[1], [a.addr]), node_process(dirs[2], [a.addr]):
            for d in dirs:
                await wait_count(d, 600)
    for d in dirs:
        assert count(d) == 600
        report = audit_path(d)
        assert report.events == 600 and not report.problems


async def test_killed_node_restarts_and_catches_up(tmp_path: Path) -> None:
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    backlog = list(synth_events(12_500, 6, seed=5))
    import_log(a_dir, backlog[:12_000])
    async with node_process(a_dir) as a:
        async with node_process(b_dir, [a.addr]) as b:
            await wait_count(b_dir, 1)
            b.process.kill()  # SIGKILL, mid catch-up with high probability
            await b.process.wait()
        killed_at = count(b_dir)
        assert killed_at >= 1  # what B stored before the kill must survive it
        import_log(a_dir, backlog[12_000:])  # A's log grows while B is down
        async with node_process(b_dir, [a.addr]):
            await wait_count(b_dir, 12_500)
    assert count(b_dir) == 12_500
    report = audit_path(b_dir)
    assert report.clean, (report.problems, report.violations[:3])
