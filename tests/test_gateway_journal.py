"""The job journal a restarted gateway resumes from: what it writes reads back the same after a
reopen, and a damaged file means "run that segment again", never a crash."""

from __future__ import annotations

from pathlib import Path

import msgpack

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


def test_a_cheap_checked_segment_stays_cheap_checked_after_a_reopen(tmp_path: Path) -> None:
    """A segment that passed only the cheap checks is kept as such, so a restarted gateway still
    redoes it if its orchestrator fails a check later; files of the older format (which did not
    say) count as cheap-checked."""
    folder = tmp_path / "segments"
    journal = SegmentJournal(folder)
    job_id = bytes(range(32))
    cheap = KeptSegment(job_id, b"signed result", 80, [["144p", "h264", 1]], [b"\x47" * 188],
                        full_check=False)  # fmt: skip
    journal.keep(3, cheap)
    assert SegmentJournal(folder).kept(3) == cheap
    old = msgpack.packb([1, job_id, b"signed result", 80, [["144p", "h264", 1]], [b"\x47" * 188]])
    (folder / "00004.kept").write_bytes(old)
    assert SegmentJournal(folder).kept(4) == cheap
    (folder / "00005.kept").write_bytes(msgpack.packb([7, job_id]))  # a format this build lacks
    assert SegmentJournal(folder).kept(5) is None
