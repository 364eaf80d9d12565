"""The whole network in one process (`castnet demo`): real libp2p hosts on 127.0.0.1, real SQLite
logs, real PyAV encodes and verification, real tickets; faults injected per orchestrator."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from node.local.demo import DemoOptions, print_summary, run_demo

ROOT = Path(__file__).resolve().parents[1]
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING|ERROR) ")

PROFILES = "180p:300k,144p"
# fault tests run on the in-memory ledger; the end-to-end test on the contracts (embedded EVM)
SMALL = {"size": "320x180", "seconds": 4.0, "profiles": PROFILES, "ticket_ev": 10**9,
         "chain": "fake"}  # fmt: skip


def _ffprobe_streams(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,width,height",
         "-of", "json", str(path)],
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return json.loads(out.stdout)["streams"]


def _demo(tmp_path: Path, **kw: Any) -> dict[str, Any]:
    options = DemoOptions(out=tmp_path / "out", data_dir=tmp_path / "nodes", **{**SMALL, **kw})
    return run_demo(options)


def test_demo_json_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "hls"
    args = ["demo", "--json", "--size", "320x180", "--seconds", "4", "--profiles", PROFILES]
    # ~28 tickets a segment at 1 in 5 to win (face value 0.01 ETH pays for the redemption gas)
    args += ["--chain", "embedded", "--ticket-ev", "0.002eth", "--price", "10gwei"]
    args += ["--out", str(out), "--data-dir", str(tmp_path / "nodes")]
    # as a user runs it: a process of its own, its terminal output captured
    proc = subprocess.run([sys.executable, "-m", "node.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)  # fmt: skip
    summary = json.loads(proc.stdout)
    assert proc.returncode == 0, (summary, proc.stderr[-2000:])
    # the nodes' log lines went to the log file, not the terminal (progress lines only there)
    assert not [line for line in proc.stderr.splitlines() if LOG_LINE.match(line)], proc.stderr
    log_file = Path(summary["log_file"])
    assert log_file.parent == tmp_path / "nodes" and LOG_LINE.match(log_file.read_text())
    # the summary a person reads: a table with units, no log lines, wei nowhere
    table = io.StringIO()
    print_summary(summary, table)
    text = table.getvalue()
    assert not [line for line in text.splitlines() if LOG_LINE.match(line)], text
    assert " wei" not in text and "ETH" in text and " CAST" in text, text
    assert re.search(r"^paid on chain +0\.\d+ ETH$", text, re.M), text  # winners paid 0.01 each
    assert re.search(r"^tickets +\d+ sent, \d+ won, \d+ redeemed \([\d.]+ wins expected\)$",
                     text, re.M), text  # fmt: skip
    assert "face value 0.01 ETH, wins 1 in 5" in text, text
    tickets = summary["tickets"]
    assert tickets["face_values_wei"] == [10**16]
    assert tickets["expected_won"] == pytest.approx(tickets["sent"] / 5, rel=1e-3)
    # had none won, the summary says why nothing was paid
    unlucky = {**summary, "paid_wei": 0, "tickets": {**tickets, "won": 0, "redeemed": 0}}
    table = io.StringIO()
    print_summary(unlucky, table)
    assert "no ticket won this time: tickets pay in expectation" in table.getvalue()
    assert "no ticket won" not in text
    seg = summary["segments"]
    assert seg["total"] == 2 and seg["completed"] == 2 and seg["failed"] == 0
    tickets = summary["tickets"]
    assert tickets["sent"] > 0 and tickets["sent"] == tickets["received"]
    assert tickets["won"] == tickets["redeemed"] and tickets["pending"] == 0
    assert tickets["won"] >= 1  # P(no win in ~56 tickets at 1/5) < 1e-5
    assert summary["paid_wei"] == sum(o["paid_wei"] for o in summary["orchestrators"])
    assert summary["paid_wei"] > 0 and "TicketBroker" in summary["chain"]
    assert summary["fees_wei"] > 0 and summary["ticket_ev_wei"] >= summary["fees_wei"]
    # rewards were claimed before the job and again a round later; on a slow machine the claims
    # of one call can straddle a round boundary, so the rounds are not a fixed number
    rounds = summary["rewards"]["rounds"]
    assert len(rounds) >= 2 and summary["rewards"]["minted_wei"] > 0
    claimed = [o["reward_rounds"] for o in summary["orchestrators"] if o["reward_rounds"]]
    assert claimed and all(r == sorted(set(r)) for r in claimed)  # at most once a round
    assert any(len(r) >= 2 for r in claimed)
    assert sorted({n for r in claimed for n in r}) == rounds
    # the delegator's bond grew
    delegator = summary["delegator"]
    assert delegator["bonded_wei"] > delegator["delegated_wei"] > 0
    assert summary["audit"]["clean"], summary["audit"]
    assert set(summary["audit"]["nodes"]) == {"gateway", "orchestrator0", "orchestrator1",
                                              "orchestrator2", "delegator"}  # fmt: skip
    assert len(set(summary["events"].values())) == 1  # every log converged to the same events
    master = out / "master.m3u8"
    if shutil.which("ffprobe"):
        streams = _ffprobe_streams(master)
        sizes = {(s["width"], s["height"]) for s in streams if s["codec_type"] == "video"}
        assert sizes == {(320, 180), (256, 144)}
        assert any(s["codec_type"] == "audio" for s in streams)
    for folder in ("180p_300k", "144p"):
        playlist = (out / folder / "index.m3u8").read_text()
        assert playlist.count("#EXTINF") == 2 and "#EXT-X-ENDLIST" in playlist


def test_wrong_renditions_are_caught_and_the_cheat_is_dropped(tmp_path: Path) -> None:
    summary = _demo(tmp_path, seconds=6.0, faults=("wrong-renditions",))
    assert summary["segments"] == {"total": 3, "completed": 3, "failed": 0}
    cheat, *honest = summary["orchestrators"]
    assert cheat["failed_verdicts"] >= 1 and cheat["suspended"]
    assert cheat["segments"] == 0
    assert sum(o["segments"] for o in honest) == 3
    # the cheat's outputs were rejected; an honest orchestrator may also see a failed verdict
    # when a loaded machine lets its ticket params expire, but it is never suspended
    assert cheat["address"] in summary["rejected_orchestrators"]
    assert not any(o["suspended"] for o in honest)
    assert summary["audit"]["clean"], summary["audit"]


def test_orchestrator_dying_mid_job_segments_finish_elsewhere(tmp_path: Path) -> None:
    summary = _demo(tmp_path, seconds=6.0, faults=("die-mid-job",))
    assert summary["segments"] == {"total": 3, "completed": 3, "failed": 0}
    dead, *alive = summary["orchestrators"]
    assert not dead["alive"] and dead["segments"] == 0 and dead["suspended"]
    assert sum(o["segments"] for o in alive) == 3
    assert all(o["tickets_won"] == o["tickets_redeemed"] for o in alive)
    assert summary["audit"]["clean"], summary["audit"]
    playlist = (tmp_path / "out" / "144p" / "index.m3u8").read_text()
    assert playlist.count("#EXTINF") == 3  # no segment missing


def test_gateway_without_deposit_is_refused_clearly(tmp_path: Path) -> None:
    summary = _demo(tmp_path, gateway_deposit=0, gateway_reserve=0)
    assert not summary["ok"]
    assert summary["segments"]["completed"] == 0
    assert summary["tickets"]["sent"] == 0
    assert "max float 0 wei cannot carry a ticket" in summary["error"], summary["error"]
    assert not (tmp_path / "out").exists()  # nothing half-written
    assert summary["audit"]["clean"], summary["audit"]
