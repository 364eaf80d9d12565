"""Small helpers for the orchestrator's request streams: the asking peer's name for logs, a
REFUSED answer that tolerates a vanished asker, a close that tolerates a reset, and `answering`,
which wraps a request's handling in all three."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from libp2p.network.stream.net_stream import INetStream

from node.protocol import REFUSED, Refused
from p2p.errors import ProtocolError
from p2p.framing import MessageStream
from storage.errors import StoreClosed

log = logging.getLogger("castnet.orchestrator")


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


@contextlib.asynccontextmanager
async def answering(
    stream: INetStream, ms: MessageStream, what: str, on_refused: Callable[[], None] | None = None
) -> AsyncIterator[None]:
    """Handle one `what` request on `stream`: a `Refused` raised inside is answered (and
    `on_refused` called), a broken stream logged, a bug logged with its trace (the node stays
    up; the asker sees a reset), and the stream closed in every case."""
    try:
        yield
    except Refused as exc:
        if on_refused is not None:
            on_refused()
        log.info("%s from %s refused: %s", what, peer_name(stream), exc)
        await refuse(ms, exc)
    except ProtocolError as exc:
        log.info("%s stream from %s broke: %s", what, peer_name(stream), exc)
    except StoreClosed as exc:  # the node is stopping under the request
        log.info("%s from %s cut short: %s", what, peer_name(stream), exc)
    except Exception:  # a bug must not take the node down
        log.exception("%s from %s failed unexpectedly", what, peer_name(stream))
    finally:
        await close_stream(stream)
