"""Writing MPEG-TS into memory with timestamps kept exactly as given."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable
from fractions import Fraction

import av
import av.container
import av.stream

from media.errors import TranscodeFailed

TS_TIME_BASE = Fraction(1, 90_000)


class TsWriter:
    """One MPEG-TS output in memory; `finish()` returns its bytes."""

    def __init__(self) -> None:
        self._buffer = io.BytesIO()
        # avoid_negative_ts=disabled: the muxer must not shift the first B-frame GOP's negative
        # DTS (it would move every PTS by the encoder delay); FFmpeg and players read it back fine.
        self.container: av.container.OutputContainer = av.open(
            self._buffer, "w", format="mpegts", options={"avoid_negative_ts": "disabled"}
        )

    def mux(self, packets: Iterable[av.Packet], stream: av.stream.Stream) -> None:
        """Mux packets (whose `time_base` is set) into `stream` of this output."""
        try:
            for packet in packets:
                packet.stream = stream
                self.container.mux(packet)
        except av.FFmpegError as exc:
            raise TranscodeFailed(f"muxing MPEG-TS failed: {exc}") from exc

    def finish(self) -> bytes:
        """Write the trailer and return the stream's bytes."""
        try:
            self.container.close()
        except av.FFmpegError as exc:
            raise TranscodeFailed(f"finishing MPEG-TS failed: {exc}") from exc
        return self._buffer.getvalue()

    def abort(self) -> None:
        """Drop this output after a failure, never raising."""
        # already failing: the first error is the one to report
        with contextlib.suppress(Exception):
            self.container.close()
