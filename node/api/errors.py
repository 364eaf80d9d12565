"""The API's errors: an `ApiError` is answered as JSON `{"error": code, "message": text}`; a
message shown to a client never carries an absolute file path (`scrub`)."""

from __future__ import annotations

import re
from http import HTTPStatus

# an absolute path inside a message (not the path part of a URL): shown by its last part only
_ABS_PATH = re.compile(r"(?<![\w.:/\\])/(?:[^\s'\"/:,;()]+/)+([^\s'\"/:,;()]*)")


class ApiError(Exception):
    def __init__(
        self, status: HTTPStatus, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


class ClientGone(Exception):
    """The client went away mid-request: nothing to answer."""


def scrub(text: str) -> str:
    """A message without absolute file paths (each shown by its last part)."""
    return _ABS_PATH.sub(lambda m: m.group(1) or "/", text)
