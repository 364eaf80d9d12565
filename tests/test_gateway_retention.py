"""What the gateway keeps of its jobs on disk: interrupted uploads are removed at start, finished
jobs follow the retention policy (uploaded inputs deleted once finished unless kept, whole jobs
after `retention_days`), and nothing else is touched: not a running job, not a local file a
JSON job named as its source."""

from __future__ import annotations

from pathlib import Path

from node.gateway.job_book import DAY_MS, DONE, FAILED, RUNNING, JobBook, JobRecord, Retention

NOW = 1_800_000_000_000  # ms; the policy is applied at a given time, not the clock's


def _job(book: JobBook, status: str, finished_days_ago: float, uploaded: bool = True) -> str:
    job_id = book.new_id()
    folder = book.job_dir(job_id)
    folder.mkdir(parents=True)
    source = book.input_path(job_id)
    if uploaded:
        source.write_bytes(b"video")
    else:
        source = book.root.parent / f"{job_id}.mp4"  # the user's own file, named by a JSON job
        source.write_bytes(b"theirs")
    out = book.out_dir(job_id)
    out.mkdir()
    (out / "master.m3u8").write_text("#EXTM3U\n")
    finished = NOW - round(finished_days_ago * DAY_MS) if status in (DONE, FAILED) else 0
    book.put(JobRecord(job_id, str(source), "144p", uploaded, status=status,
                       created_ms=finished or NOW, finished_ms=finished))  # fmt: skip
    return job_id


def test_interrupted_uploads_are_removed_and_records_kept(tmp_path: Path) -> None:
    book = JobBook(tmp_path / "jobs")
    kept = _job(book, RUNNING, 0)
    cut = book.new_id()  # an upload the process did not finish: input bytes, no record
    (book.job_dir(cut)).mkdir()
    book.input_path(cut).write_bytes(b"half a vid")
    half_written = book.new_id()  # killed while writing its first record
    book.job_dir(half_written).mkdir()
    (book.job_dir(half_written) / "job.json.tmp").write_text("{")
    stranger = book.root / "notes"  # not a job folder: not ours to delete
    stranger.mkdir()

    reopened = JobBook(tmp_path / "jobs")
    assert sorted(reopened.remove_interrupted_uploads()) == sorted([cut, half_written])
    assert not book.job_dir(cut).exists() and not book.job_dir(half_written).exists()
    assert stranger.is_dir() and book.input_path(kept).exists()
    assert [r.id for r in reopened.all()] == [kept]
    assert reopened.remove_interrupted_uploads() == []


def test_retention_deletes_old_jobs_and_finished_uploads(tmp_path: Path) -> None:
    book = JobBook(tmp_path / "jobs")
    old_done = _job(book, DONE, 8)
    old_failed = _job(book, FAILED, 7.5)
    recent = _job(book, DONE, 1)
    running = _job(book, RUNNING, 0)
    local = _job(book, DONE, 1, uploaded=False)
    local_source = Path(book.get(local).source)  # type: ignore[union-attr]

    assert book.apply_retention(Retention(days=7), NOW) == (2, 1)
    assert {r.id for r in book.all()} == {recent, running, local}
    assert not book.job_dir(old_done).exists() and not book.job_dir(old_failed).exists()
    # a recent finished job keeps its output; its upload is gone, the user's own file is not
    assert (book.out_dir(recent) / "master.m3u8").exists()
    assert not book.input_path(recent).exists()
    assert local_source.read_bytes() == b"theirs"
    assert book.input_path(running).exists()  # a job still running keeps its input
    # the records survive a restart as they are
    assert {r.id for r in JobBook(tmp_path / "jobs").all()} == {recent, running, local}


def test_retention_can_keep_inputs_and_keep_jobs_forever(tmp_path: Path) -> None:
    book = JobBook(tmp_path / "jobs")
    ancient = _job(book, DONE, 10_000)
    assert book.apply_retention(Retention(days=0, keep_inputs=True), NOW) == (0, 0)
    assert book.input_path(ancient).exists() and book.get(ancient) is not None
    assert book.apply_retention(Retention(days=0), NOW) == (0, 1)
    assert not book.input_path(ancient).exists() and book.out_dir(ancient).is_dir()
