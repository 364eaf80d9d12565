"""The multi-process testnet on anvil: 1 gateway, 3 orchestrators and 1 delegator as separate
`castnet run` processes; a file is transcoded through the gateway's HTTP API, the delegator's
stake earns rewards across rounds, and `down` stops exactly the processes `up` started."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from chain.anvil import find_binary
from chain.client import Chain, Protocol
from node.cli.main import main
from node.gateway.job_book import OUT_NAME
from node.local.testnet import alive
from tests.polling import blocking_until

ROOT = Path(__file__).resolve().parents[1]


def _clip(path: Path) -> Path:
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 320, 180, "yuv420p"
        stream.options = {"g": "60"}
        for n in range(120):  # 4 s: two segments
            image = np.full((180, 320, 3), (n * 2) % 256, np.uint8)
            image[:, (n * 2) % 320 :] = 255 - image[:, (n * 2) % 320 :]
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _scrape(url: str) -> dict[str, float]:
    """{sample with labels: value} from a node's /metrics."""
    with urllib.request.urlopen(url, timeout=10) as response:
        lines = response.read().decode().splitlines()
    samples = [line.rsplit(" ", 1) for line in lines if line and not line.startswith("#")]
    return {name: float(value) for name, value in samples}


def test_testnet_up_transcode_rewards_down(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    find_binary()  # fails loudly: `make test` installs anvil (make testnet-deps)
    root = tmp_path / "net"
    args = ["--dir", str(root), "--json"]
    assert main(["testnet", "up", "--nodes", "5", "--block-time", "0.5", "--round-length",
                 "4", *args]) == 0  # fmt: skip
    state = json.loads(capsys.readouterr().out)
    pids = [n["pid"] for n in state["nodes"]] + [state["anvil"]["pid"]]
    try:
        assert [n["role"] for n in state["nodes"]] == ["gateway", "orchestrator", "orchestrator",
                                                      "orchestrator", "delegator"]  # fmt: skip
        assert all(alive(pid) for pid in pids)
        chain = Chain.rpc(state["anvil"]["url"], b"\x01" * 32)
        contracts = json.loads((root / "contracts.json").read_text())["contracts"]
        staking = Protocol.at(chain, contracts).staking
        delegator = bytes.fromhex(state["nodes"][-1]["address"][2:])
        first = _bonded_after(staking, delegator, 0, timeout=60)

        clip = _clip(tmp_path / "clip.mp4")
        assert main(["testnet", "transcode", str(clip), *args]) == 0
        record = json.loads(capsys.readouterr().out)
        assert record["status"] == "done", record
        assert record["progress"]["segments_done"] == record["progress"]["segments_total"] == 2
        master = root / "node0" / "gateway" / "jobs" / record["id"] / OUT_NAME / "master.m3u8"
        assert master.exists()
        if shutil.which("ffprobe"):
            probe = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json",
                                    str(master)], capture_output=True, check=True)  # fmt: skip
            streams = json.loads(probe.stdout)["streams"]  # the ladder, capped at the source
            assert streams and {(s["width"], s["height"]) for s in streams} == {(320, 180)}

        # rounds pass every 2 s: the delegator's orchestrator claims each round's reward
        second = _bonded_after(staking, delegator, first, timeout=30)
        third = _bonded_after(staking, delegator, second, timeout=30)
        assert 50 * 10**18 <= first < second < third
        assert main(["testnet", "status", *args]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["chain"]["round"] >= 3 and len(report["chain"]["active"]) == 3
        # the gateway follows the contracts' logs into its log: bonds, rewards, deposits
        assert report["gateway_status"]["chain_watcher"]["emitted"] >= 5
        # every node serves Prometheus metrics: the gateway's segments, tickets and gossip, the
        # orchestrators' tickets received and rewards minted
        scraped = {n["name"]: _scrape(n["metrics"]) for n in report["nodes"]}
        gateway = scraped["node0"]
        assert gateway['castnet_segment_transcoded_total{pipeline="transcode"}'] == 2
        sent = gateway["castnet_tickets_sent_total"]
        assert sent >= 2 and gateway['castnet_gossip_messages_published_total{role="gateway"}'] > 0
        assert gateway["castnet_chain_round"] >= 3 and gateway["castnet_gateway_deposit_wei"] > 0
        orchestrators = [scraped[f"node{i}"] for i in (1, 2, 3)]
        # (a ticket refused, e.g. on params that expired in flight, is sent but not received)
        assert 0 < sum(o["castnet_tickets_received_total"] for o in orchestrators) <= sent
        assert sum(o["castnet_reward_minted_wei_total"] for o in orchestrators) > 0
        assert scraped["node4"]['castnet_gossip_peers{role="delegator"}'] >= 1
        # the delegator's own commands work against the running testnet
        account = ["--contracts", str(root / "contracts.json"), "--keystore",
                   str(root / "node4" / "delegator" / "keystore.json"), "--password-file",
                   str(root / "password"), "--json"]  # fmt: skip
        assert main(["stake", "unbond", "10cast", *account]) == 0
        capsys.readouterr()
        assert main(["stake", "status", *account]) == 0
        mine = json.loads(capsys.readouterr().out)
        assert [lock["amount"] for lock in mine["locks"]] == [10 * 10**18], mine
        # every chain event in the gateway's and the delegator's logs is confirmed on chain
        for node in ("node0/gateway", "node4/delegator"):
            assert main(["audit", str(root / node), "--rpc", state["anvil"]["url"],
                         "--contracts", str(root / "contracts.json"), "--json"]) == 0  # fmt: skip
            checked = json.loads(capsys.readouterr().out)["chain"]
            assert checked["confirmed"] == checked["checked"] >= 5, checked
    finally:
        assert main(["testnet", "down", *args]) == 0
    stopped = json.loads(capsys.readouterr().out)["stopped"]
    assert sorted(stopped) == sorted(pids)
    _all_exited(pids)
    assert os.path.exists(root / "node0.log")


def _all_exited(pids: list[int]) -> None:
    """Wait (bounded) until none of `pids` runs: they are not this process's children."""
    blocking_until(
        lambda: not [pid for pid in pids if alive(pid)], f"processes {pids} exit", timeout=10
    )


def _bonded_after(staking: object, delegator: bytes, above: int, timeout: float) -> int:
    """The delegator's bond (with unclaimed rewards) once it exceeds `above`."""

    def grown() -> int:
        bonded = int(staking.delegator(delegator).bonded)  # type: ignore[attr-defined]
        return bonded if bonded > above else 0

    return blocking_until(grown, f"the delegator's bond grows past {above}", timeout, 0.25)


def test_testnet_up_again_after_down_reuses_its_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    find_binary()  # fails loudly: `make test` installs anvil (make testnet-deps)
    root = tmp_path / "net"
    args = ["--dir", str(root), "--json"]
    up = ["testnet", "up", "--nodes", "2", "--block-time", "0.5", *args]
    started: list[int] = []

    def up_once() -> tuple[dict[str, Any], str]:
        code = main(up)
        out, err = capsys.readouterr()
        state = json.loads(out)
        started.extend([n["pid"] for n in state["nodes"]] + [state["anvil"]["pid"]])
        assert code == 0, err
        return state, err

    try:
        first, _ = up_once()
        assert main(["testnet", "down", *args]) == 0
        capsys.readouterr()
        # the same folder again: a fresh chain, the same wallets, the old logs kept aside
        second, err = up_once()
        assert "reusing the keys of the testnet" in err and "Traceback" not in err
        assert [n["address"] for n in second["nodes"]] == [n["address"] for n in first["nodes"]]
        (previous,) = root.glob("previous-*")
        assert (previous / "testnet.json").exists() and (previous / "node0.log").exists()
        assert main(["testnet", "down", *args]) == 0
        capsys.readouterr()
        # keys that no longer open: one clear error, and the new anvil is stopped again
        (root / "password").write_text("not the password")
        assert main(up) == 2
        err = capsys.readouterr().err
        assert err.strip().splitlines()[-1].startswith("castnet testnet up: ")
        assert "does not open with" in err and "Traceback" not in err
        anvil = json.loads((root / "testnet.json").read_text())["anvil"]["pid"]
        started.append(anvil)
        _all_exited([anvil])
    finally:
        if (root / "testnet.json").exists():
            main(["testnet", "down", *args])
    _all_exited(started)
