"""Faults across OS processes: an orchestrator SIGKILLed while it transcodes a segment. The
gateway must finish the job on the other orchestrator with no segment missing, and every log,
the killed node's included, must audit clean."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import trio
from api_client import request, upload, wait_job
from test_node_service import (
    FAST_KDF,
    PASSWORD,
    bootstrap_addr,
    free_port,
    node_processes,
    wait_for,
    write_config,
)

from events import kinds as k
from node.audit.log import audit_path
from node.keystore import create_keystore, load_keystore
from node.local.demo import generate_clip
from storage.store import DB_NAME
from tests.anvil_chain import GATEWAY_ECONOMICS, orchestrator_economics, protocol_on_anvil


def jobs_in_hand(data_dir: Path) -> int:
    """Segments an orchestrator has been paid for (TicketReceived, one job each at least) but
    not yet answered (JobResult), read from its log by a read-only connection."""
    path = data_dir / DB_NAME
    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        counts = dict(db.execute("SELECT kind, COUNT(*) FROM events GROUP BY kind").fetchall())
    return int(counts.get(k.JobAssigned.KIND, 0) > counts.get(k.JobResult.KIND, 0))


@pytest.fixture
def chain() -> Iterator[ExitStack]:
    """Where a test enters the chain it starts (anvil is stopped after the test)."""
    with ExitStack() as stack:
        yield stack


async def test_orchestrator_killed_mid_job_the_gateway_finishes_elsewhere(
    tmp_path: Path, chain: ExitStack
) -> None:
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD)
    # a slow preset stretches each segment's transcode, so the kill lands inside one
    clip = generate_clip(tmp_path / "clip.mp4", "640x360", 8.0)
    stores = [tmp_path / name / role / "keystore.json"
              for name, role in (("gw", "gateway"), ("victim", "orchestrator"),
                                 ("survivor", "orchestrator"))]  # fmt: skip
    for path in stores:
        create_keystore(path, PASSWORD, **FAST_KDF)
    keys = [load_keystore(path, PASSWORD) for path in stores]
    ledger = chain.enter_context(protocol_on_anvil(tmp_path, keys[:1], keys[1:]))
    economics = orchestrator_economics("2.5e9")  # wei per pixel, for this ladder
    network = '[p2p]\nnetwork = "fault-test"\n'
    gw_port = free_port()
    # the three processes start at once: the gateway waits for both offers before the job
    gw_conf = write_config(tmp_path / "gw.toml", ["gateway"], ledger + network
                           + f'listen = ["/ip4/127.0.0.1/tcp/{gw_port}"]\n'
                           + f'[gateway]\nprofiles = "360p,240p"\npreset = "slower"\n'
                           f'min_offers = 2\n{GATEWAY_ECONOMICS}'
                           '[api]\nlisten = "127.0.0.1:0"\nrequire_token = false\n')  # fmt: skip

    def orch_conf(name: str, gateway_addr: str) -> Path:
        body = (f'{ledger}{network}bootstrap = ["{gateway_addr}"]\nrequire_bootstrap = false\n'
                f'[orchestrator]\n{economics}capacity = 1\n')  # fmt: skip
        return write_config(tmp_path / f"{name}.toml", ["orchestrator"], body)

    victim_dir = tmp_path / "victim" / "orchestrator"
    gw_addr = bootstrap_addr(tmp_path / "gw" / "gateway", gw_port)
    confs = [gw_conf, orch_conf("victim", gw_addr), orch_conf("survivor", gw_addr)]
    async with node_processes(confs, pw) as (gateway, victim, survivor):
        assert gateway.p2p_addr == gw_addr
        api = gateway.value("api ")
        job = await trio.to_thread.run_sync(upload, api, clip.read_bytes())
        # the victim has accepted a segment and not answered it yet: kill it there
        await wait_for(lambda: jobs_in_hand(victim_dir) > 0, 60)
        victim.process.kill()  # SIGKILL, our own child, by its handle
        await victim.process.wait()
        record = await wait_job(api, job["id"], 120)
        assert record["status"] == "done", json.dumps(record, indent=1)
        progress = record["progress"]
        assert progress["segments_done"] == progress["segments_total"] == 4
        survivor_address = "0x" + survivor.value("orchestrator ")[2:].lower()
        assert survivor_address in record["orchestrators"]
        status, master = await trio.to_thread.run_sync(request, api, "GET", record["playlist"])
        assert status == 200 and b"360p/index.m3u8" in master
        for index in range(4):
            url = f"/v1/jobs/{job['id']}/240p/seg_{index:05d}.ts"
            status, segment = await trio.to_thread.run_sync(request, api, "GET", url)
            assert status == 200 and segment[:1] == b"\x47", url
    for data_dir in (
        tmp_path / "gw" / "gateway",
        victim_dir,
        tmp_path / "survivor" / "orchestrator",
    ):
        report = audit_path(data_dir)
        assert report.clean, (data_dir, [p.describe() for p in report.problems])
