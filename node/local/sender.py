"""A local live source for demos and benchmarks: a clip remuxed to MPEG-TS and sent over TCP on
127.0.0.1 to the first client, no faster than real time (as a camera or an encoder would)."""

from __future__ import annotations

import io
import socket
import threading
import time
from pathlib import Path

import av

CHUNK = 188 * 32  # whole TS packets


def clip_to_ts(clip: Path) -> tuple[bytes, float]:
    """The clip's streams remuxed into one MPEG-TS byte stream, and its duration in seconds."""
    buffer = io.BytesIO()
    with av.open(str(clip)) as src, av.open(buffer, "w", format="mpegts") as out:
        seconds = float(src.duration or 0) / av.time_base
        pairs = {s.index: out.add_stream_from_template(s) for s in src.streams}
        for packet in src.demux():
            if packet.dts is None:
                continue
            packet.stream = pairs[packet.stream.index]
            out.mux(packet)
    return buffer.getvalue(), seconds


class PacedSender:
    """Serves `data` to the first client on 127.0.0.1, spread over `seconds`; `url` is where.
    `close()` stops it (the thread waits for a client at most `accept_timeout_s`)."""

    def __init__(self, data: bytes, seconds: float, accept_timeout_s: float = 60.0) -> None:
        self.data, self.seconds = data, seconds
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(accept_timeout_s)
        self.url = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        self.sent_all = threading.Event()
        self.cut = threading.Event()  # the client hung up before the end
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="paced-sender", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            started = time.monotonic()
            for offset in range(0, len(self.data), CHUNK):
                due = started + self.seconds * offset / len(self.data)
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    return
                try:
                    conn.sendall(self.data[offset : offset + CHUNK])
                except OSError:
                    self.cut.set()
                    return
            self.sent_all.set()

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        self.thread.join(timeout=30)
