"""The operator's HTTP surface: `GET /metrics` as a Starlette route that any of the node's apps
can mount, `node_routes` (metrics, the dashboard and its read-only views) for the node's API
app, and the metrics-only listener (config `metrics.listen`) for processes that serve no
gateway API (orchestrators, workers), all served in the trio loop by Hypercorn's trio worker."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from node.api.metrics import CONTENT_TYPE

log = logging.getLogger("castnet.api.ops")
SHUTDOWN_S = 5.0


def metrics_route(render: Callable[[], Awaitable[bytes]]) -> Route:
    """`GET /metrics`: the Prometheus text exposition of `render()`."""

    async def metrics(request: Request) -> Response:
        return Response(await render(), media_type=CONTENT_TYPE)

    return Route("/metrics", metrics, methods=["GET", "HEAD"])


def node_routes(service: Any) -> list[BaseRoute]:
    """What a NodeService's API app mounts besides the job API: `/metrics`, the dashboard at
    `/` with its `/static/` files, and the views under `/v1/` (network, stake, log, audit,
    segments)."""
    from node.api.dashboard import dashboard_routes
    from node.api.views import NodeViews

    return [metrics_route(service.metrics.render), *dashboard_routes(NodeViews(service))]


async def _not_found(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": "not_found", "message": f"no such endpoint {request.url.path}"},
                        status_code=404)  # fmt: skip


async def _not_allowed(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": "method_not_allowed",
                         "message": f"{request.method} is not allowed on {request.url.path}"},
                        status_code=405)  # fmt: skip


def build_ops_app(routes: Sequence[BaseRoute]) -> Starlette:
    """A small app of read-only routes (the metrics-only listener); errors are JSON."""
    return Starlette(routes=list(routes), exception_handlers={404: _not_found, 405: _not_allowed})


async def serve_app(
    app: Any, host: str, port: int, *, task_status: Any = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve `app` on host:port until cancelled; `task_status.started((host, port))` once bound
    (port 0 picks a free one)."""
    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("castnet.api.http")
    config.graceful_timeout = SHUTDOWN_S
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(serve, app, config)
        url = urlsplit(urls[0])
        address = (url.hostname or host, int(url.port or port))
        log.info("serving http://%s:%d", *address)
        task_status.started(address)
