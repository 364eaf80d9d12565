"""The whole network in one process (`castnet demo`): real libp2p hosts on 127.0.0.1, real SQLite
logs, real PyAV encodes and verification, real tickets; faults injected per orchestrator."""

from __future__ import annotations

import io
import json
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from node.cli.main import main
from node.local.demo import DemoOptions, run_demo
from node.local.summary import print_summary

ROOT = Path(__file__).resolve().parents[1]
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING|ERROR) ")

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


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(url: str) -> tuple[str, Samples]:
    with urllib.request.urlopen(url, timeout=30) as response:
        kind, body = response.headers["Content-Type"], response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return kind, samples


def _by_node(samples: Samples, name: str) -> dict[str, float]:
    """node -> value of the samples named `name` (summed over their other labels)."""
    out: dict[str, float] = {}
    for (sample, labels), value in samples.items():
        node = dict(labels).get("node")
        if sample == name and node:
            out[node] = out.get(node, 0.0) + value
    return out


class _Lines:
    """A pipe's lines as they come, read in a thread; `until` waits (bounded) for a line."""

    def __init__(self, pipe: Any) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(pipe,), daemon=True).start()

    def _read(self, pipe: Any) -> None:
        for line in pipe:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def until(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            assert line is not None, "\n".join(self.seen[-40:])  # the process ended first
            self.seen.append(line)
            if found := re.search(pattern, line):
                return found

    def rest(self) -> str:
        while (line := self._queue.get(timeout=30)) is not None:
            self.seen.append(line)
        return "\n".join(self.seen)


def test_demo_json_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "hls"
    args = ["demo", "--json", "--size", "320x180", "--seconds", "4", "--profiles", PROFILES]
    # ~28 tickets a segment at 1 in 5 to win (face value 0.01 ETH pays for the redemption gas)
    args += ["--ticket-ev", "0.002eth", "--price", "10gwei"]
    args += ["--out", str(out), "--data-dir", str(tmp_path / "nodes"), "--serve"]
    # as a user runs it: a process of its own, its terminal output captured; with --serve the
    # network stays up after the job, its metrics scraped over HTTP, until Ctrl-C
    stdout = tmp_path / "stdout.json"
    with stdout.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "node.cli", *args], cwd=ROOT, text=True,
                                stdout=sink, stderr=subprocess.PIPE)  # fmt: skip
    try:
        lines = _Lines(proc.stderr)
        url = lines.until(r"^metrics at (http://127\.0\.0\.1:\d+/metrics)$", 300)[1]
        lines.until(r"until Ctrl-C$", 900)
        kind, samples = _scrape(url)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    stderr = lines.rest()
    assert "Traceback" not in stderr, stderr  # Ctrl-C stops it quietly
    summary = json.loads(stdout.read_text())
    assert summary["ok"], (summary, stderr[-2000:])
    assert summary["metrics_url"] == url
    # the nodes' log lines went to the log file, not the terminal (progress lines only there)
    assert not [line for line in stderr.splitlines() if LOG_LINE.match(line)], stderr
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
    # Livepeer's proportions: ~0.05% inflation a round, about half the supply bonded, so the
    # delegator's bond grows by a fraction of a percent per round
    rewards = summary["rewards"]
    assert [r["round"] for r in rewards["per_round"]] == rewards["rounds"]
    for r in rewards["per_round"]:
        assert 0.04 < r["inflation_percent"] < 0.06 and 45 < r["bonding_rate_percent"] < 55
        assert 0 < r["minted_wei"] <= r["mintable_wei"]
    assert rewards["target_bonding_rate_percent"] == 50
    assert 0 < rewards["delegator_growth_percent_per_round"] < 1
    growth = delegator["bonded_wei"] / delegator["delegated_wei"] - 1
    assert growth < 0.01 * len(rewards["rounds"])
    assert summary["audit"]["clean"], summary["audit"]
    # `castnet audit` on the gateway's log: every job went the whole claimed path
    assert main(["audit", str(tmp_path / "nodes" / "gateway"), "--json"]) == 0
    audit = json.loads(capsys.readouterr().out)
    paths = audit["state"]["job_paths"]
    assert paths == {"posted -> assigned -> claimed -> resulted -> verified": seg["total"]}
    assert audit["state"]["events_by_kind"]["JobClaimed"] == seg["total"]
    assert set(summary["audit"]["nodes"]) == {"gateway", "orchestrator0", "orchestrator1",
                                              "orchestrator2", "delegator"}  # fmt: skip
    # every log converged: the same network-wide events everywhere, and each job chain at both
    # of its parties only (the gateway and the orchestrators that took its segments)
    assert summary["converged"]
    events = summary["events"]
    assert events["delegator"] < events["gateway"]
    worked = [o for o in summary["orchestrators"] if o.get("segments")]
    assert worked, summary["orchestrators"]
    # what /metrics showed while the network served: each node's families, labelled by node,
    # agreeing with the summary
    assert kind.startswith("text/plain; version=0.0.4")
    nodes = set(summary["audit"]["nodes"])
    transcoded = _by_node(samples, "castnet_segment_transcoded_total")
    assert transcoded == {"gateway": 2.0}
    assert _by_node(samples, "castnet_segment_source_appeared_total") == {"gateway": 2.0}
    assert _by_node(samples, "castnet_tickets_sent_total") == {"gateway": tickets["sent"]}
    received = _by_node(samples, "castnet_tickets_received_total")
    assert set(received) == nodes - {"gateway", "delegator"}
    assert sum(received.values()) == tickets["received"] > 0
    won = _by_node(samples, "castnet_winning_tickets_received_total")
    assert sum(won.values()) == tickets["won"] > 0
    gossip = _by_node(samples, "castnet_gossip_messages_received_total")
    assert set(gossip) == nodes and all(v > 0 for v in gossip.values()), gossip
    peers = _by_node(samples, "castnet_gossip_peers")
    assert set(peers) == nodes and all(v > 0 for v in peers.values()), peers
    events = _by_node(samples, "castnet_log_events")
    assert set(events) == nodes and all(events[n] >= e for n, e in summary["events"].items())
    assert ("castnet_gossip_dropped_total", ()) in samples  # the process's own, once
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


def test_metrics_listen_refusals_are_clear(tmp_path: Path) -> None:
    def demo(listen: str) -> subprocess.CompletedProcess[str]:
        args = ["demo", "--size", "320x180", "--seconds", "2", "--profiles",
                "144p", "--out", str(tmp_path / "out"), "--data-dir", str(tmp_path / "nodes"),
                "--metrics-listen", listen]  # fmt: skip
        return subprocess.run([sys.executable, "-m", "node.cli", *args], cwd=ROOT, text=True,
                              capture_output=True, timeout=300)  # fmt: skip

    bad = demo("localhost")
    assert bad.returncode == 2
    assert "--metrics-listen must be HOST:PORT, got 'localhost'" in bad.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = demo(f"127.0.0.1:{port}")
    assert busy.returncode == 1 and "Traceback" not in busy.stderr, busy.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}: " in busy.stderr, busy.stderr
    assert "already in use" in busy.stderr, busy.stderr
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "nodes").exists()  # refused before any node or chain was started
