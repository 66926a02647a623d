"""`waypost up`'s own HTTP routes: the status page, its JSON, /metrics and /healthz."""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib import resources
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

StatusSource = Callable[[], dict[str, Any]]


def status_page() -> bytes:
    """The self-refreshing HTML status page (plain HTML + a little JS, no build step)."""
    return resources.files("waypost").joinpath("static/status.html").read_bytes()


def add_status_routes(app: web.Application, status: StatusSource, registries: list[CollectorRegistry],
                      healthy: Callable[[], bool]) -> None:
    """Serve ``/`` (page), ``/v1/waypost/status`` (JSON), ``/metrics`` and ``/healthz`` on `app`."""
    page = status_page()

    async def index(_request: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/html", charset="utf-8")

    async def status_json(_request: web.Request) -> web.Response:
        data = status()
        data["time"] = time.time()
        return web.json_response(data)

    async def metrics(_request: web.Request) -> web.Response:
        body = b"".join(generate_latest(r) for r in registries)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_request: web.Request) -> web.Response:
        ok = healthy()
        return web.Response(status=200 if ok else 503, text="ok\n" if ok else "degraded\n")

    app.router.add_get("/", index)
    app.router.add_get("/v1/waypost/status", status_json)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
