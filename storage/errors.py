"""The storage package's exception hierarchy."""

from __future__ import annotations


class StorageError(Exception):
    """Base of every error raised by `storage`."""


class StoreCorrupt(StorageError):
    """A database, blob or file whose content does not match what it claims."""


class CastlogError(StorageError):
    """A `.castlog` file that is not one, or is truncated or malformed at event `position`."""

    def __init__(self, message: str, position: int = 0) -> None:
        super().__init__(message)
        self.position = position


class BlobNotFound(StorageError):
    """No blob with that hash in the store."""


class StoreClosed(StorageError):
    """An append after the store's writer stopped (its node is stopping)."""
