"""The ambassador's admin HTTP: ``/metrics`` (Prometheus), ``/healthz`` and ``/v1/routes`` (JSON).

Metrics are read from the live counters at scrape time by :class:`AmbassadorCollector`, so the
data path never touches prometheus_client. ``waypost up`` can register the collector in its own
registry instead of running this server.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from waypost.listen import listening_socket

if TYPE_CHECKING:
    from waypost.ambassador.routes import Ambassador

log = logging.getLogger("waypost.ambassador")

PREFIX = "waypost_ambassador"
STATES = ("up", "ejected", "draining")


class AmbassadorCollector(Collector):
    """Prometheus metrics for every route and backend of one :class:`Ambassador`."""

    def __init__(self, ambassador: Ambassador) -> None:
        self.ambassador = ambassador

    def collect(self) -> Iterator[Metric]:
        amb = self.ambassador
        active = GaugeMetricFamily(f"{PREFIX}_connections_active", "Open client connections", labels=["route"])
        total = CounterMetricFamily(f"{PREFIX}_connections", "Client connections accepted", labels=["route"])
        refused = CounterMetricFamily(f"{PREFIX}_connections_refused",
                                      "Client connections refused or closed without a backend",
                                      labels=["route", "reason"])
        idle = CounterMetricFamily(f"{PREFIX}_idle_closed", "Connections closed by --idle-timeout",
                                   labels=["route"])
        b_active = GaugeMetricFamily(f"{PREFIX}_backend_connections_active", "Open connections per backend",
                                     labels=["route", "backend"])
        b_total = CounterMetricFamily(f"{PREFIX}_backend_connections", "Connections made per backend",
                                      labels=["route", "backend"])
        b_bytes = CounterMetricFamily(f"{PREFIX}_bytes", "Bytes forwarded per backend and direction "
                                      "(up: client to backend, down: backend to client)",
                                      labels=["route", "backend", "direction"])
        b_fail = CounterMetricFamily(f"{PREFIX}_connect_failures", "Failed connects per backend",
                                     labels=["route", "backend"])
        b_state = GaugeMetricFamily(f"{PREFIX}_backend_state", "1 for the backend's current state",
                                    labels=["route", "backend", "state"])
        for route in amb.routes:
            name = route.name
            c = route.counters
            active.add_metric([name], route.active)
            total.add_metric([name], c.total)
            refused.add_metric([name, "max_conns"], c.refused)
            refused.add_metric([name, "no_backend"], c.no_backend)
            refused.add_metric([name, "all_failed"], c.all_failed)
            idle.add_metric([name], c.idle_closed)
            route.sync_bytes()
            for b in route.balancer.all_backends():
                labels = [name, b.address]
                b_active.add_metric(labels, b.active)
                b_total.add_metric(labels, b.total)
                b_bytes.add_metric([*labels, "up"], b.bytes_up)
                b_bytes.add_metric([*labels, "down"], b.bytes_down)
                b_fail.add_metric(labels, b.connect_failures)
                state = b.state()
                for s in STATES:
                    b_state.add_metric([*labels, s], 1.0 if s == state else 0.0)
        limit = GaugeMetricFamily(f"{PREFIX}_max_connections", "The --max-conns limit in force")
        limit.add_metric([], amb.limiter.limit)
        fds = CounterMetricFamily(f"{PREFIX}_fd_exhausted", "Connections refused for lack of file descriptors")
        fds.add_metric([], amb.limiter.fd_exhausted)
        yield from (active, total, refused, idle, b_active, b_total, b_bytes, b_fail, b_state, limit, fds)


def make_registry(ambassador: Ambassador) -> CollectorRegistry:
    """A fresh registry holding only this ambassador's metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AmbassadorCollector(ambassador))
    return registry


def build_app(ambassador: Ambassador, registry: CollectorRegistry | None = None,
              token: str | None = None) -> web.Application:
    """The admin aiohttp app. With `token`, /metrics and /v1/routes need ``Authorization: Bearer TOKEN``."""
    registry = registry or make_registry(ambassador)

    def authorized(request: web.Request) -> bool:
        if not token:
            return True
        given = request.headers.get("Authorization", "")
        given = given[7:] if given.lower().startswith("bearer ") else request.headers.get("X-Waypost-Token", "")
        return hmac.compare_digest(given.encode(), token.encode())

    def deny() -> web.Response:
        return web.json_response({"error": "admin token required: send 'Authorization: Bearer TOKEN' "
                                  "(the --admin-token value)"}, status=401)

    async def metrics(request: web.Request) -> web.Response:
        if not authorized(request):
            return deny()
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        ok = ambassador.started
        return web.json_response({"status": "ok" if ok else "starting", "routes": len(ambassador.routes)},
                                 status=200 if ok else 503)

    async def routes(request: web.Request) -> web.Response:
        if not authorized(request):
            return deny()
        return web.json_response(ambassador.snapshot())

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/routes", routes)
    return app


class AdminServer:
    """Runs :func:`build_app` on one address."""

    def __init__(self, ambassador: Ambassador, host: str, port: int, token: str | None = None) -> None:
        self.app = build_app(ambassador, token=token)
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        self._site: web.SockSite | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        sock = await listening_socket(self.host, self.port)
        self._site = web.SockSite(self._runner, sock)
        await self._site.start()
        self.port = sock.getsockname()[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
