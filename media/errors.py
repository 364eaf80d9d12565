"""The one exception hierarchy of `media/`: every failure a caller can act on is a `MediaError`."""

from __future__ import annotations


class MediaError(Exception):
    """Base of every error `media/` raises on bad input, bad arguments or a failed encode."""


class InvalidInput(MediaError):
    """The input cannot be opened or demuxed: missing, truncated, corrupt or not a media file."""


class EmptyInput(InvalidInput):
    """The input opened but holds no decodable video frames (zero length, or all frames broken)."""


class NoVideoStream(InvalidInput):
    """The input has no video stream (audio-only, subtitles, data)."""


class UnsupportedResolution(InvalidInput):
    """The video's frame size is outside what castnet will process."""


class InvalidProfile(MediaError):
    """A rendition profile (or a profile list such as "720p,480p") is malformed or unknown."""


class EncoderUnavailable(MediaError):
    """No usable encoder exists in this build or on this machine for a requested codec."""


class TranscodeFailed(MediaError):
    """Decoding, scaling, encoding or muxing failed part-way; nothing partial is returned."""


class OutputError(MediaError):
    """An output location cannot be written (exists and is not empty, not a directory, no space)."""


class InvalidPlaylist(MediaError):
    """An HLS playlist is missing, unreadable or refers to segments that do not exist."""
