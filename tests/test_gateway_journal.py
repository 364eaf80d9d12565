"""The job journal a restarted gateway resumes from: what it writes reads back the same after a
reopen, and a damaged file means "run that segment again", never a crash."""

from __future__ import annotations

from pathlib import Path

from node.gateway.journal import KeptSegment, SegmentJournal


def test_journal_round_trip_damage_and_clear(tmp_path: Path) -> None:
    folder = tmp_path / "job" / "segments"
    journal = SegmentJournal(folder)
    assert journal.posted(0) is None and journal.kept(0) is None
    job_id = bytes(range(32))
    kept = KeptSegment(job_id, b"signed result", 1234, [["144p", "h264", 1]], [b"\x47" * 188])
    journal.record_posted(0, job_id)
    journal.keep(0, kept)
    journal.record_posted(1, b"\x01" * 32)

    reopened = SegmentJournal(folder)
    assert reopened.posted(0) == job_id and reopened.kept(0) == kept
    assert reopened.posted(1) == b"\x01" * 32 and reopened.kept(1) is None
    assert sorted(p.name for p in folder.iterdir()) == ["00000.kept", "00000.posted",
                                                        "00001.posted"]  # fmt: skip

    (folder / "00000.kept").write_bytes(b"\x93\x01")  # cut short
    (folder / "00001.posted").write_bytes(b"short")
    assert reopened.kept(0) is None and reopened.posted(1) is None
    reopened.clear()
    assert not folder.exists()
