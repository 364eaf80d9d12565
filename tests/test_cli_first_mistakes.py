"""A new user's first mistakes, each as a real `castnet` process on 127.0.0.1: a bad listen or
bootstrap multiaddr, a p2p or API port another program holds (a socket this test binds), a
second node on the same port, an unreachable bootstrap peer, Ctrl-C during `castnet demo`, SIGTERM
during `castnet ai`. Each is one line on stderr and a non-zero exit (130 for Ctrl-C, 143 for
SIGTERM), and leaves nothing running."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PEER = "16Uiu2HAmHVYzjEY9twpfqUaYoMjfsYEp11YRfazMhabv5DfYXqRL"  # a well-formed peer id
PASSWORD = "first mistakes"


def castnet(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node.cli", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout)  # fmt: skip


def castnets(*commands: Sequence[str]) -> list[subprocess.CompletedProcess[str]]:
    """Independent `castnet` commands run at once: their start-ups (imports) overlap."""
    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(lambda args: castnet(*args), commands))


def one_line(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code and len(lines) == 1, (result.returncode, result.stderr)
    return lines[0]


@contextmanager
def held_port(listen: bool = True) -> Iterator[int]:
    """A port on 127.0.0.1 this test holds (listening, or only bound: connections refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        if listen:
            s.listen()
        yield int(s.getsockname()[1])


@pytest.fixture
def run_args(tmp_path: Path) -> list[str]:
    """`castnet run` as a gateway with its keystore made on first use."""
    password = tmp_path / "pw"
    password.write_text(PASSWORD)
    return ["run", "--role", "gateway", "--ledger", "embedded", "--data-dir", str(tmp_path / "gw"),
            "--init-keys",
            "--password-file", str(password)]  # fmt: skip


@pytest.mark.parametrize(
    ("flag", "value", "said"),
    [
        ("--listen", "/ip4/127.0.0.1/tcp/notaport", "bad listen address"),
        ("--listen", "127.0.0.1:4001", "bad listen address"),
        ("--bootstrap", "/ip4/127.0.0.1/tcp/4001", "it names no peer id"),
        ("--bootstrap", "hello", "bad bootstrap address 'hello'"),
    ],
)
def test_a_bad_multiaddr_is_one_line(
    flag: str, value: str, said: str, tmp_path: Path, run_args: list[str]
) -> None:
    node, run = castnets(["node", "start", "--data-dir", str(tmp_path / "n"), flag, value],
                         [*run_args, flag, value])  # fmt: skip
    line = one_line(node)
    assert line.startswith("castnet: ") and said in line and value in line
    line = one_line(run)
    assert line.startswith("castnet run: ") and said in line
    assert not (tmp_path / "gw" / "service.json").exists()  # nothing started


def test_a_p2p_port_held_by_another_program(tmp_path: Path, run_args: list[str]) -> None:
    with held_port() as port:
        listen = f"/ip4/127.0.0.1/tcp/{port}"
        node, run = castnets(["node", "start", "--data-dir", str(tmp_path / "n"), "--listen",
                              listen], [*run_args, "--listen", listen, "--no-api"])  # fmt: skip
        assert f"cannot listen on {listen}: address already in use" in one_line(node)
        assert f"cannot listen on {listen}: address already in use" in one_line(run)


def test_an_api_port_in_use(run_args: list[str]) -> None:
    with held_port() as port:
        line = one_line(castnet(*run_args, "--api-listen", f"127.0.0.1:{port}"))
    assert line == f"castnet run: API address 127.0.0.1:{port} is in use"


def test_an_unreachable_bootstrap_peer(tmp_path: Path) -> None:
    with held_port(listen=False) as port:  # bound, not listening: connections are refused
        addr = f"/ip4/127.0.0.1/tcp/{port}/p2p/{PEER}"
        line = one_line(castnet("node", "start", "--data-dir", str(tmp_path / "n"),
                                "--bootstrap", addr))  # fmt: skip
    assert line.startswith("castnet: cannot reach any bootstrap peer")
    assert f"127.0.0.1:{port}: connection refused" in line


def test_two_nodes_on_one_port(tmp_path: Path) -> None:
    with held_port(listen=False) as port:
        pass  # free again: the first node takes it
    listen = f"/ip4/127.0.0.1/tcp/{port}"
    argv = [sys.executable, "-m", "node.cli", "node", "start", "--listen", listen]
    first = subprocess.Popen([*argv, "--data-dir", str(tmp_path / "a")], cwd=ROOT, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        assert first.stdout is not None
        for line in first.stdout:  # bounded by the process: it prints its address or exits
            if line.startswith("listening"):
                break
        assert first.poll() is None, "the first node must be running"
        second = one_line(castnet("node", "start", "--data-dir", str(tmp_path / "b"), "--listen",
                                  listen))  # fmt: skip
        assert f"cannot listen on {listen}: address already in use" in second
        assert "another castnet node" in second
        assert first.poll() is None  # the first one is untouched
    finally:
        first.send_signal(signal.SIGTERM)  # our own child, by its handle
        assert first.wait(timeout=20) == 0


def _signal_after_first_segment(argv: list[str], signum: int) -> tuple[int, str]:
    """Run `castnet ARGV`, send `signum` once its first segment is done; its exit status and
    everything it wrote to stderr."""
    proc = subprocess.Popen([sys.executable, "-m", "node.cli", *argv], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        assert proc.stderr is not None and proc.stdout is not None
        seen: list[str] = []
        for line in proc.stderr:  # progress lines
            seen.append(line)
            if line.startswith("  segment "):
                break
        proc.send_signal(signum)
        _, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()  # our own child, by its handle
            proc.wait()
    return proc.returncode, "".join(seen) + rest


def test_ctrl_c_during_the_demo(tmp_path: Path) -> None:
    # one orchestrator taking one segment at a time: the job lasts seconds, so the interrupt
    # lands in it even when this process is slow to send it
    status, err = _signal_after_first_segment(
        ["demo", "--size", "320x180", "--seconds", "40", "--profiles", "144p",
         "--orchestrators", "1", "--capacity", "1",
         "--out", str(tmp_path / "out"), "--data-dir", str(tmp_path / "nodes")],
        signal.SIGINT,
    )  # fmt: skip
    assert status == 130, err
    rest = err.split("  segment ", 1)[1]
    assert rest.strip().splitlines()[-1:] == ["castnet demo: interrupted"], err
    assert "Traceback" not in err and len(rest.strip().splitlines()) <= 3, err
    assert not (tmp_path / "out").exists()  # no half-written output


def test_sigterm_during_an_ai_job(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    made = castnet("media", "sample", str(clip), "--size", "320x180", "--seconds", "30")
    assert made.returncode == 0, made.stderr
    status, err = _signal_after_first_segment(
        ["ai", "detect-faces", str(clip), "--orchestrators", "1", "--out", str(tmp_path / "out"),
         "--data-dir", str(tmp_path / "nodes")],
        signal.SIGTERM,
    )  # fmt: skip
    assert status == 143, err
    assert err.strip().splitlines()[-1] == "castnet ai: stopped by SIGTERM", err
    assert "Traceback" not in err and " ERROR " not in err, err
