"""The whole network in one process (`castnet demo`): real libp2p hosts on 127.0.0.1, real SQLite
logs, real PyAV encodes and verification, real tickets; faults injected per orchestrator."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from node.cli.main import main
from node.local.demo import DemoOptions, run_demo

PROFILES = "180p:300k,144p"
# every demo runs on the protocol contracts (embedded EVM)
SMALL = {"size": "320x180", "seconds": 4.0, "profiles": PROFILES}


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


def test_demo_json_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "hls"
    args = ["demo", "--json", "--size", "320x180", "--seconds", "4", "--profiles", PROFILES]
    # ~28 tickets a segment at 1 in 5 to win (face value 0.01 ETH pays for the redemption gas)
    args += ["--ticket-ev", str(2 * 10**15), "--price", str(10**10)]
    args += ["--out", str(out), "--data-dir", str(tmp_path / "nodes")]
    code = main(args)
    summary = json.loads(capsys.readouterr().out)
    assert code == 0, summary
    seg = summary["segments"]
    assert seg["total"] == 2 and seg["completed"] == 2 and seg["failed"] == 0
    tickets = summary["tickets"]
    assert tickets["sent"] > 0 and tickets["sent"] == tickets["received"]
    assert tickets["won"] == tickets["redeemed"] and tickets["pending"] == 0
    assert tickets["won"] >= 1  # P(no win in ~56 tickets at 1/5) < 1e-5
    assert summary["paid_wei"] == sum(o["paid_wei"] for o in summary["orchestrators"])
    assert summary["paid_wei"] > 0 and "TicketBroker" in summary["chain"]
    assert summary["fees_wei"] > 0 and summary["ticket_ev_wei"] >= summary["fees_wei"]
    # each active orchestrator claimed a reward in two rounds; the delegator's bond grew
    assert len(summary["rewards"]["rounds"]) == 2 and summary["rewards"]["minted_wei"] > 0
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
    assert summary["rejected_orchestrators"] == [cheat["address"]]
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
