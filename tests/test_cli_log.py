"""`castnet log ...` and `castnet audit`: round trips, tamper detection, and clear errors."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from events.crypto import LocalKeySigner
from events.envelope import sign_event
from node.audit.log import audit_path
from node.cli.main import main
from node.keystore import create_keystore
from node.local.synth import synth_keys
from storage.castlog import MAGIC, MAGIC_V1, read_castlog, write_castlog
from tests.conftest import key


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def small_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("logs") / "small.castlog"
    assert (
        main(["log", "synth", "-o", str(path), "--events", "80", "--authors", "4", "--seed", "2"])
        == 0
    )
    return path


def _frames(path: Path) -> list[bytes]:
    return [raw for _, raw in read_castlog(path)]


def _frame_spans(path: Path) -> list[tuple[int, int]]:
    spans, offset = [], len(MAGIC)
    for raw in _frames(path):
        spans.append((offset, offset + 4 + len(raw)))
        offset += 4 + len(raw)
    return spans


def test_synth_import_export_round_trip(
    capsys, small_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run(capsys, "log", "import", str(small_log), str(tmp_path / "node"))
    assert code == 0 and "imported 80 events" in out
    code, out, _ = run(capsys, "log", "import", str(small_log), str(tmp_path / "node"))
    assert code == 0 and "80 already present" in out
    out_file = str(tmp_path / "x.castlog")
    # signing needs the node's own key: a data dir without a keystore is refused, clearly
    code, _, err = run(capsys, "log", "export", str(tmp_path / "node"), "-o", out_file)
    assert code == 2 and "--keystore" in err and "Traceback" not in err
    # the node's key in its data dir: the same key as synth's signer gives the same bytes
    monkeypatch.setenv("CASTNET_PASSWORD", "pw")
    create_keystore(tmp_path / "node" / "keystore.json", "pw", synth_keys(4, 2)[0], "pbkdf2", 2)
    code, out, _ = run(capsys, "log", "export", str(tmp_path / "node"), "-o", out_file)
    assert code == 0 and "signed by 0x" in out
    assert (tmp_path / "x.castlog").read_bytes() == small_log.read_bytes()
    code, _, _ = run(capsys, "log", "export", str(tmp_path / "node"), "-o", out_file, "--v1")
    assert code == 0 and _frames(tmp_path / "x.castlog") == _frames(small_log)
    assert (tmp_path / "x.castlog").read_bytes()[:8] == MAGIC_V1


def test_audit_clean_log_json(capsys, small_log: Path, tmp_path: Path) -> None:
    main(["log", "import", str(small_log), str(tmp_path / "node")])
    capsys.readouterr()
    for source in (small_log, tmp_path / "node"):
        code, out, _ = run(capsys, "audit", str(source), "--json")
        report = json.loads(out)
        assert code == 0
        assert report["events"] == 80 and report["authors"] == 4 and report["violations"] == []
        state = report["state"]
        assert sum(state["events_by_kind"].values()) == 80
        assert len(state["offers"]) == 3 and int(state["total_stake"]) > 0
        assert sum(state["jobs_by_status"].values()) == state["jobs"] > 0
    code, out, _ = run(capsys, "audit", str(small_log))
    assert code == 0 and "clean" in out and "jobs" in out


def test_show_filters_by_kind_and_author(capsys, small_log: Path) -> None:
    code, out, _ = run(capsys, "log", "show", str(small_log), "--kind", "offer", "--json")
    offers = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(offers) == 3 and {o["kind"] for o in offers} == {"Offer"}
    author = offers[0]["author"]
    code, out, _ = run(capsys, "log", "show", str(small_log), "--author", author, "--json")
    mine = [json.loads(line) for line in out.splitlines()]
    assert mine and {e["author"] for e in mine} == {author}
    assert [e["seq"] for e in mine] == list(range(1, len(mine) + 1))
    code, out, _ = run(capsys, "log", "show", str(small_log), "--limit", "2")
    assert code == 0 and len(out.splitlines()) == 2
    code, _, err = run(capsys, "log", "show", str(small_log), "--kind", "Nope")
    assert code == 2 and "unknown kind" in err


def _first_problem_position(path: Path, capsys) -> tuple[int, dict]:
    code, out, _ = run(capsys, "audit", str(path), "--json")
    report = json.loads(out)
    return code, report


def test_any_flipped_byte_is_caught_and_named(capsys, small_log: Path, tmp_path: Path) -> None:
    data = small_log.read_bytes()
    spans = _frame_spans(small_log)
    rng = random.Random(4)
    target = spans[10]
    offsets = list(range(*target)) + rng.sample(range(len(MAGIC), spans[-1][1]), 60)
    for offset in offsets:
        tampered = bytearray(data)
        tampered[offset] ^= 1 << rng.randrange(8)
        path = tmp_path / "t.castlog"
        path.write_bytes(bytes(tampered))
        frame = next(i for i, (a, b) in enumerate(spans, start=1) if a <= offset < b)
        report = audit_path(path)
        assert not report.clean, offset
        named = [p.position for p in report.problems]
        assert named and named[0] == frame, (offset, frame, [p.describe() for p in report.problems])
    # and the CLI says so too, naming the event
    code, report = _first_problem_position(path, capsys)
    assert code == 1 and report["violations"] and not report["integrity"]["ok"]
    # a flip anywhere in the signed trailer is caught too
    for offset in rng.sample(range(spans[-1][1], len(data)), 40):
        tampered = bytearray(data)
        tampered[offset] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(tampered))
        report = audit_path(path)
        assert not report.clean and report.integrity(), offset


def test_missing_and_reordered_events_break_the_chain(
    capsys, small_log: Path, tmp_path: Path
) -> None:
    frames = _frames(small_log)
    missing = tmp_path / "missing.castlog"
    write_castlog(missing, frames[:20] + frames[21:])
    code, report = _first_problem_position(missing, capsys)
    assert code == 1
    assert [v["rule"] for v in report["violations"]][:1] == ["chain-gap"]
    swapped = tmp_path / "swapped.castlog"
    # swap two events of one author
    from events.envelope import decode

    decoded = [decode(raw) for raw in frames]
    author = decoded[30].author
    mine = [i for i, e in enumerate(decoded) if e.author == author and i >= 30][:2]
    order = list(frames)
    order[mine[0]], order[mine[1]] = order[mine[1]], order[mine[0]]
    write_castlog(swapped, order)
    code, report = _first_problem_position(swapped, capsys)
    rules = {v["rule"] for v in report["violations"]}
    assert code == 1 and {"chain-gap", "chain-reordered"} <= rules
    assert all(
        v["author"] == "0x" + author.hex()
        for v in report["violations"]
        if v["rule"].startswith("chain")
    )


def test_equivocation_is_reported_with_both_ids(capsys, tmp_path: Path) -> None:
    signer = LocalKeySigner(key(3))
    one = sign_event(signer, version=1, kind=2, seq=1, prev=b"", time_ms=0, body=["one"])
    two = sign_event(signer, version=1, kind=2, seq=1, prev=b"", time_ms=0, body=["two"])
    path = tmp_path / "eq.castlog"
    write_castlog(path, [one.raw, two.raw], LocalKeySigner(key(9)))
    code, report = _first_problem_position(path, capsys)
    (problem,) = [v for v in report["evidence"] if v["rule"] == "equivocation"]
    assert one.id.hex() in problem["detail"] and two.id.hex() in problem["detail"]
    # evidence against another author: the file itself is intact
    assert code == 0 and report["integrity"]["ok"] and report["exit_code"] == 0
    assert main(["audit", str(path), "--strict"]) == 3
    # importing keeps the second as evidence, and the data dir audit reports it too
    code, _, err = run(capsys, "log", "import", str(path), str(tmp_path / "node"))
    assert "equivocation" in err
    code, report = _first_problem_position(tmp_path / "node", capsys)
    (problem,) = [v for v in report["evidence"] if v["rule"] == "equivocation"]
    assert one.id.hex() in problem["detail"] and two.id.hex() in problem["detail"]
    assert code == 0 and report["integrity"]["ok"]
    # the same events, when the equivocating author is the node itself, are its own damage
    code, _, _ = run(capsys, "audit", str(tmp_path / "node"), "--own", "0x" + signer.address.hex())
    assert code == 1


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage that is not a castlog", MAGIC + b"\x00\x00", MAGIC + b"\x00\x00\x01\x00abc"],
    ids=["empty", "garbage", "cut-length", "cut-event"],
)
def test_garbage_or_truncated_file_is_a_clear_error(capsys, tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.castlog"
    path.write_bytes(content)
    code, out, err = run(capsys, "audit", str(path))
    assert "Traceback" not in out + err
    if content.startswith(MAGIC):  # a castlog cut short: a damaged log, named
        assert code == 1 and "truncated" in out
    else:  # not a castlog at all: nothing to audit
        assert code == 2 and "not a castlog" in err
    code, out, err = run(capsys, "log", "import", str(path), str(tmp_path / "node"))
    assert code == 2 and "Traceback" not in err and err.startswith("castnet:")


def test_truncated_tail_names_the_event(capsys, small_log: Path, tmp_path: Path) -> None:
    data = small_log.read_bytes()
    path = tmp_path / "cut.castlog"
    path.write_bytes(data[: _frame_spans(small_log)[49][0] + 30])
    code, report = _first_problem_position(path, capsys)
    (problem,) = report["violations"]
    assert code == 1 and problem["position"] == 50 and "truncated" in problem["detail"]


def test_console_script_runs(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("castnet")
    out = tmp_path / "c.castlog"
    subprocess.run([exe, "log", "synth", "-o", out, "--events", "30", "--authors", "3"], check=True)
    done = subprocess.run([exe, "audit", out], capture_output=True, text=True)
    assert done.returncode == 0 and "clean" in done.stdout
    missing = subprocess.run([exe, "audit", tmp_path / "nope"], capture_output=True, text=True)
    assert missing.returncode == 2 and "no such file" in missing.stderr
