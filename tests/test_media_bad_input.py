"""Bad input gives a clear MediaError, never a traceback, and never leaves output behind."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from media.errors import (
    EmptyInput,
    InvalidInput,
    MediaError,
    NoVideoStream,
    OutputError,
    UnsupportedResolution,
)
from media.pipeline import transcode_to_hls
from media.progress import Progress
from media.segmenter import segment
from media.source import probe
from media.transcoder import transcode
from tests.media_fixtures import audio_only_file, raw_video_file, ts_bytes, video_file


def _faststart_truncated(tmp: Path) -> Path:
    """An mp4 whose index is intact but whose media data stops half-way (an interrupted copy)."""
    whole = tmp / "whole.mp4"
    with (
        av.open(str(video_file("fs.mp4", duration=3, audio="aac"))) as src,
        av.open(str(whole), "w", options={"movflags": "faststart"}) as out,
    ):
        streams = {s: out.add_stream_from_template(s) for s in src.streams}
        for packet in src.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream]
                out.mux(packet)
    data = whole.read_bytes()
    cut = tmp / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    return cut


def _bad_inputs(tmp: Path) -> dict[str, tuple[Path, type[MediaError]]]:
    mp4 = video_file("whole.mp4", duration=1).read_bytes()
    (tmp / "empty.mp4").write_bytes(b"")
    (tmp / "notes.txt").write_text("this is not a video\n" * 50)
    (tmp / "tail_cut.mp4").write_bytes(mp4[: len(mp4) // 2])  # moov is at the end: gone
    (tmp / "garbage.ts").write_bytes(bytes(range(256)) * 64)
    corrupt = bytearray(mp4)
    corrupt[:64] = b"\xff" * 64  # the ftyp box and the start of the data are destroyed
    (tmp / "corrupt.mp4").write_bytes(bytes(corrupt))
    return {
        "zero-length": (tmp / "empty.mp4", EmptyInput),
        "text": (tmp / "notes.txt", InvalidInput),
        "truncated-tail": (tmp / "tail_cut.mp4", InvalidInput),
        "truncated-data": (_faststart_truncated(tmp), InvalidInput),
        "garbage": (tmp / "garbage.ts", InvalidInput),
        "corrupt": (tmp / "corrupt.mp4", InvalidInput),
        "missing": (tmp / "nope.mp4", InvalidInput),
        "audio-only": (audio_only_file(), NoVideoStream),
        "huge": (raw_video_file(20000, 16), UnsupportedResolution),
        "tiny": (raw_video_file(8, 8), UnsupportedResolution),
    }


CASES = ["zero-length", "text", "truncated-tail", "truncated-data", "garbage", "corrupt",
         "missing", "audio-only", "huge", "tiny"]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_transcode_to_hls_refuses_and_leaves_nothing(tmp_path: Path, case: str) -> None:
    path, error = _bad_inputs(tmp_path)[case]
    out = tmp_path / "out"
    with pytest.raises(error) as info:
        transcode_to_hls(path, out, preset="ultrafast")
    assert str(path) in str(info.value)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


@pytest.mark.parametrize("case", ["text", "audio-only", "huge", "truncated-data", "zero-length"])
def test_segmenter_and_transcoder_refuse(tmp_path: Path, case: str) -> None:
    path, error = _bad_inputs(tmp_path)[case]
    with pytest.raises(error):
        list(segment(path))
    with pytest.raises(error):
        transcode(path, preset="ultrafast")


def test_bytes_inputs() -> None:
    with pytest.raises(EmptyInput):
        transcode(b"")
    with pytest.raises(InvalidInput):
        transcode(b"\x00" * 5000)
    headers_only = ts_bytes(video_file("whole.mp4", duration=1))[:376]  # PAT + PMT, no frames
    with pytest.raises(InvalidInput):
        transcode(headers_only, preset="ultrafast")
    with pytest.raises(InvalidInput):
        probe(b"not media at all")


def test_failure_mid_transcode_leaves_no_output(tmp_path: Path) -> None:
    out = tmp_path / "out"

    def crash(progress: Progress) -> None:
        if progress.seconds > 2.5:  # in the second segment, after the first was written
            raise MediaError("stopped by the test")

    with pytest.raises(MediaError, match="stopped by the test"):
        transcode_to_hls(video_file("mid.mp4", duration=4), out, preset="ultrafast",
                         on_progress=crash)  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_existing_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputError):
        transcode_to_hls(video_file("whole.mp4", duration=1), out, preset="ultrafast")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError):
        transcode_to_hls(video_file("whole.mp4", duration=1), tmp_path / "file")


def test_every_error_is_a_media_error() -> None:
    for error in (EmptyInput, InvalidInput, NoVideoStream, UnsupportedResolution, OutputError):
        assert issubclass(error, MediaError)
