"""`.castlog` files: the raw signed events of a log, length-framed, in log order.

Version 2 (written by default): the 8-byte magic `CASTLOG` 0x02, then per event a 4-byte
big-endian length and the event's exact bytes, then a signed trailer: a 4-byte zero (no event has
length 0), a 4-byte length and the msgpack array

    [1, count, running_hash, [[author, seq, id], ...], signer, signature]

`count` is the number of events; `running_hash` is r_count where r_0 = keccak256(RUNNING_TAG) and
r_i = keccak256(r_{i-1} ++ keccak256(raw_i)), over the events in file order; the heads list every
author's last event in the file (highest seq, its id), sorted by author; `signer` is the address
of the key that signed keccak256(TRAILER_TAG ++ msgpack(first five fields)), in the 65-byte r,s,v
form events use. Nothing can be removed, added, reordered or cut off at an event boundary without
the count, the running hash or a head disagreeing, and the trailer cannot be rewritten without the
signer's key. Version 1 (magic `CASTLOG` 0x01) is the same without the trailer: it still reads,
but its completeness cannot be checked.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from events.crypto import (
    ADDRESS_LEN,
    SIGNATURE_LEN,
    SignatureError,
    Signer,
    keccak256,
    recover_address,
)
from events.envelope import ID_LEN, MAX_EVENT_BYTES, decode, pack, unpack
from events.errors import EventError
from storage.errors import CastlogError

MAGIC_V1 = b"CASTLOG\x01"
MAGIC = MAGIC_V2 = b"CASTLOG\x02"
RUNNING_TAG = b"castnet/castlog/v2\x00"
TRAILER_TAG = b"castnet/castlog-trailer/v1\x00"
TRAILER_VERSION = 1
MAX_TRAILER_BYTES = 64 * 1024 * 1024  # ~1.1 M authors' heads
_LEN = struct.Struct(">I")
_TRAILER_MARK = _LEN.pack(0)

Heads = dict[bytes, tuple[int, bytes]]  # author -> (seq, id) of its last event


def running_start() -> bytes:
    return keccak256(RUNNING_TAG)


def running_next(running: bytes, raw: bytes) -> bytes:
    return keccak256(running + keccak256(raw))


def _note_head(heads: Heads, raw: bytes) -> None:
    try:
        event = decode(raw)
    except EventError:
        return  # an undecodable event has no author: the audit names it
    known = heads.get(event.author)
    if known is None or event.seq > known[0]:
        heads[event.author] = (event.seq, event.id)


@dataclass(frozen=True, slots=True)
class Trailer:
    count: int
    running: bytes
    heads: Heads
    signer: bytes
    signature: bytes = b""

    def _fields(self) -> list[Any]:
        heads = [[a, s, i] for a, (s, i) in sorted(self.heads.items())]
        return [TRAILER_VERSION, self.count, self.running, heads, self.signer]

    def digest(self) -> bytes:
        return keccak256(TRAILER_TAG + pack(self._fields()))

    def encode(self) -> bytes:
        return pack([*self._fields(), self.signature])

    def signed_by_signer(self) -> bool:
        try:
            return recover_address(self.digest(), self.signature) == self.signer
        except SignatureError:
            return False


def parse_trailer(data: bytes) -> Trailer:
    """Raises CastlogError on anything but a well-formed trailer (the signature is not checked)."""
    try:
        fields = unpack(data)
    except EventError as exc:
        raise CastlogError(f"the trailer is not msgpack: {exc}") from None
    if not isinstance(fields, list) or len(fields) != 6 or fields[0] != TRAILER_VERSION:
        raise CastlogError("the trailer is not a version-1 trailer array")
    _, count, running, items, signer, signature = fields
    if type(count) is not int or count < 0:
        raise CastlogError(f"the trailer's count {count!r} is not a count")
    if type(running) is not bytes or len(running) != 32:
        raise CastlogError("the trailer's running hash is not 32 bytes")
    if type(signer) is not bytes or len(signer) != ADDRESS_LEN:
        raise CastlogError("the trailer's signer is not a 20-byte address")
    if type(signature) is not bytes or len(signature) != SIGNATURE_LEN:
        raise CastlogError("the trailer's signature is not 65 bytes")
    if not isinstance(items, list):
        raise CastlogError("the trailer's heads are not a list")
    heads: Heads = {}
    for item in items:
        if not (isinstance(item, list) and len(item) == 3):
            raise CastlogError("a trailer head is not [author, seq, id]")
        author, seq, eid = item
        if type(author) is not bytes or len(author) != ADDRESS_LEN or author in heads:
            raise CastlogError("a trailer head's author is not a new 20-byte address")
        if type(seq) is not int or seq < 1 or type(eid) is not bytes or len(eid) != ID_LEN:
            raise CastlogError("a trailer head's seq or id is malformed")
        heads[author] = (seq, eid)
    return Trailer(count, running, heads, signer, signature)


def write_castlog(path: str | Path, raws: Iterable[bytes], signer: Signer | None = None) -> int:
    """Write events to `path` atomically (temp file, fsync, rename); returns the count. With a
    `signer` the file is version 2 with a trailer signed by it; without, version 1."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    count = 0
    running = running_start()
    heads: Heads = {}
    try:
        with open(tmp, "wb") as out:
            out.write(MAGIC_V2 if signer is not None else MAGIC_V1)
            for raw in raws:
                out.write(_LEN.pack(len(raw)))
                out.write(raw)
                count += 1
                if signer is not None:
                    running = running_next(running, raw)
                    _note_head(heads, raw)
            if signer is not None:
                unsigned = Trailer(count, running, heads, signer.address)
                trailer = Trailer(
                    count, running, heads, signer.address, signer.sign_hash(unsigned.digest())
                )
                data = trailer.encode()
                out.write(_TRAILER_MARK + _LEN.pack(len(data)) + data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return count


@dataclass(frozen=True, slots=True)
class Resume:
    """Where a reader stopped: the byte offset after event `position`, and the running hash
    there. A reader started from it goes on as if it had read the file from event 1."""

    offset: int
    position: int
    running: bytes


@dataclass(slots=True)
class Castlog:
    """Reads a castlog frame by frame (`rows`), then checks the trailer (`completeness`).

    Framing errors raise CastlogError naming the event position and byte offset. Once `rows` is
    exhausted, `trailer` holds a version-2 file's trailer and `completeness()` lists what is
    missing or altered as (rule, detail) pairs."""

    path: Path
    resume: Resume | None = None
    version: int = 0
    trailer: Trailer | None = None
    ended: bool = False  # rows ran to the end of the events
    count: int = 0  # events read (from the resume point, if any)
    position: int = 0
    offset: int = 0
    running: bytes = field(default_factory=running_start)
    heads: Heads = field(default_factory=dict)  # of the events read

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        try:
            with open(self.path, "rb") as handle:
                magic = handle.read(len(MAGIC_V2))
        except OSError as exc:
            raise CastlogError(f"cannot open {self.path}: {exc.strerror}") from None
        if magic == MAGIC_V1:
            self.version = 1
        elif magic == MAGIC_V2:
            self.version = 2
        else:
            raise CastlogError(f"{self.path} is not a castlog file (bad magic {magic[:8]!r})")

    @property
    def state(self) -> Resume:
        return Resume(self.offset, self.position, self.running)

    def rows(self) -> Iterator[tuple[int, bytes]]:
        """(position, raw) for each framed event, positions from 1 (or after the resume point)."""
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - closed by the with-block below
        except OSError as exc:
            raise CastlogError(f"cannot open {self.path}: {exc.strerror}") from None
        with handle:
            if self.resume is not None:
                handle.seek(self.resume.offset)
                self.offset, self.position = self.resume.offset, self.resume.position
                self.running = self.resume.running
            else:
                handle.seek(len(MAGIC_V2))
                self.offset = len(MAGIC_V2)
            yield from self._frames(handle)

    def _frames(self, handle: BinaryIO) -> Iterator[tuple[int, bytes]]:
        name = str(self.path)
        v2 = self.version == 2
        while True:
            header = handle.read(_LEN.size)
            if not header:
                self.ended = True
                return
            position = self.position + 1
            if len(header) < _LEN.size:
                raise CastlogError(
                    f"{name}: truncated length of event {position} at byte {self.offset}", position
                )
            (size,) = _LEN.unpack(header)
            if size == 0 and v2:
                self._read_trailer(handle)
                self.ended = True
                return
            if size == 0 or size > MAX_EVENT_BYTES:
                raise CastlogError(
                    f"{name}: event {position} at byte {self.offset} claims {size} bytes"
                    f" (limit {MAX_EVENT_BYTES})",
                    position,
                )
            raw = handle.read(size)
            if len(raw) < size:
                raise CastlogError(
                    f"{name}: event {position} at byte {self.offset} is truncated"
                    f" ({len(raw)} of {size} bytes)",
                    position,
                )
            self.position = position
            self.offset += _LEN.size + size
            self.count += 1
            if v2:
                self.running = running_next(self.running, raw)
                _note_head(self.heads, raw)
            yield position, raw

    def _read_trailer(self, handle: BinaryIO) -> None:
        """A malformed trailer is a framing error at the place of event `position + 1`."""
        position = self.position + 1
        where = f"{self.path}: the trailer after event {self.position} at byte {self.offset}"
        header = handle.read(_LEN.size)
        (size,) = _LEN.unpack(header) if len(header) == _LEN.size else (-1,)
        if size < 0 or size > MAX_TRAILER_BYTES:
            raise CastlogError(f"{where} has a bad length", position)
        data = handle.read(size)
        if len(data) < size:
            raise CastlogError(f"{where} is truncated ({len(data)} of {size} bytes)", position)
        try:
            self.trailer = parse_trailer(data)
        except CastlogError as exc:
            raise CastlogError(f"{where} is malformed: {exc}", position) from None
        if handle.read(1):
            raise CastlogError(f"{where} is followed by more bytes", position)

    def completeness(
        self, *, check_heads: bool = True, signer: bytes | None = None
    ) -> list[tuple[str, str]]:
        """After `rows` ran to the end: what the trailer says is missing or altered, as
        (rule, detail). Empty for an intact version-2 file; a version-1 file has nothing to
        check (see `version`). `check_heads=False` when reading resumed mid-file (the caller
        checks the trailer's heads elsewhere); `signer` requires that signer."""
        if self.version != 2 or not self.ended:
            return []
        found: list[tuple[str, str]] = []
        trailer = self.trailer
        if trailer is None:
            found.append((
                "castlog-truncated",
                f"the file ends after event {self.position} without its signed trailer:"
                " events may be missing from the end",
            ))  # fmt: skip
            return found
        if not trailer.signed_by_signer():
            found.append((
                "castlog-signature",
                f"the trailer's signature is not by its signer 0x{trailer.signer.hex()}",
            ))  # fmt: skip
        if signer is not None and trailer.signer != signer:
            found.append((
                "castlog-signer",
                f"the trailer is signed by 0x{trailer.signer.hex()}, not 0x{signer.hex()}",
            ))  # fmt: skip
        if trailer.count != self.position:
            missing = trailer.count - self.position
            what = f"{missing} missing" if missing > 0 else f"{-missing} extra"
            found.append((
                "castlog-count",
                f"the trailer counts {trailer.count} events, the file holds {self.position}"
                f" ({what})",
            ))  # fmt: skip
        elif trailer.running != self.running:
            found.append((
                "castlog-hash",
                "the events differ from those the trailer commits to (running hash mismatch):"
                " an event was replaced, reordered or altered",
            ))  # fmt: skip
        if check_heads:
            found.extend(_head_findings(trailer.heads, self.heads))
        return found


def _head_findings(expected: Heads, actual: Heads, limit: int = 20) -> list[tuple[str, str]]:
    found = []
    for author, (seq, eid) in sorted(expected.items()):
        have = actual.get(author)
        if have == (seq, eid):
            continue
        ends = "has no event of it" if have is None else f"ends at seq {have[0]}"
        if have is not None and have[0] == seq:
            ends = f"has another event there ({have[1].hex()})"
        found.append((
            "castlog-head",
            f"author 0x{author.hex()}: the trailer's last event is seq {seq} (id {eid.hex()}),"
            f" the file {ends}",
        ))  # fmt: skip
    for author in sorted(set(actual) - set(expected)):
        seq, eid = actual[author]
        found.append((
            "castlog-head",
            f"author 0x{author.hex()}: in the file (up to seq {seq}) but not in the trailer",
        ))  # fmt: skip
    if len(found) > limit:
        found = [*found[:limit], ("castlog-head", f"and {len(found) - limit} more authors")]
    return found


def read_castlog(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """(position, raw) for each framed event of a version 1 or 2 file, positions from 1. Raises
    CastlogError naming the position and byte offset of the first frame that is cut short or
    oversized. Does not check completeness: use `Castlog` for that."""
    yield from Castlog(Path(path)).rows()
