"""A gateway SIGKILLed mid-job resumes from its log and its job journal: segments it had verified
are not posted, sent or paid for again, and the HLS output is completed from the renditions it
kept. Counted in the gateway's own log: JobPosted per segment, accepted verdicts per segment,
and who the tickets issued after the restart pay for."""

from __future__ import annotations

import json
import socket
import sqlite3
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import trio
from api_client import request, request_json, upload, wait_job
from test_node_service import (
    FAST_KDF,
    PASSWORD,
    bootstrap_addr,
    free_port,
    node_process,
    node_processes,
    wait_for,
    write_config,
)

from events import kinds as k
from events.envelope import decode
from events.fold import apply
from events.state import ASSIGNED, CLAIMED, EMPTY, RESULTED, State
from node.audit.log import audit_path
from node.keystore import create_keystore, load_keystore
from node.local.demo import generate_clip
from storage.store import DB_NAME
from tests.anvil_chain import GATEWAY_ECONOMICS, orchestrator_economics, protocol_on_anvil

SEGMENTS = 5  # a 10 s clip cut in 2 s segments
MiB = 1024 * 1024


def _speaking_for(db: sqlite3.Connection, principal: bytes) -> list[bytes]:
    """`principal` and its job chains (the authors whose binding names it)."""
    rows = db.execute("SELECT author, raw FROM events WHERE seq = 1 AND kind = ?",
                      (k.JobChainOpened.KIND,)).fetchall()  # fmt: skip
    chains = [bytes(a) for a, raw in rows
              if getattr(k.read_body(decode(raw)), "principal", None) == principal]  # fmt: skip
    return [principal, *chains]


def own_events(data_dir: Path, author: bytes) -> list[tuple[int, k.Body]]:
    """(log position, body) of the events `author` signed or its job chains signed for it, in a
    node's log, read by a read-only connection."""
    path = data_dir / DB_NAME
    if not path.exists():
        return []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        authors = _speaking_for(db, author)
        marks = ",".join("?" * len(authors))
        rows = db.execute(f"SELECT pos, raw FROM events WHERE author IN ({marks}) ORDER BY pos",
                          authors).fetchall()  # fmt: skip
    return [(pos, k.read_body(decode(raw))) for pos, raw in rows]


def folded(data_dir: Path) -> State:
    with sqlite3.connect(f"file:{data_dir / DB_NAME}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT raw FROM events ORDER BY pos").fetchall()
    state = EMPTY
    for (raw,) in rows:
        state = apply(state, decode(raw))
    return state


def accepted_jobs(events: list[tuple[int, k.Body]]) -> list[bytes]:
    return [b.job_id for _, b in events if isinstance(b, k.JobVerdict) and b.accepted]


async def test_gateway_killed_mid_job_resumes_without_posting_or_paying_twice(
    tmp_path: Path,
) -> None:
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD)
    clip = generate_clip(tmp_path / "clip.mp4", "320x180", 2.0 * SEGMENTS)
    gw_key = create_keystore(tmp_path / "gw" / "gateway" / "keystore.json", PASSWORD, **FAST_KDF)
    orch_key = create_keystore(tmp_path / "orch" / "orchestrator" / "keystore.json", PASSWORD,
                               **FAST_KDF)  # fmt: skip
    network = '[p2p]\nnetwork = "restart-test"\n'
    gw_port = free_port()  # fixed, so the orchestrator can redial the restarted gateway
    keys = [load_keystore(tmp_path / role / role_dir / "keystore.json", PASSWORD)
            for role, role_dir in (("gw", "gateway"), ("orch", "orchestrator"))]  # fmt: skip
    assert orch_key  # its address; the chain needs the private keys
    with protocol_on_anvil(tmp_path, keys[:1], keys[1:]) as ledger:
        await _killed_mid_job(tmp_path, pw, clip, gw_key, network, gw_port, ledger)


async def _killed_mid_job(
    tmp_path: Path, pw: Path, clip: Path, gw_key: bytes, network: str, gw_port: int, ledger: str
) -> None:
    gw_conf = write_config(tmp_path / "gw.toml", ["gateway"], network
                           + f'listen = ["/ip4/127.0.0.1/tcp/{gw_port}"]\n' + ledger
                           + '[gateway]\nprofiles = "180p:300k,144p"\npreset = "slower"\n'
                           + GATEWAY_ECONOMICS
                           + '[api]\nlisten = "127.0.0.1:0"\nrequire_token = false\n')  # fmt: skip
    gw_dir = tmp_path / "gw" / "gateway"
    orch_dir = tmp_path / "orch" / "orchestrator"

    # one slot: segments are done one after another, so the kill lands inside the job; started
    # with the gateway, the orchestrator dials it until it answers
    gw_addr = bootstrap_addr(gw_dir, gw_port)
    orch_conf = write_config(tmp_path / "orch.toml", ["orchestrator"],
                             f'{network}bootstrap = ["{gw_addr}"]\nrequire_bootstrap = false\n'
                             + ledger + '[orchestrator]\ncapacity = 1\n'
                             + orchestrator_economics("1.5e10"))  # fmt: skip
    async with node_processes([gw_conf, orch_conf], pw) as (gateway, orch):
        assert gateway.p2p_addr == gw_addr
        api = gateway.value("api ")
        job = await trio.to_thread.run_sync(upload, api, clip.read_bytes())
        await wait_for(lambda: len(accepted_jobs(own_events(gw_dir, gw_key))) >= 1, 120)
        gateway.process.kill()  # SIGKILL, our own child, by its handle
        await gateway.process.wait()

        before = own_events(gw_dir, gw_key)
        state = folded(gw_dir)
        segments = {b.input_hash for _, b in before if isinstance(b, k.JobPosted)}
        hash_of = dict(_hashes(gw_dir, gw_key))
        verified = {hash_of[j] for j in accepted_jobs(before)}
        open_jobs = {j for j, s in state.jobs.items()
                     if j in hash_of and s.status in (ASSIGNED, CLAIMED, RESULTED)}  # fmt: skip
        open_at_kill = {hash_of[j] for j in open_jobs}
        # a segment is posted (in the job chain towards its orchestrator) once one is picked
        assert 1 <= len(segments) <= SEGMENTS
        assert 1 <= len(verified) < SEGMENTS, "the kill must land inside the job"
        last_seq = before[-1][0]  # a log position

        async with node_process(gw_conf, pw) as again:
            assert "resumed 1 unfinished job(s)" in again.lines
            api2 = again.value("api ")
            record = await wait_job(api2, job["id"], 180)
            assert record["status"] == "done", (json.dumps(record, indent=1), again.err())
            assert record["progress"]["segments_done"] == SEGMENTS
            assert record["runs"] == 2
            for folder in ("180p_300k", "144p"):
                url = f"/v1/jobs/{job['id']}/{folder}/index.m3u8"
                status, playlist = await trio.to_thread.run_sync(request, api2, "GET", url)
                assert status == 200 and playlist.count(b"#EXTINF") == SEGMENTS
                for seq in range(SEGMENTS):
                    url = f"/v1/jobs/{job['id']}/{folder}/seg_{seq:05d}.ts"
                    status, data = await trio.to_thread.run_sync(request, api2, "GET", url)
                    assert status == 200 and data[:1] == b"\x47", url
            job_dir = gw_dir / "jobs" / job["id"]
            assert not (job_dir / "segments").exists()  # the journal went with the job
            assert not (job_dir / "input").exists()  # the upload, once the job finished
        orch_address = bytes.fromhex(orch.value("orchestrator ")[2:])

    after = own_events(gw_dir, gw_key)
    hash_of = dict(_hashes(gw_dir, gw_key))
    segments = {b.input_hash for _, b in after if isinstance(b, k.JobPosted)}
    assert len(segments) == SEGMENTS
    # each segment was accepted exactly once, over both runs
    assert Counter(hash_of[j] for j in accepted_jobs(after)) == Counter(segments)
    # a job open at the kill that the orchestrator took (its tickets are taken once the whole
    # segment is in) is not posted again: its result is fetched. One whose upload the kill cut
    # was never taken, and is posted anew
    assert open_at_kill, "the kill must leave an attempt open"
    paid = {b.job_id for _, b in own_events(orch_dir, orch_address)
            if isinstance(b, k.TicketReceived)}  # fmt: skip
    taken = open_jobs & paid
    assert taken, "the kill must leave a job the orchestrator took open"
    taken_at_kill = {hash_of[j] for j in taken}
    per_segment = Counter(b.input_hash for _, b in after if isinstance(b, k.JobPosted))
    again = {h for h, n in per_segment.items() if n > 1}
    assert set(per_segment.values()) <= {1, 2}, per_segment
    assert again <= {hash_of[j] for j in open_jobs - paid}, (per_segment, open_at_kill, paid)
    # the very jobs taken at the kill were accepted: their results fetched, not computed again
    assert taken <= set(accepted_jobs(after)), taken
    # after the restart, nothing is assigned or paid for a segment verified before the kill
    resumed = [b for seq, b in after if seq > last_seq]
    assert not any(isinstance(b, k.JobPosted) and b.input_hash in verified for b in resumed)
    for body in resumed:
        if isinstance(body, k.JobAssigned | k.TicketIssued):
            # nothing paid again for a segment verified, or taken, at the kill
            assert hash_of[body.job_id] not in verified | taken_at_kill, body
    tickets = [b for b in resumed if isinstance(b, k.TicketIssued)]
    assert tickets and {b.recipient for b in tickets} == {orch_address}
    for data_dir in (gw_dir, orch_dir):
        report = audit_path(data_dir)
        assert report.clean, (data_dir, [p.describe() for p in report.problems],
                              report.violations)  # fmt: skip


async def test_an_upload_cut_by_a_kill_is_removed_at_the_next_start(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD)
    create_keystore(tmp_path / "gw" / "gateway" / "keystore.json", PASSWORD, **FAST_KDF)
    gw_conf = write_config(
        tmp_path / "gw.toml",
        ["gateway"],
        '[p2p]\nnetwork = "upload-test"\n[ledger]\nkind = "embedded"\n'
        '[api]\nlisten = "127.0.0.1:0"\nrequire_token = false\n',
    )
    jobs = tmp_path / "gw" / "gateway" / "jobs"
    async with node_process(gw_conf, pw) as gateway:
        url = urlsplit(gateway.value("api "))
        with socket.create_connection((url.hostname, url.port), timeout=10) as conn:
            head = (b"POST /v1/transcode HTTP/1.1\r\nHost: %s\r\nContent-Type: video/mp4\r\n"
                    b"Content-Length: %d\r\n\r\n" % (url.netloc.encode(), 8 * MiB))  # fmt: skip
            await trio.to_thread.run_sync(conn.sendall, head + bytes(5 * MiB // 2))
            # the first bytes are on disk; the rest never comes
            await wait_for(lambda: any(p.stat().st_size for p in jobs.glob("*/*")), 30)
            gateway.process.kill()  # SIGKILL, our own child, by its handle
            await gateway.process.wait()
        assert [p.name for p in jobs.iterdir()]  # what the kill left behind
        async with node_process(gw_conf, pw) as again:
            assert list(jobs.iterdir()) == []
            status, listing = await trio.to_thread.run_sync(
                request_json, again.value("api "), "GET", "/v1/jobs"
            )
            assert status == 200 and listing["jobs"] == [], listing


def _hashes(data_dir: Path, author: bytes) -> list[tuple[bytes, bytes]]:
    """(job id, segment input hash) of every JobPosted by `author`."""
    path = data_dir / DB_NAME
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        authors = _speaking_for(db, author)
        marks = ",".join("?" * len(authors))
        rows = db.execute(f"SELECT raw FROM events WHERE author IN ({marks}) AND kind = ?",
                          (*authors, k.JobPosted.KIND)).fetchall()  # fmt: skip
    out = []
    for (raw,) in rows:
        event = decode(raw)
        body = k.read_body(event)
        assert isinstance(body, k.JobPosted)
        out.append((event.id, body.input_hash))
    return out
