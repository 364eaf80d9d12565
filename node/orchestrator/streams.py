"""Small helpers for the orchestrator's request streams: the asking peer's name for logs, a
REFUSED answer that tolerates a vanished asker, and a close that tolerates a reset."""

from __future__ import annotations

import contextlib

from libp2p.network.stream.net_stream import INetStream

from node.protocol import REFUSED, Refused
from p2p.errors import ProtocolError
from p2p.framing import MessageStream


def peer_name(stream: INetStream) -> str:
    try:
        return stream.muxed_conn.peer_id.to_base58()
    except Exception:  # a reset stream may have lost its connection
        return "?"


async def refuse(ms: MessageStream, exc: Refused) -> None:
    with contextlib.suppress(ProtocolError):  # the asker may already be gone
        await ms.send([REFUSED, exc.code, exc.reason[:2000]])


async def close_stream(stream: INetStream) -> None:
    with contextlib.suppress(Exception):  # closing a stream the peer reset is fine
        await stream.close()
