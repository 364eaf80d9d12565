"""The nodes bench/net_bench.py measures, and how it reads them: N `castnet node start`
processes (`processes`, read through their SQLite logs, /proc and their log files), the same
network inside this process (`in_process`), and when each event was stored on all of them
(`Arrivals`, `wait_all`)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from p2p.config import MAX_PEERS, PEERS_TARGET, P2PConfig  # noqa: E402
from p2p.localnet import open_local_nodes  # noqa: E402
from p2p.node import P2PNode  # noqa: E402
from storage.store import DB_NAME  # noqa: E402

POLL_S = 0.002  # other processes' stores offer no event to wait on
_WAL_INDEX_HEADER = 48  # bytes: SQLite's WalIndexHdr, first in the -shm file
_FULL_EVERY = 25  # polls: a query at least this often, header or not
SYNCED_LINE = re.compile(rb"synced \d+ events from \S+ \((\d+) new\)")
DROPPED_LINE = re.compile(rb"gossip dropped (\d+) outbound messages")
PEER_LINE = re.compile(rb"peer (connected|disconnected): (\S+)")
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass
class Proc:
    process: trio.Process
    data_dir: Path
    log: Path
    addr: str = ""
    db: sqlite3.Connection | None = None

    def db_path(self) -> Path:
        return self.data_dir / DB_NAME

    def stored(self) -> int:
        if self.db is None:
            path = self.data_dir / DB_NAME
            if not path.exists():
                return 0
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        try:
            # append-only with positions from 1 (no deletes): MAX(pos) is the count, and reads
            # one index page instead of counting every row 10 times per poll
            row = self.db.execute("SELECT COALESCE(MAX(pos), 0) FROM events").fetchone()
        except sqlite3.OperationalError:  # schema not there yet
            return 0
        return int(row[0])

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime

    def log_sum(self, pattern: re.Pattern[bytes], since: int) -> int:
        return sum(int(m) for m in pattern.findall(self.log.read_bytes()[since:]))

    def log_size(self) -> int:
        return self.log.stat().st_size

    def peers(self) -> int:
        """Peers connected now, as the node logged them."""
        now: set[bytes] = set()
        for what, peer in PEER_LINE.findall(self.log.read_bytes()):
            (now.add if what == b"connected" else now.discard)(peer)
        return len(now)


@dataclasses.dataclass
class Local:
    """A node inside this process, read the way `Proc` reads a process."""

    node: P2PNode

    def db_path(self) -> Path:
        return self.node.data_dir / DB_NAME

    def stored(self) -> int:
        return self.node.event_count()

    def cpu_s(self) -> float:
        return time.process_time()  # the whole process: every node and the publisher

    def log_sum(self, pattern: re.Pattern[bytes], since: int) -> int:
        return self.node.sync.stored if pattern is SYNCED_LINE else 0

    def log_size(self) -> int:
        return 0

    def peers(self) -> int:
        return len(self.node.running.host.get_connected_peers())


def dial_targets(earlier: list[Any], seed: bool) -> list[Any]:
    """Whom a node joining after `earlier` bootstraps to: up to 3 of them at random, or the
    first one only (`seed`: a network of strangers given one seed address)."""
    return earlier[:1] if seed else random.sample(earlier, min(3, len(earlier)))


@contextlib.asynccontextmanager
async def in_process(
    base: Path, n: int, peers: int, seed: bool = False, max_peers: int = MAX_PEERS
) -> AsyncIterator[list[Local]]:
    """The same network inside this process: node i dials up to 3 earlier nodes (or node 0
    only: `seed`), and peer exchange adds connections while a mesh is short of `peers`, as in
    the processes."""
    config = P2PConfig(listen=("/ip4/127.0.0.1/tcp/0",), peers_target=peers, max_peers=max_peers)
    async with open_local_nodes(base / "local", n, config, discover=peers > 0) as nodes:
        for i, node in enumerate(nodes):
            for other in dial_targets(nodes[:i], seed):
                await node.connect(other.addrs[0])
        yield [Local(node) for node in nodes]


@contextlib.asynccontextmanager
async def processes(
    base: Path,
    n: int,
    bootstrap: tuple[str, ...] = (),
    peers: int = PEERS_TARGET,
    seed: bool = False,
    max_peers: int = MAX_PEERS,
) -> AsyncIterator[list[Proc]]:
    """`n` node processes; node i bootstraps to up to 3 earlier ones, or to node 0 only
    (`seed`: a network of strangers given one seed address), or to `bootstrap`."""
    procs: list[Proc] = []
    base.mkdir(parents=True, exist_ok=True)
    try:
        for i in range(n):
            data_dir = base / f"node{i}"
            data_dir.mkdir()
            argv = [
                sys.executable,
                "-m",
                "node.cli.node",
                "node",
                "start",
                "--data-dir",
                str(data_dir),
                # the bench's authors are throwaway keys: measure gossip, not admission
                "--admit",
                "open",
                "--peers",
                str(peers),
                "--max-peers",
                str(max_peers),
            ]
            earlier = [p.addr for p in dial_targets(procs, seed)]
            if earlier or bootstrap:
                argv += ["--bootstrap", *(earlier or bootstrap)]
            log = base / f"node{i}.log"
            with log.open("wb") as err:
                process = await trio.lowlevel.open_process(
                    argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=err
                )
            proc = Proc(process, data_dir, log)
            procs.append(proc)
            assert process.stdout is not None
            buffer = b""
            with trio.fail_after(60):
                while b"listening " not in buffer or not buffer.endswith(b"\n"):
                    chunk = await process.stdout.receive_some(4096)
                    if not chunk:
                        raise RuntimeError(f"node {i} exited: {log.read_text()[-2000:]}")
                    buffer += chunk
            proc.addr = buffer.split(b"listening ")[1].split(b"\n")[0].decode()
        yield procs
    finally:
        for proc in procs:  # only the processes this bench started, by handle
            if proc.process.returncode is None:
                proc.process.terminate()
        with trio.move_on_after(20):
            for proc in procs:
                await proc.process.wait()
        for proc in procs:
            if proc.process.returncode is None:
                proc.process.kill()
                await proc.process.wait()
            if proc.db is not None:
                proc.db.close()


class Arrivals:
    """When each expected event (by id) was stored on every one of the nodes. Each node's log is
    read (read-only) for rows past the last position seen, every `interval`, while `run` runs,
    but only while that node still lacks an expected event: the reads are queries made in the
    bench's process, on the cores the nodes need, and a node that has everything it is waited
    for is not read (between paced events, no node is)."""

    def __init__(self, procs: list[Any]) -> None:
        self.procs = procs
        self.on_all: dict[bytes, float] = {}  # event id -> perf_counter when the last node had it
        self._lacking: dict[bytes, set[int]] = {}  # expected id -> the nodes that lack it
        self._early: dict[bytes, set[int]] = {}  # stored before it was expected -> those nodes
        self._needs = [0] * len(procs)  # per node: expected ids it lacks
        self._expected = trio.Event()
        self._dbs: list[sqlite3.Connection | None] = [None] * len(procs)
        self._pos = [0] * len(procs)
        self._headers: list[bytes] = [b""] * len(procs)
        self._polls = [0] * len(procs)
        self._shm: list[int | None] = [None] * len(procs)
        self.interval = POLL_S

    def expect(self, ids: list[bytes]) -> None:
        """Watch for `ids` (call it before they are published)."""
        everyone = set(range(len(self.procs)))
        for event_id in ids:
            if event_id in self.on_all or event_id in self._lacking:
                continue
            lacking = everyone - self._early.pop(event_id, set())
            if not lacking:
                self.on_all[event_id] = time.perf_counter()
                continue
            self._lacking[event_id] = lacking
            for i in lacking:
                self._needs[i] += 1
        self._expected.set()

    def _changed(self, i: int) -> bool:
        """Whether node i's log may have new rows since its last read: the header of its WAL
        index (the `-shm` file SQLite keeps beside a WAL-mode database) changes with every
        commit, and reading it costs a few microseconds where a query costs ~30 (each poll is
        CPU taken from the nodes being measured). Every `_FULL_EVERY`th poll queries anyway."""
        self._polls[i] += 1
        if self._polls[i] % _FULL_EVERY == 0:
            return True
        try:
            if self._shm[i] is None:
                self._shm[i] = os.open(f"{self.procs[i].db_path()}-shm", os.O_RDONLY)
            header = os.pread(self._shm[i], _WAL_INDEX_HEADER, 0)
        except OSError:  # not made yet
            return True
        if header == self._headers[i]:
            return False
        self._headers[i] = header
        return True

    def _poll_one(self, i: int, now: float) -> None:
        if not self._changed(i):
            return
        db = self._dbs[i]
        if db is None:
            path = self.procs[i].db_path()
            if not path.exists():
                return
            db = self._dbs[i] = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT pos, id FROM events WHERE pos > ? ORDER BY pos", (self._pos[i],)
            ).fetchall()
        except sqlite3.OperationalError:  # schema not there yet
            return
        for _, event_id in rows:
            lacking = self._lacking.get(event_id)
            if lacking is None:
                if event_id not in self.on_all:
                    self._early.setdefault(event_id, set()).add(i)
                continue
            if i in lacking:
                lacking.discard(i)
                self._needs[i] -= 1
                if not lacking:
                    del self._lacking[event_id]
                    self.on_all[event_id] = now
        if rows:
            self._pos[i] = rows[-1][0]

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while True:
                if not self._lacking:
                    self._expected = trio.Event()
                    await self._expected.wait()
                now = time.perf_counter()
                for i in range(len(self.procs)):
                    if self._needs[i]:
                        self._poll_one(i, now)
                await trio.sleep(self.interval)
        finally:
            for db in self._dbs:
                if db is not None:
                    db.close()
            for fd in self._shm:
                if fd is not None:
                    os.close(fd)

    async def wait(self, ids: list[bytes], timeout: float) -> list[float]:
        """perf_counter times at which each of `ids` was on all nodes."""
        self.expect(ids)
        with trio.fail_after(timeout):
            while not all(i in self.on_all for i in ids):
                await trio.sleep(self.interval)
        return [self.on_all[i] for i in ids]


async def wait_all(procs: list[Any], target: int, timeout: float, interval: float = POLL_S) -> None:
    with trio.fail_after(timeout):
        pending = list(procs)
        while pending:
            pending = [p for p in pending if p.stored() < target]
            if pending:
                await trio.sleep(interval)
