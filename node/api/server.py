"""Serving the API app in the node's trio loop with Hypercorn's trio HTTP/1.1 connections.

`serve_api` binds the socket and runs its own accept loop so that it can bound the connections
of each client address (`api.max_client_connections`): when a client opens one more, its oldest
connection that is between requests (or has not finished sending one) is closed; when all are
busy with requests the new one gets a JSON 503. Hypercorn closes a connection that sends no
complete request head within `api.header_timeout_s`; the app waits at most `api.body_timeout_s`
for each piece of a body. Errors Hypercorn answers itself (malformed or oversized request heads)
are JSON like every other error. A client that goes away is logged at debug level, never with a
traceback."""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
from dataclasses import dataclass, field
from typing import Any

import h11
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Event, Updated
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.utils import wrap_app
from starlette.applications import Starlette

from node.api.app import GatewayApi, build_app
from node.api.guard import MAX_HEAD_BYTES, error_body

__all__ = ["ApiServeError", "GatewayApi", "serve_api"]

log = logging.getLogger("castnet.api")
BACKLOG = 128
_HEAD_ERRORS = {
    400: ("bad_request", "malformed request line or headers"),
    431: ("headers_too_large", f"the request head exceeds {MAX_HEAD_BYTES} bytes"),
}


class ApiServeError(Exception):
    """The API cannot listen (address in use, not available)."""


class _JsonErrorsH11(H11Protocol):
    """Hypercorn's HTTP/1.1 protocol, answering the errors it finds itself with a JSON body."""

    async def _send_error_response(self, status_code: int) -> None:
        code, message = _HEAD_ERRORS.get(status_code, ("error", f"HTTP {status_code}"))
        body = error_body(code, message)
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", b"%d" % len(body)), (b"connection", b"close"),
                   *self.config.response_headers("h11")]  # fmt: skip
        await self._send_h11_event(h11.Response(status_code=status_code, headers=headers))
        await self._send_h11_event(h11.Data(data=body))
        await self._send_h11_event(h11.EndOfMessage())


class _Connection(TCPServer):
    """One HTTP connection as Hypercorn serves it, with `_JsonErrorsH11` for HTTP/1.1; `conn`
    follows whether it is in a request (Hypercorn's idle/busy updates: busy from a complete
    request head until the response is sent)."""

    conn: _Conn

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, Updated):
            self.conn.busy = not event.idle
        await super().protocol_send(event)

    @property
    def protocol(self) -> Any:
        return self._wrapper

    @protocol.setter
    def protocol(self, wrapper: Any) -> None:
        if type(wrapper.protocol) is H11Protocol:
            wrapper.protocol.__class__ = _JsonErrorsH11
        self._wrapper = wrapper


@dataclass(eq=False)
class _Conn:
    opened: float
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    busy: bool = False  # in a request: from its complete head until its response is sent


class _Clients:
    """Open connections by client address."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.by_host: dict[str, dict[int, _Conn]] = {}

    def admit(self, host: str, port: int) -> _Conn | None:
        conns = self.by_host.setdefault(host, {})
        if len(conns) >= self.limit:
            idle = [(c.opened, p) for p, c in conns.items() if not c.busy]
            if not idle:
                return None
            _, oldest = min(idle)
            conns.pop(oldest).scope.cancel()
        conn = conns[port] = _Conn(trio.current_time())
        return conn

    def leave(self, host: str, port: int, conn: _Conn) -> None:
        conns = self.by_host.get(host, {})
        if conns.get(port) is conn:
            del conns[port]
        if not conns:
            self.by_host.pop(host, None)


def _hypercorn_config(api: GatewayApi) -> HypercornConfig:
    config = HypercornConfig()
    config.keep_alive_timeout = api.config.header_timeout_s  # idle until a full request head
    config.h11_max_incomplete_size = MAX_HEAD_BYTES
    config.include_server_header = False
    config.graceful_timeout = 1.0
    config.accesslog = None
    config.errorlog = logging.getLogger("castnet.api.http")
    return config


async def _refuse_busy(stream: trio.SocketStream) -> None:
    message = "this client has too many requests in progress (api.max_client_connections)"
    body = error_body("too_many_connections", message)
    head = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))  # fmt: skip
    with (
        trio.move_on_after(1.0),
        contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
    ):
        await stream.send_all(head + body)
    await stream.aclose()


async def serve_api(
    api: GatewayApi,
    *,
    app: Starlette | None = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` (default: `build_app(api)`) until cancelled;
    `task_status.started((host, port))` with the bound address."""
    cfg = api.config
    family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        await sock.bind((cfg.host, cfg.port))
    except OSError as exc:
        sock.close()
        why = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc.strerror})"
        raise ApiServeError(f"API address {cfg.host}:{cfg.port} {why}") from None
    sock.listen(BACKLOG)
    host, port = sock.getsockname()[:2]
    api.address = (str(host), int(port))
    clients = _Clients(cfg.max_client_connections)
    hconfig = _hypercorn_config(api)
    context = WorkerContext(None)
    asgi = wrap_app(app or build_app(api), hconfig.wsgi_max_body_size, "asgi")  # type: ignore[arg-type]

    async def handle(stream: trio.SocketStream) -> None:
        try:
            peer = stream.socket.getpeername()
        except OSError:  # gone already
            await stream.aclose()
            return
        client_host, client_port = str(peer[0]), int(peer[1])
        conn = clients.admit(client_host, client_port)
        if conn is None:
            log.info("refused a connection from %s: too many in progress", client_host)
            await _refuse_busy(stream)
            return
        try:
            connection = _Connection(asgi, hconfig, context, {}, stream)  # type: ignore[arg-type]
            connection.conn = conn
            with conn.scope:
                await connection.run()
        finally:
            clients.leave(client_host, client_port, conn)
            with trio.CancelScope(shield=True):
                await stream.aclose()

    log.info("gateway API on http://%s:%s", host, port)
    listener = trio.SocketListener(sock)
    async with trio.open_nursery() as nursery:
        task_status.started(api.address)
        await trio.serve_listeners(handle, [listener], handler_nursery=nursery)
