"""`.castlog` files: the raw signed events of a log, length-framed, in log order.

Layout: the 8-byte magic `CASTLOG` 0x01, then per event a 4-byte big-endian length and the event's
exact bytes. Nothing else is needed to replay and audit the log.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from events.envelope import MAX_EVENT_BYTES
from storage.errors import CastlogError

MAGIC = b"CASTLOG\x01"
_LEN = struct.Struct(">I")


def write_castlog(path: str | Path, raws: Iterable[bytes]) -> int:
    """Write events to `path` atomically (temp file, fsync, rename); returns the count."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    count = 0
    try:
        with open(tmp, "wb") as out:
            out.write(MAGIC)
            for raw in raws:
                out.write(_LEN.pack(len(raw)))
                out.write(raw)
                count += 1
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return count


def read_castlog(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """(position, raw) for each framed event, positions from 1. Raises CastlogError naming the
    position and byte offset of the first frame that is cut short or oversized."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the generator's with-block
    except OSError as exc:
        raise CastlogError(f"cannot open {path}: {exc.strerror}") from None
    with handle:
        yield from _frames(handle, str(path))


def _frames(handle: BinaryIO, name: str) -> Iterator[tuple[int, bytes]]:
    magic = handle.read(len(MAGIC))
    if magic != MAGIC:
        raise CastlogError(f"{name} is not a castlog file (bad magic {magic[:8]!r})")
    offset, position = len(MAGIC), 0
    while True:
        header = handle.read(_LEN.size)
        if not header:
            return
        position += 1
        if len(header) < _LEN.size:
            raise CastlogError(
                f"{name}: truncated length of event {position} at byte {offset}", position
            )
        (size,) = _LEN.unpack(header)
        if size == 0 or size > MAX_EVENT_BYTES:
            raise CastlogError(
                f"{name}: event {position} at byte {offset} claims {size} bytes"
                f" (limit {MAX_EVENT_BYTES})",
                position,
            )
        raw = handle.read(size)
        if len(raw) < size:
            raise CastlogError(
                f"{name}: event {position} at byte {offset} is truncated"
                f" ({len(raw)} of {size} bytes)",
                position,
            )
        yield position, raw
        offset += _LEN.size + size
