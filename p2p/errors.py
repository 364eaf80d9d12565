"""The p2p package's exception hierarchy: what a peer, a stream or the local setup got wrong."""

from __future__ import annotations


class P2PError(Exception):
    """Base of every error raised by `p2p`."""


class IdentityError(P2PError):
    """The node's libp2p key file is missing, unreadable or malformed."""


class ProtocolError(P2PError):
    """A peer broke a wire protocol: malformed, oversized or unexpected message."""


class FrameTooLarge(ProtocolError):
    """A frame announced more bytes than the limit for its stream."""


class StreamTimeout(ProtocolError):
    """A peer did not send the expected bytes in time."""


class StreamClosed(ProtocolError):
    """The stream ended in the middle of a frame or before an expected message."""


class WrongNetwork(ProtocolError):
    """The peer runs another network id; its events must not mix with ours."""


class BlobMismatch(ProtocolError):
    """A transferred blob does not match the hash or size it was announced with."""


class PeerBanned(P2PError):
    """The peer was disconnected for sending invalid messages and is refused for a while."""
