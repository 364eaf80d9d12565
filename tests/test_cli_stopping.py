"""A long-running command's stop is bounded: the first SIGINT/SIGTERM cancels its work and lets
it stop cleanly; a second signal, or the limit without the clean stop finishing, ends the
process at once. Real processes and real signals; the part that never stops is a task that
shields itself from cancellation (as a library's close can)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import logging, sys, trio
    from node.cli.stopping import stop_on_signal

    async def main(stuck: bool) -> None:
        with stop_on_signal(limit_s=1.5) as stopper:
            async with trio.open_nursery() as nursery:
                async def close_that_never_ends() -> None:
                    try:
                        await trio.sleep_forever()
                    finally:
                        if stuck:
                            with trio.CancelScope(shield=True):
                                await trio.sleep_forever()
                nursery.start_soon(close_that_never_ends)
                print("ready", flush=True)
                await stopper.wait(nursery.cancel_scope)
        print("stopped cleanly", flush=True)

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    trio.run(main, sys.argv[1] == "stuck")
    """
)


def start(mode: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, mode], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, float]:
    began = time.monotonic()
    out, err = proc.communicate(timeout=20)
    return proc.returncode, out + err, time.monotonic() - began


def test_a_clean_stop_is_not_cut_short() -> None:
    proc = start("clean")
    proc.send_signal(signal.SIGTERM)
    status, output, _ = finish(proc)
    assert status == 0, output
    assert "stopped cleanly" in output and "exiting now" not in output
    assert "SIGTERM: shutting down (a second signal stops at once)" in output


def test_a_stop_that_hangs_ends_at_the_limit() -> None:
    proc = start("stuck")
    proc.send_signal(signal.SIGTERM)
    status, output, took = finish(proc)
    assert status == 1, output
    assert "the stop did not finish within 1.5 s: exiting now" in output
    assert "stopped cleanly" not in output
    assert took < 10


@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGTERM])
def test_a_second_signal_stops_at_once(second: signal.Signals) -> None:
    proc = start("stuck")
    proc.send_signal(signal.SIGINT)
    assert proc.stderr is not None  # the first one was taken: the stop is held by the close
    assert "SIGINT: shutting down" in proc.stderr.readline()
    proc.send_signal(second)
    status, output, took = finish(proc)
    assert status == 128 + second, output
    assert f"second {second.name}: exiting now" in output
    assert took < 1.4  # before the limit would have ended it


def test_sigusr1_logs_what_a_running_node_waits_for(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "node.cli.node", "node", "start", "--data-dir",
            str(tmp_path / "n"), "--listen", "/ip4/127.0.0.1/tcp/0"]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    try:
        for _ in range(50):  # its peer id, then its listen addresses
            if proc.stdout.readline().startswith("listening "):
                break
        lines: list[str] = []
        dumped = threading.Event()

        def read() -> None:
            for line in proc.stderr or []:
                lines.append(line)
                if "p2p.node.P2PNode.run" in line:
                    dumped.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        proc.send_signal(signal.SIGUSR1)
        assert dumped.wait(timeout=20), "".join(lines)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0  # the dump did not disturb the node
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = "".join(lines)
    assert "SIGUSR1: " in text and " trio tasks" in text
    # each task with where it waits: the node sleeps until stopped, the sync loop waits
    assert "p2p/node.py" in text and "task p2p.sync.Sync.run" in text
