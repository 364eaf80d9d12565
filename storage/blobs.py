"""Content-addressed blob store: segments, renditions and model files, named by keccak256.

Writes go to a temp file that is fsynced, then renamed into place, so a blob is either whole or
absent. Reads check the hash, so a corrupted file is an error, never silently served."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Protocol

from events.crypto import keccak256
from storage.errors import BlobNotFound, StoreCorrupt


class BlobStore(Protocol):
    def put(self, data: bytes) -> bytes: ...
    def get(self, digest: bytes) -> bytes: ...
    def has(self, digest: bytes) -> bool: ...


class DirBlobStore:
    """Blobs as files `<root>/<2 hex>/<64 hex>`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, digest: bytes) -> Path:
        if len(digest) != 32:
            raise ValueError("a blob digest has 32 bytes")
        name = digest.hex()
        return self.root / name[:2] / name

    def put(self, data: bytes) -> bytes:
        digest = keccak256(data)
        path = self._path(digest)
        if path.exists():
            return digest
        path.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return digest

    def get(self, digest: bytes) -> bytes:
        path = self._path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(digest.hex()) from None
        if keccak256(data) != digest:
            raise StoreCorrupt(f"blob {digest.hex()} does not match its hash")
        return data

    def has(self, digest: bytes) -> bool:
        return self._path(digest).exists()


class MemoryBlobStore:
    """In-memory twin of DirBlobStore for tests that need no disk; same contract."""

    def __init__(self) -> None:
        self._blobs: dict[bytes, bytes] = {}

    def put(self, data: bytes) -> bytes:
        digest = keccak256(data)
        self._blobs[digest] = bytes(data)
        return digest

    def get(self, digest: bytes) -> bytes:
        try:
            return self._blobs[digest]
        except KeyError:
            raise BlobNotFound(digest.hex()) from None

    def has(self, digest: bytes) -> bool:
        return digest in self._blobs
