"""Audits that tell the truth: a version-2 `.castlog`'s signed trailer catches events missing at
a boundary, at the end, or at the end of any one author's chain; a version-1 file says its
completeness is unchecked; evidence against other authors does not fail the integrity verdict;
and a restarted `log import` goes on from where it stopped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from events import kinds as k
from events.author import Author
from events.crypto import LocalKeySigner
from events.envelope import decode
from node.cli import log as cli_log
from node.cli.main import main
from node.keystore import create_keystore
from node.local.synth import synth_keys
from storage.castlog import MAGIC, Castlog, read_castlog, write_castlog
from storage.store import EventStore
from tests.conftest import key

EVENTS, AUTHORS, SEED = 300, 4, 3  # seed 3: three TicketRedeemed among them


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def audit_json(capsys: pytest.CaptureFixture[str], path: Path, *extra: str) -> tuple[int, dict]:
    code, out, _ = run(capsys, "audit", str(path), "--json", *extra)
    return code, json.loads(out)


def rules(report: dict) -> list[str]:
    return [p["rule"] for p in report["integrity"]["problems"]]


@pytest.fixture(scope="module")
def synth_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("complete") / "net.castlog"
    argv = ["log", "synth", "-o", str(path), "--events", str(EVENTS), "--authors", str(AUTHORS)]
    assert main([*argv, "--seed", str(SEED)]) == 0
    return path


def frames(path: Path) -> list[bytes]:
    return [raw for _, raw in read_castlog(path)]


def ends(path: Path) -> list[int]:
    """The byte offset just after each event frame."""
    out, offset = [], len(MAGIC)
    for raw in frames(path):
        offset += 4 + len(raw)
        out.append(offset)
    return out


def without(path: Path, drop: set[int], out: Path) -> Path:
    """`path` with the event frames at 0-based indexes `drop` cut out, its trailer kept."""
    data, bounds = path.read_bytes(), [len(MAGIC), *ends(path)]
    kept = [data[bounds[i] : bounds[i + 1]] for i in range(len(bounds) - 1) if i not in drop]
    out.write_bytes(data[: len(MAGIC)] + b"".join(kept) + data[bounds[-1] :])
    return out


def test_intact_v2_file_audits_clean_and_complete(capsys, synth_log: Path) -> None:
    code, report = audit_json(capsys, synth_log)
    assert code == 0 and report["clean"] and report["integrity"]["ok"]
    done = report["completeness"]
    assert done["source"] == "castlog-v2" and done["trailer_events"] == EVENTS
    assert done["trailer_authors"] == AUTHORS
    signer = LocalKeySigner(synth_keys(AUTHORS, SEED)[0]).address
    assert done["signer"].lower() == "0x" + signer.hex()
    code, out, err = run(capsys, "audit", str(synth_log))
    assert code == 0 and f"complete: the {EVENTS} events" in out and err == ""


@pytest.mark.parametrize("kept", [EVENTS, 150, 1])
def test_cut_exactly_at_an_event_boundary_is_detected(
    capsys, synth_log: Path, tmp_path: Path, kept: int
) -> None:
    cut = tmp_path / "cut.castlog"
    cut.write_bytes(synth_log.read_bytes()[: ends(synth_log)[kept - 1]])
    code, report = audit_json(capsys, cut)
    assert code == 1 and rules(report) == ["castlog-truncated"]
    (problem,) = report["integrity"]["problems"]
    assert f"ends after event {kept} without its signed trailer" in problem["detail"]
    code, _, err = run(capsys, "log", "import", str(cut), str(tmp_path / "node"))
    assert code == 1 and "castlog-truncated" in err


def test_last_100_events_dropped_are_detected(capsys, synth_log: Path, tmp_path: Path) -> None:
    dropped = without(synth_log, set(range(EVENTS - 100, EVENTS)), tmp_path / "d.castlog")
    code, report = audit_json(capsys, dropped)
    assert code == 1 and "castlog-count" in rules(report)
    (count,) = [p for p in report["integrity"]["problems"] if p["rule"] == "castlog-count"]
    assert f"counts {EVENTS} events, the file holds {EVENTS - 100} (100 missing)" in count["detail"]
    assert "castlog-head" in rules(report)  # and the authors whose last events went
    code, _, err = run(capsys, "log", "import", str(dropped), str(tmp_path / "node"))
    assert code == 1 and "100 missing" in err
    # a trailer re-signed by someone else passes only until the exporter's address is required
    forged = tmp_path / "forged.castlog"
    write_castlog(forged, frames(synth_log)[:-100], LocalKeySigner(key(77)))
    exporter = LocalKeySigner(synth_keys(AUTHORS, SEED)[0]).address
    code, report = audit_json(capsys, forged, "--signer", "0x" + exporter.hex())
    assert code == 1 and rules(report) == ["castlog-signer"]
    code, _, err = run(
        capsys,
        "log",
        "import",
        str(forged),
        str(tmp_path / "n2"),
        "--signer",
        "0x" + exporter.hex(),
    )
    assert code == 1 and "castlog-signer" in err


def test_last_event_of_each_author_removed_is_detected(
    capsys, synth_log: Path, tmp_path: Path
) -> None:
    events = [decode(raw) for raw in frames(synth_log)]
    last = {e.author: i for i, e in enumerate(events)}
    assert len(last) == AUTHORS
    for author, index in last.items():
        cut = without(synth_log, {index}, tmp_path / "a.castlog")
        code, report = audit_json(capsys, cut)
        assert code == 1, author.hex()
        # the chains alone cannot tell: only the trailer's findings are there
        assert set(rules(report)) == {"castlog-count", "castlog-head"}
        (head,) = [p for p in report["integrity"]["problems"] if p["rule"] == "castlog-head"]
        seq = events[index].seq
        assert f"author 0x{author.hex()}: the trailer's last event is seq {seq}" in head["detail"]
        assert f"the file ends at seq {seq - 1}" in head["detail"]


def test_a_removed_last_ticket_redemption_is_detected(
    capsys, synth_log: Path, tmp_path: Path
) -> None:
    events = [decode(raw) for raw in frames(synth_log)]
    redeemed = max(i for i, e in enumerate(events) if e.kind == k.TicketRedeemed.KIND)
    # a log that ends with that redemption: it is its author's last event
    log = tmp_path / "r.castlog"
    write_castlog(log, [e.raw for e in events[: redeemed + 1]], LocalKeySigner(key(8)))
    code, _ = audit_json(capsys, log)
    assert code == 0
    code, report = audit_json(capsys, without(log, {redeemed}, tmp_path / "r2.castlog"))
    assert code == 1 and set(rules(report)) == {"castlog-count", "castlog-head"}
    author = events[redeemed].author.hex()
    assert any(f"author 0x{author}" in p["detail"] for p in report["integrity"]["problems"])


def test_a_v1_file_reads_with_a_one_line_warning(capsys, synth_log: Path, tmp_path: Path) -> None:
    old = tmp_path / "old.castlog"
    write_castlog(old, frames(synth_log))  # no signer: version 1
    assert Castlog(old).version == 1
    code, out, err = run(capsys, "audit", str(old))
    assert code == 0 and "completeness not checked" in out
    assert err.count("\n") == 1 and "version-1" in err and "cannot be checked" in err
    code, out, err = run(capsys, "log", "import", str(old), str(tmp_path / "node"))
    assert code == 0 and f"imported {EVENTS} events" in out
    assert err.count("\n") == 1 and "version-1" in err


def _claim(author: Author, job: bytes, time_ms: int):
    return author.sign(k.JobClaimed(job, 1, 1), time_ms)


def test_evidence_against_another_author_leaves_integrity_clean(
    capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = tmp_path / "node"
    node.mkdir()
    me_key, other_key = key(11), key(12)
    create_keystore(node / "keystore.json", "pw", me_key, "pbkdf2", 2)
    me, other = Author(LocalKeySigner(me_key)), Author(LocalKeySigner(other_key))
    mine = me.sign(k.Offer(5, 1, ("transcode:h264",), 2, "peer", ()), 1)
    claim = _claim(other, b"\x01" * 32, 2)  # a claim for a job that does not exist
    twin_signer = Author(LocalKeySigner(other_key))
    twin_signer.head = None
    twin = twin_signer.sign(k.Offer(9, 1, ("transcode:h264",), 2, "twin", ()), 3)  # seq 1 again
    with EventStore.open_dir(node) as store:
        store.append([mine, claim])
        store.append([twin])  # kept aside as equivocation evidence
        assert len(store.conflicts()) == 1
    code, report = audit_json(capsys, node)
    assert code == 0 and report["integrity"]["ok"] and report["exit_code"] == 0
    assert {f["rule"] for f in report["evidence"]} == {"equivocation", "claim-unknown-job"}
    assert {f["author"] for f in report["evidence"]} == {"0x" + other.signer.address.hex()}
    assert report["own_authors"][0].lower() == "0x" + me.signer.address.hex()
    code, out, _ = run(capsys, "audit", str(node))
    assert code == 0 and "integrity clean" in out and "evidence against other authors: 2" in out
    assert main(["audit", str(node), "--strict"]) == 3
    capsys.readouterr()
    # the node's own misconduct is damage to its own log, not evidence
    with EventStore.open_dir(node) as store:
        store.append([_claim(me, b"\x02" * 32, 4)])
    code, report = audit_json(capsys, node)
    assert code == 1 and rules(report) == ["claim-unknown-job"]


def test_audit_help_documents_the_exit_codes(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["audit", "--help"])
    out = capsys.readouterr().out
    for line in ("0  the log is intact", "1  the log itself is damaged", "2  usage or I/O",
                 "3  (with --strict)"):  # fmt: skip
        assert line in out


def test_restarted_import_resumes_after_the_last_stored_event(
    capsys, synth_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_log, "IMPORT_BATCH", 32)
    real, verified = cli_log.decode_verified, []

    def interrupted(raw: bytes):
        if len(verified) == 100:
            raise KeyboardInterrupt  # Ctrl-C while the fourth batch is being verified
        verified.append(raw)
        return real(raw)

    monkeypatch.setattr(cli_log, "decode_verified", interrupted)
    node = tmp_path / "node"
    assert main(["log", "import", str(synth_log), str(node)]) == 130
    with EventStore.open_dir(node) as store:
        assert store.count() == 96  # three durable batches
    capsys.readouterr()
    verified.clear()
    monkeypatch.setattr(cli_log, "decode_verified", lambda raw: verified.append(raw) or real(raw))
    code, out, _ = run(capsys, "log", "import", str(synth_log), str(node))
    assert code == 0 and "resuming after event 96" in out
    assert f"imported {EVENTS - 96} events" in out and "0 already present" in out
    assert verified == frames(synth_log)[96:]  # nothing before the resume point re-verified
    assert not (node / cli_log.IMPORT_PROGRESS).exists()
    code, report = audit_json(capsys, node)
    assert code == 0 and report["events"] == EVENTS
    # progress is for one unchanged file: a file rewritten since is imported from event 1
    copy = tmp_path / "copy.castlog"
    copy.write_bytes(synth_log.read_bytes())
    verified.clear()
    monkeypatch.setattr(cli_log, "decode_verified", interrupted)
    assert main(["log", "import", str(copy), str(tmp_path / "again")]) == 130
    write_castlog(copy, frames(synth_log)[:200], LocalKeySigner(key(8)))
    monkeypatch.setattr(cli_log, "decode_verified", real)
    code, out, _ = run(capsys, "log", "import", str(copy), str(tmp_path / "again"))
    assert code == 0 and "resuming" not in out
    assert "imported 104 events" in out and "96 already present" in out
