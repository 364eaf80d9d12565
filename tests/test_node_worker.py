"""Remote workers (`castnet worker`): the `/castnet/worker/1` protocol in-process (registration,
bad tasks answered with clear refusals, a real transcode), and as real OS processes: a gateway,
an orchestrator and a worker attached to it transcode a clip over HTTP with the segments
computed by the worker; a worker SIGKILLed mid-segment is taken over in-process by the
orchestrator; a worker whose peer id is not listed is refused and exits."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio
from api_client import request, upload, wait_job
from test_node_service import (
    FAST_KDF,
    PASSWORD,
    bootstrap_addr,
    free_port,
    node_process,
    wait_for,
    write_config,
)

from events.crypto import LocalKeySigner, to_checksum
from media.source import probe
from node.config import ConfigError, build_config
from node.keystore import create_keystore, load_keystore
from node.local.demo import generate_clip
from node.orchestrator.worker import Worker, WorkerConfig
from node.orchestrator.workers import TASK, TASK_PROTOCOL, WorkerFailed, WorkerPool
from node.protocol import REFUSED
from p2p.config import P2PConfig
from p2p.framing import MessageStream
from p2p.identity import load_or_create_identity, peer_id_of
from p2p.node import open_node
from tests.anvil_chain import GATEWAY_ECONOMICS, orchestrator_economics, protocol_on_anvil

ROOT = Path(__file__).resolve().parents[1]
NETWORK = "worker-test"


# -- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("orch", "message"),
    [
        ({"workers": ["not-a-peer-id"]}, "orchestrator.workers: 'not-a-peer-id' is not a libp2p"),
        ({"workers": "16Uiu2HAm"}, "is not a libp2p peer id"),
        ({"allow_any_worker": "yes"}, "allow_any_worker must be true or false"),
        ({"worker_timeout_s": 0}, "worker_timeout_s must be a number >= 1.0"),
    ],
)
def test_worker_config_errors(orch: dict[str, Any], message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config({"roles": ["orchestrator"], "data_dir": "d", "orchestrator": orch}, tmp_path)


def test_worker_config_accepts_peer_ids(tmp_path: Path) -> None:
    peer = peer_id_of(load_or_create_identity(tmp_path / "w")).to_base58()
    raw = {"roles": ["orchestrator"], "data_dir": "d",
           "orchestrator": {"workers": [peer], "allow_any_worker": False}}  # fmt: skip
    config = build_config(raw, tmp_path)
    assert config.orchestrator.workers == (peer,) and not config.orchestrator.allow_any_worker


# -- the protocol in-process -----------------------------------------------------------------


async def test_worker_protocol_bad_tasks_get_clear_refusals(tmp_path: Path) -> None:
    clip = generate_clip(tmp_path / "seg.ts", "320x180", 1.0)
    p2p = P2PConfig(network=NETWORK)
    async with open_node(tmp_path / "orch", p2p) as node:
        pool = WorkerPool(node, allow_any=True, task_timeout_s=30)
        node.running.host.set_stream_handler("/castnet/worker/1", pool.handle_register)
        lines: list[str] = []
        config = WorkerConfig(node.addrs[0], tmp_path / "worker", 1, "software",
                              ("transcode:h264",), p2p)  # fmt: skip
        worker = Worker(config, lines.append)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.run)
            with trio.fail_after(10):
                await worker.registered.wait()
            await wait_for(lambda: worker.peer_id in pool.workers, 5)
            attached = pool.workers[worker.peer_id]
            assert attached.capabilities == ("transcode:h264",) and attached.capacity == 1
            # 1. garbage instead of a task message: a refusal naming the problem
            stream = await node.running.host.new_stream(attached.peer, [TASK_PROTOCOL])
            ms = MessageStream(stream, 1 << 20, 10)
            await ms.send([TASK, 99, "144p"])
            reply = await ms.receive()
            assert reply[0] == REFUSED and reply[1] == "bad-task" and "expected [TASK" in reply[2]
            await stream.close()
            # 2. a well-formed task with a bad ladder, and one with bytes that are no video
            taken = pool.acquire()
            assert taken is attached and pool.acquire() is None  # capacity 1
            with pytest.raises(WorkerFailed, match="bad-task: bad profiles '999x'"):
                await pool.transcode(attached, clip.read_bytes(), "999x", "veryfast", 1)
            with pytest.raises(WorkerFailed, match="failed: transcode failed"):
                await pool.transcode(attached, b"\x00" * 5000, "144p", "veryfast", 1)
            # 3. the worker is still up, and a real segment comes back whole
            result = await pool.transcode(attached, clip.read_bytes(), "144p", "veryfast", 1)
            pool.release(attached)
            (rendition,) = result.renditions
            assert (rendition.width, rendition.height) == (256, 144)
            assert rendition.frame_count == 30 and rendition.has_audio
            assert result.source_width == 320 and rendition.data[:1] == b"\x47"
            assert attached.served == 1 and attached.failed == 2
            assert worker.stats.segments == 1 and worker.stats.refused == 3
            assert any(line.startswith("segment ") and " done: 1 renditions" in line
                       for line in lines)  # fmt: skip
            nursery.cancel_scope.cancel()


# -- real processes --------------------------------------------------------------------------


class Proc:
    """A child process whose stdout lines are collected as they come."""

    def __init__(self, process: trio.Process, stderr: Path) -> None:
        self.process = process
        self.lines: list[str] = []
        self.stderr = stderr
        self.changed = trio.Event()

    async def wait_until(self, predicate: Any, timeout: float) -> None:
        """Wake on each new output line (no polling delay), until `predicate()` holds."""
        with trio.fail_after(timeout):
            while not predicate():
                await self.changed.wait()

    def has(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines)

    def err(self) -> str:
        return self.stderr.read_text(errors="replace")


@asynccontextmanager
async def spawn(argv: list[str], stderr: Path) -> AsyncIterator[Proc]:
    with stderr.open("wb") as err:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "node.cli", *argv], cwd=ROOT, stdout=subprocess.PIPE,
            stderr=err,
        )  # fmt: skip
    proc = Proc(process, stderr)

    async def pump() -> None:
        assert process.stdout is not None
        buffer = b""
        async for chunk in process.stdout:
            buffer += chunk
            *done, buffer = buffer.split(b"\n")
            proc.lines += [line.decode(errors="replace") for line in done]
            with stderr.with_suffix(".out").open("ab") as out:  # kept for a failure's post-mortem
                out.write(b"".join(line + b"\n" for line in done))
            proc.changed.set()
            proc.changed = trio.Event()
        proc.changed.set()  # the process closed its output

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump)
            yield proc
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()  # only this test's own process, by its handle
            await process.wait()


@pytest.fixture
def chain() -> Iterator[ExitStack]:
    """Where a test enters the chain it starts (anvil is stopped after the test)."""
    with ExitStack() as stack:
        yield stack


async def test_worker_process_computes_and_orchestrator_takes_over_when_killed(
    tmp_path: Path, chain: ExitStack
) -> None:
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD)
    clip = generate_clip(tmp_path / "clip.mp4", "640x360", 4.0)
    big = generate_clip(tmp_path / "big.mp4", "1920x1080", 4.0)
    stores = [tmp_path / "gw" / "gateway" / "keystore.json",
              tmp_path / "orch" / "orchestrator" / "keystore.json"]  # fmt: skip
    for path in stores:
        create_keystore(path, PASSWORD, **FAST_KDF)
    keys = [load_keystore(path, PASSWORD) for path in stores]
    ledger = chain.enter_context(protocol_on_anvil(tmp_path, keys[:1], keys[1:]))
    economics = orchestrator_economics("6e9")  # wei per pixel, for this ladder
    worker_dir = tmp_path / "worker"
    worker_id = peer_id_of(load_or_create_identity(worker_dir)).to_base58()
    net = f'[p2p]\nnetwork = "{NETWORK}"\n'
    gw_port = free_port()
    gw_conf = write_config(tmp_path / "gw.toml", ["gateway"], ledger + net
                           + f'listen = ["/ip4/127.0.0.1/tcp/{gw_port}"]\n'
                           f'[gateway]\nprofiles = "240p,144p"\n{GATEWAY_ECONOMICS}'
                           '[api]\nlisten = "127.0.0.1:0"\nrequire_token = false\n')  # fmt: skip
    # the orchestrator starts with the gateway: it dials the gateway's address (known in advance)
    # until it answers
    gw_addr = bootstrap_addr(tmp_path / "gw" / "gateway", gw_port)
    body = (f'{ledger}{net}bootstrap = ["{gw_addr}"]\nrequire_bootstrap = false\n'
            f'listen = ["/ip4/127.0.0.1/tcp/{free_port()}"]\n'
            f'[orchestrator]\n{economics}workers = ["{worker_id}"]\n'
            f'[metrics]\nlisten = "127.0.0.1:{free_port()}"\n')  # fmt: skip
    orch_conf = write_config(tmp_path / "orch.toml", ["orchestrator"], body)
    orch_argv = ["run", "--config", str(orch_conf), "--password-file", str(pw)]
    async with (
        spawn(orch_argv, tmp_path / "orch.err") as orch,
        node_process(gw_conf, pw) as gateway,
    ):
        assert gateway.p2p_addr == gw_addr
        api = gateway.value("api ")
        await wait_for(lambda: orch.has("ready") or orch.process.returncode is not None, 40)
        assert orch.has("ready"), orch.err()
        orch_addr = next(line.split()[1] for line in orch.lines if "listening" in line)
        worker_argv = ["worker", "--orchestrator", orch_addr, "--data-dir", str(worker_dir),
                       "--encoder", "software", "--network", NETWORK,
                       "--capacity", "2"]  # fmt: skip
        metrics_argv = [*worker_argv, "--metrics-listen", f"127.0.0.1:{free_port()}"]
        async with spawn(metrics_argv, tmp_path / "worker.err") as worker:
            await wait_for(lambda: worker.has("registered with orchestrator"), 30)
            assert worker.has(f"castnet worker {worker_id}")
            # 1. a clip through the gateway: every segment computed by the worker
            job = await trio.to_thread.run_sync(upload, api, clip.read_bytes())
            # meanwhile a worker the orchestrator does not list is refused and exits
            stranger_argv = ["worker", "--orchestrator", orch_addr, "--data-dir",
                             str(tmp_path / "stranger"), "--network", NETWORK]  # fmt: skip
            async with spawn(stranger_argv, tmp_path / "stranger.err") as stranger:
                with trio.fail_after(30):
                    assert await stranger.process.wait() == 2
            assert "refused by the orchestrator: peer" in stranger.err()
            assert "is not in this orchestrator's orchestrator.workers" in stranger.err()
            record = await wait_job(api, job["id"], 60)
            assert record["status"] == "done", json.dumps(record, indent=1)
            total = record["progress"]["segments_total"]
            assert record["progress"]["segments_done"] == total == 2
            assert record["orchestrators"] == [to_checksum(LocalKeySigner(keys[1]).address).lower()]
            # the gateway sends both segments at once (orchestrator capacity 2): both run on
            # the worker (capacity 2), none in-process
            with trio.move_on_after(5):
                await wait_for(lambda: worker.count(" done: 2 renditions") == total, 5)
            assert worker.count(" done: 2 renditions") == total, (worker.lines, orch.err())
            assert worker.count(" start (") == total
            await _check_hls(api, record, job["id"])
            # both serve Prometheus metrics without a gateway API: the worker's counters
            # and the orchestrator's (segments computed on the worker, tickets received)
            worker_metrics = await _scrape(worker, "  metrics ")
            assert worker_metrics['castnet_worker_segments_total{outcome="done"}'] == total
            orch_metrics = await _scrape(orch, "metrics ")
            where = 'castnet_orchestrator_computed_segments_total{where="worker"}'
            assert orch_metrics[where] == total
            assert orch_metrics["castnet_tickets_received_total"] > 0
            assert orch_metrics['castnet_gossip_peers{role="orchestrator"}'] >= 1
            # 2. SIGKILL the worker as it starts a segment: the orchestrator finishes it
            #    (a 1080p source, so that the worker is surely still busy with it)
            second = await trio.to_thread.run_sync(upload, api, big.read_bytes())
            await worker.wait_until(lambda: worker.count(" start (") > total, 30)
            worker.process.send_signal(signal.SIGKILL)
            await worker.process.wait()
            killed_tag = [line for line in worker.lines if " start (" in line][-1].split()[1]
            assert not worker.has(f"segment {killed_tag} done"), "the kill came too late"
            again = await wait_job(api, second["id"], 60)
            assert again["status"] == "done", again
            assert again["progress"]["segments_done"] == again["progress"]["segments_total"]
            await _check_hls(api, again, second["id"])
            assert "worker failed mid-segment" in orch.err()
            assert "computing it in-process" in orch.err()
            assert "Traceback" not in orch.err()
        # 3. a new worker process with the same identity attaches again; the orchestrator
        #    goes away and comes back: the worker redials with backoff and re-registers
        async with spawn(worker_argv, tmp_path / "worker2.err") as worker:
            await worker.wait_until(lambda: worker.has("registered with orchestrator"), 30)
            await _term(orch.process)
            await worker.wait_until(lambda: worker.has("unreachable"), 20)
            async with spawn(orch_argv, tmp_path / "orch2.err") as orch2:
                await worker.wait_until(lambda: worker.count("registered with") >= 2, 40)
                await _term(worker.process)  # a clean shutdown on SIGTERM
                await worker.wait_until(lambda: worker.has("stopped"), 5)
                await _term(orch2.process)


async def _scrape(proc: Proc, prefix: str) -> dict[str, float]:
    """GET /metrics at the URL a process printed after `prefix`: {sample with labels: value}."""
    line = next(line for line in proc.lines if line.startswith(prefix) and "/metrics" in line)
    url = urlsplit(line.split()[-1])
    base = f"http://{url.hostname}:{url.port}"
    status, body = await trio.to_thread.run_sync(lambda: request(base, "GET", "/metrics"))
    assert status == 200
    samples = {}
    for text in body.decode().splitlines():
        if text and not text.startswith("#"):
            name, value = text.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


async def _term(process: trio.Process) -> None:
    process.send_signal(signal.SIGTERM)
    with trio.fail_after(20):
        assert await process.wait() == 0


async def _check_hls(api: str, record: dict[str, Any], job_id: str) -> None:
    status, master = await trio.to_thread.run_sync(request, api, "GET", record["playlist"])
    assert status == 200 and b"240p/index.m3u8" in master and b"144p/index.m3u8" in master
    for rung, height in (("240p", 240), ("144p", 144)):
        status, playlist = await trio.to_thread.run_sync(
            request, api, "GET", f"/v1/jobs/{job_id}/{rung}/index.m3u8"
        )
        assert status == 200 and playlist.count(b"#EXTINF") == 2
        status, segment = await trio.to_thread.run_sync(
            request, api, "GET", f"/v1/jobs/{job_id}/{rung}/seg_00001.ts"
        )
        assert status == 200 and segment[:1] == b"\x47"
        info = await trio.to_thread.run_sync(probe, segment)
        assert info.height == height and info.duration == pytest.approx(2.0, abs=0.1)
