"""Crash safety: SIGKILL a process that appends in a loop; every acknowledged append survives."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import trio

from events.audit import audit
from storage.store import EventStore

WRITER = textwrap.dedent(
    """
    import random, sys
    from events import kinds as k
    from events.author import Author
    from events.crypto import LocalKeySigner, keccak256
    from storage.store import EventStore, Outcome

    store = EventStore.open_dir(sys.argv[1])
    rng = random.Random(1)
    authors = [Author(LocalKeySigner(keccak256(b"crash%d" % i))) for i in range(3)]
    n = 0
    for _ in range(100_000):  # bounded: the test kills it long before
        batch = []
        for _ in range(rng.randint(1, 40)):
            n += 1
            batch.append(rng.choice(authors).sign(k.Offer(n, 1, (), 1, "x" * (n % 300), ()), n))
        results = store.append(batch)
        assert all(r.outcome is Outcome.APPENDED for r in results)
        sys.stdout.write("".join(e.id.hex() + "\\n" for e in batch))
        sys.stdout.flush()
    """
)


async def test_sigkill_loses_no_acknowledged_append(tmp_path: Path) -> None:
    data = tmp_path / "node"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(data)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1],
    )
    acked: list[bytes] = []
    try:
        with trio.fail_after(60):
            assert proc.stdout is not None
            while len(acked) < 1500:
                line = await trio.to_thread.run_sync(proc.stdout.readline)
                assert line, "writer exited early"
                acked.append(bytes.fromhex(line.decode().strip()))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()  # type: ignore[union-attr]
    with EventStore.open_dir(data) as store:
        assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = [raw for _, raw in store.read()]
        for event_id in acked:
            assert store.get(event_id) is not None
        assert len(stored) >= len(acked)
        report = audit(store.read())
        assert report.clean, [p.describe() for p in report.problems]
        assert report.events == len(stored)


def test_appends_are_durable_on_power_loss_not_only_on_process_death(tmp_path: Path) -> None:
    """A SIGKILL cannot tell synchronous=FULL from OFF (the OS still holds the pages); a power loss
    can. What makes an acknowledged append survive one is WAL with a full fsync per commit."""
    with EventStore.open_dir(tmp_path / "node") as store:
        assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
