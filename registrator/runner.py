"""The registrator as one embeddable object: Docker events in, catalog writes out.

Used by ``waypost registrator`` (see :mod:`waypost.registrator.cli`) and by ``waypost up``::

    registrator = Registrator(client, RegistratorOptions(resync=60))
    await registrator.start()      # returns once the catalog answered; syncing runs in the background
    ...
    await registrator.stop()       # leaves registrations in place unless deregister_on_exit

Node identity: ``--node``, else the Docker engine's own host name (``docker info`` → ``Name``),
which is the host's name even when the registrator runs in a container; ``socket.gethostname()``
only when the engine does not say.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import socket
import time
from typing import Any

from waypost.catalog import CatalogClient
from waypost.docker_events import CONNECTED, CONTAINER, DISCONNECTED, DockerAPI, DockerEvent, EventBridge

from .hostinfo import routable_ip
from .options import RegistratorOptions
from .sync import Reconciler

log = logging.getLogger("waypost.registrator")

# Actions that can change what a container should have registered; others (exec_*, attach, …) don't.
RELEVANT_ACTIONS = frozenset(
    {"start", "restart", "die", "stop", "destroy", "pause", "unpause", "health_status", "rename", "update"}
)
NETWORK_ACTIONS = frozenset({"network_connect", "network_disconnect"})
CATALOG_WATCH_WAIT = "10s"
HOUSEKEEPING_INTERVAL = 3600.0
EXIT_WRITE_GRACE = 5.0  # --deregister-on-exit: seconds in-flight writes get to land before the clean-up


class CatalogUnavailable(RuntimeError):
    """The catalog did not answer within ``--retry-attempts`` at start-up."""


class Registrator:
    """Keeps the catalog equal to this Docker host's running containers (see the package docs)."""

    def __init__(self, client: CatalogClient, options: RegistratorOptions | None = None,
                 docker_url: str | None = None, events: EventBridge | None = None) -> None:
        """`events`: a started Docker event bridge to share (``waypost up``); else one of its own."""
        self.client = client
        self.options = options or RegistratorOptions()
        self.docker_url = docker_url
        self.docker = DockerAPI(docker_url)
        self.reconciler: Reconciler | None = None
        self.default_ip = ""
        self._queue: asyncio.Queue[DockerEvent] = asyncio.Queue()
        self._bridge: EventBridge | None = events
        self._owns_bridge = events is None
        self._tasks: list[asyncio.Task[Any]] = []
        self._sync_task: asyncio.Task[None] | None = None
        self._sync_again = False
        self._ready = asyncio.Event()
        self.first_sync = asyncio.Event()
        self.events = 0
        self.catalog_restarts = 0
        self.catalog_reachable = True
        self.started_at = 0.0

    # ---- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Check the catalog (``retry_attempts`` × ``retry_interval``) and start watching Docker.

        Raises :class:`CatalogUnavailable` when the catalog never answered. Docker being down is
        not an error: the event bridge keeps retrying and syncs once the engine answers.
        """
        await self._wait_for_catalog()
        loop = asyncio.get_running_loop()
        self.started_at = time.time()
        if self._owns_bridge:
            self._bridge = EventBridge(self._queue, loop, self.docker_url)
            self._bridge.start()
        else:
            self._bridge.subscribe(self._queue)  # type: ignore[union-attr]
        self._tasks = [
            loop.create_task(self._consume(), name="registrator-events"),
            loop.create_task(self._watch_catalog(), name="registrator-catalog-watch"),
            loop.create_task(self._housekeeping(), name="registrator-housekeeping"),
        ]

    async def stop(self) -> None:
        """Stop watching; registrations stay unless ``deregister_on_exit``."""
        for task in self._tasks:
            task.cancel()
        if self._sync_task is not None:
            self._sync_task.cancel()
        pending = self._tasks + ([self._sync_task] if self._sync_task else [])
        await asyncio.gather(*pending, return_exceptions=True)
        self._tasks = []
        if self._bridge is not None:
            if self._owns_bridge:
                await self._bridge.stop()
            else:
                self._bridge.unsubscribe(self._queue)
        if self.reconciler is not None:
            await self.reconciler.close(grace=EXIT_WRITE_GRACE if self.options.deregister_on_exit else 0.0)
            if self.options.deregister_on_exit:
                await self.reconciler.deregister_all()
        await self.docker.close()

    async def __aenter__(self) -> Registrator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _wait_for_catalog(self) -> None:
        attempts = self.options.retry_attempts
        tried = 0
        while True:
            try:
                async with asyncio.timeout(10):
                    await self.client.local_services()
                return
            except Exception as exc:  # noqa: BLE001 - reported below, retried as configured
                tried += 1
                if 0 <= attempts < tried:
                    raise CatalogUnavailable(
                        f"catalog {self.client.url} did not answer after {tried} attempt(s) "
                        f"({exc.__class__.__name__}: {exc}); start it, fix --catalog, or raise --retry-attempts"
                    ) from exc
                log.warning("catalog %s not reachable (%s: %s); retrying in %.1fs", self.client.url,
                            exc.__class__.__name__, exc, self.options.retry_interval)
                await asyncio.sleep(self.options.retry_interval)

    # ---- docker events --------------------------------------------------------------------------

    async def _resolve_identity(self) -> None:
        node = self.options.node
        if not node:
            try:
                node = str((await self.docker.info()).get("Name") or "")
            except Exception as exc:  # noqa: BLE001 - fall back to our own host name
                log.warning("docker info failed (%s); using this process's host name as node", exc)
            node = node or socket.gethostname()
            self.options = dataclasses.replace(self.options, node=node)
        if not self.options.host_ip:
            self.default_ip = await routable_ip()
            if not self.default_ip:
                log.warning("could not find this host's routable IP; ports published on 0.0.0.0 are "
                            "registered without an address (the catalog node's address is used); pass --ip")
        self.reconciler = Reconciler(self.client, self.docker, self.options, self.default_ip,
                                     max_backoff=max(self.options.retry_interval, 0.5))
        log.info("registrator: node %r, address for published ports %s, %s ports", self.options.node,
                 self.options.host_ip or self.default_ip or "(node address)",
                 "exposed" if self.options.internal else "published")
        self._ready.set()

    async def _consume(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._handle(event)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop the event flow: log it and go on
                log.exception("handling docker event %s failed", event)

    async def _handle(self, event: DockerEvent) -> None:
        if event.kind == CONNECTED:
            if self.reconciler is None:
                await self._resolve_identity()
            log.info("connected to the docker engine; syncing")
            self.request_sync("docker connected")
        elif event.kind == DISCONNECTED:
            return
        elif event.kind == CONTAINER and event.action in RELEVANT_ACTIONS and self.reconciler is not None:
            self.events += 1
            self.reconciler.kick(event.container_id)
        elif (event.kind == CONTAINER and event.action in NETWORK_ACTIONS and self.options.internal
              and self.reconciler is not None and self.reconciler.knows(event.container_id)):
            # `docker network connect/disconnect` of a running container: its --internal address may
            # change (a starting container's connect is skipped: its start event follows)
            self.events += 1
            self.reconciler.kick(event.container_id)

    # ---- syncs ----------------------------------------------------------------------------------

    def request_sync(self, reason: str) -> None:
        """Run a full sync soon; requests made while one runs coalesce into one more."""
        if self.reconciler is None:
            return
        if self._sync_task is not None and not self._sync_task.done():
            self._sync_again = True
            return
        self._sync_task = asyncio.get_running_loop().create_task(self._sync_loop(reason), name="registrator-sync")

    async def _sync_loop(self, reason: str) -> None:
        assert self.reconciler is not None
        while True:
            self._sync_again = False
            await self.reconciler.full_sync(reason)
            self.first_sync.set()
            if not self._sync_again:
                return
            reason = "requested during the previous sync"

    async def sync_now(self, reason: str = "requested") -> None:
        """Run a full sync and return when it finished (waits for the engine's first answer)."""
        await self._ready.wait()
        assert self.reconciler is not None
        await self.reconciler.full_sync(reason)

    async def idle(self) -> None:
        """Return once no event is queued and no sync or container work is pending."""
        await self._ready.wait()
        assert self.reconciler is not None
        while True:
            await asyncio.sleep(0)
            if self._sync_task is not None and not self._sync_task.done():
                await asyncio.wait([self._sync_task])
                continue
            if not self._queue.empty():
                await asyncio.sleep(0.01)
                continue
            await self.reconciler.idle()
            if self._queue.empty() and (self._sync_task is None or self._sync_task.done()):
                return

    # ---- catalog watching and housekeeping ------------------------------------------------------

    async def _watch_catalog(self) -> None:
        """Detect a catalog restart (index went back, or it was unreachable) and resync."""
        watch = self.client.watch_services(wait=CATALOG_WATCH_WAIT)
        last_index = 0
        down = False
        backoff = 0.05
        while True:
            try:
                await watch.poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the catalog is down: wait for it
                if not down:
                    log.warning("catalog %s unreachable (%s); will resync when it is back",
                                self.client.url, exc.__class__.__name__)
                down = True
                self.catalog_reachable = False
                watch.index = 0
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, max(self.options.retry_interval, 0.5))
                continue
            backoff = 0.05
            if down or watch.index < last_index:
                self.catalog_restarts += 1
                log.info("catalog %s is back%s; re-registering what is missing", self.client.url,
                         " with a lower index (restarted)" if watch.index < last_index else "")
                self.request_sync("catalog back")
            down = False
            self.catalog_reachable = True
            last_index = watch.index

    async def _housekeeping(self) -> None:
        await self._ready.wait()
        assert self.reconciler is not None
        period = self.options.resync or HOUSEKEEPING_INTERVAL
        last_refresh = time.monotonic()
        while True:
            await asyncio.sleep(period)
            if self.options.resync:
                self.request_sync("periodic --resync")
            if time.monotonic() - last_refresh >= HOUSEKEEPING_INTERVAL:
                last_refresh = time.monotonic()
                with contextlib.suppress(Exception):
                    await self.reconciler.refresh_docker_checks()

    # ---- status ---------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """A JSON-able snapshot for ``waypost up``'s status page and logs."""
        rec = self.reconciler
        return {
            "node": self.options.node,
            "address": self.options.host_ip or self.default_ip,
            "docker_connected": bool(self._bridge and self._bridge.connected),
            "docker_connections": self._bridge.connections if self._bridge else 0,
            "catalog": self.client.url,
            "catalog_reachable": self.catalog_reachable and (rec.catalog_ok if rec else True),
            "catalog_restarts_seen": self.catalog_restarts,
            "events": self.events,
            "services": len(rec.registered) if rec else 0,
            "containers": len({r.container for r in rec.registered.values()}) if rec else 0,
            "syncs": rec.syncs if rec else 0,
            "last_sync": rec.last_sync if rec else 0.0,
            "writes": rec.writes if rec else 0,
            "errors": rec.errors if rec else 0,
            "metadata_warnings": rec.warnings if rec else 0,
        }
