"""Host mode: serve ambassadors inside labelled containers' network namespaces, from this process.

For each running container labelled ``waypost.connect=redis,api:8080,db:5432@pg``, every route
gets a loopback address 127.127.X.Y *inside the container's namespace* (a listening socket made
there by :class:`~waypost.ambassador.netns.NamespaceBinder`), and the container's hosts file maps
the dialled name to it. Accepted connections are forwarded from this process's namespace by the
same :class:`~waypost.ambassador.routes.Route` the sidecar uses. One catalog watch per service
feeds every container that dials it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from waypost.ambassador.connect import LABEL, ConnectSpec, parse_connect_label
from waypost.ambassador.hostsfile import allocate, read_waypost_lines, update_file
from waypost.ambassador.netns import NamespaceBinder, NamespaceError
from waypost.ambassador.routes import (
    ConnLimiter,
    Options,
    Route,
    RouteSpec,
    connection_limit,
    raise_fd_limit,
)
from waypost.docker_events import CONNECTED, CONTAINER, DISCONNECTED, DockerAPI, DockerEvent, EventBridge

if TYPE_CHECKING:
    from waypost.catalog import CatalogClient, Instance

log = logging.getLogger("waypost.ambassador.inject")

# Container actions after which its attachment must be re-checked.
RECHECK_ACTIONS = {"start", "restart", "die", "stop", "kill", "destroy", "oom", "unpause", "rename", "update"}

Subscriber = Callable[[list["Instance"]], None]


class ServiceFeed:
    """One catalog watch per (service, tag), fanned out to every subscribed route."""

    def __init__(self, catalog: CatalogClient) -> None:
        self.catalog = catalog
        self._subs: dict[tuple[str, str | None], set[Subscriber]] = {}
        self._tasks: dict[tuple[str, str | None], asyncio.Task[None]] = {}
        self._latest: dict[tuple[str, str | None], list[Instance]] = {}
        self._changed: dict[tuple[str, str | None], asyncio.Event] = {}

    def subscribe(self, service: str, tag: str | None, callback: Subscriber) -> None:
        key = (service, tag)
        self._subs.setdefault(key, set()).add(callback)
        if key not in self._tasks:
            self._changed.setdefault(key, asyncio.Event())
            self._tasks[key] = asyncio.get_running_loop().create_task(self._follow(key), name=f"feed {key}")
        elif key in self._latest:
            callback(self._latest[key])

    def unsubscribe(self, service: str, tag: str | None, callback: Subscriber) -> None:
        key = (service, tag)
        subs = self._subs.get(key)
        if subs is None:
            return
        subs.discard(callback)
        if not subs:
            del self._subs[key]
            task = self._tasks.pop(key, None)
            if task is not None:
                task.cancel()
            self._latest.pop(key, None)
            self._changed.pop(key, None)

    async def first_port(self, service: str, tag: str | None, waiting: Callable[[], None] | None = None) -> int:
        """The port the app dials, from the service's first instance (waiting for one to appear):
        its container's own port when the registrator recorded it, else its registered port.
        `waiting` runs once if the catalog answered and the service has no instance yet."""
        key = (service, tag)
        while True:
            for inst in self._latest.get(key) or ():
                if inst.dial_port:
                    return inst.dial_port
            if waiting is not None and key in self._latest:
                waiting()
                waiting = None
            event = self._changed.setdefault(key, asyncio.Event())
            event.clear()
            await event.wait()

    async def _follow(self, key: tuple[str, str | None]) -> None:
        service, tag = key
        while True:
            try:
                async for instances in self.catalog.watch(service, tag, passing_only=True):
                    self._publish(key, instances)
            except asyncio.CancelledError:
                raise
            except Exception:  # the watch handles catalog errors itself; this guards against bugs
                log.exception("catalog watch of %s failed; restarting it in 1s", service)
            await asyncio.sleep(1.0)

    def _publish(self, key: tuple[str, str | None], instances: list[Instance]) -> None:
        self._latest[key] = instances
        for callback in list(self._subs.get(key, ())):
            try:
                callback(instances)
            except Exception:  # one route's bug must not starve the others
                log.exception("route update for %s failed", key[0])
        event = self._changed.get(key)
        if event is not None:
            event.set()

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._subs.clear()


RETRY_BASE = 1.0  # seconds before attaching again after a route could not listen; doubles up to:
RETRY_MAX = 60.0


def _name(info: dict[str, Any], cid: str) -> str:
    return str(info.get("Name") or cid[:12]).lstrip("/")


def _shared_namespace(info: dict[str, Any]) -> str:
    """Why a container's network namespace is not its own to serve (empty when it is)."""
    mode = str((info.get("HostConfig") or {}).get("NetworkMode") or "")
    if mode == "host":
        return ("it uses the host's network (--network host): its listeners would be the host's own, "
                "open to every process there")
    if mode.startswith("container:"):
        return (f"it shares the network of container {mode[len('container:'):][:12]} (and its hosts file): "
                "put the label on that container")
    return ""


@dataclass
class Attachment:
    """The routes served inside one container."""

    container_id: str
    name: str
    pid: int
    label: str
    hosts_path: str
    addresses: dict[str, str] = field(default_factory=dict)
    routes: list[tuple[ConnectSpec, Route, Subscriber]] = field(default_factory=list)
    pending: list[asyncio.Task[None]] = field(default_factory=list)
    unopened: list[tuple[ConnectSpec, int]] = field(default_factory=list)  # could not listen: retried
    broken: bool = False  # attaching raised: detached and attached again after a pause


class Injector:
    """Watches Docker and keeps an ambassador attached to every labelled running container."""

    def __init__(self, catalog: CatalogClient, options: Options | None = None, docker_url: str | None = None,
                 label: str = LABEL, events: EventBridge | None = None) -> None:
        """`events`: a started Docker event bridge to share (``waypost up``); else one of its own."""
        self.catalog = catalog
        self.options = options or Options(strict_services=False)
        self.label = label
        self.docker = DockerAPI(docker_url)
        self._docker_url = docker_url
        self.feed = ServiceFeed(catalog)
        self.limiter = ConnLimiter(self.options.max_conns)
        self.attached: dict[str, Attachment] = {}
        self.unavailable: str | None = None
        self._binder: NamespaceBinder | None = None
        self._queue: asyncio.Queue[DockerEvent] = asyncio.Queue()
        self._bridge: EventBridge | None = events
        self._owns_bridge = events is None
        self._consumer: asyncio.Task[None] | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._attempts: dict[str, int] = {}  # failed attaches in a row, per container
        self._retries: set[asyncio.Task[None]] = set()
        self.synced = asyncio.Event()

    async def start(self) -> bool:
        """Check privileges, then follow Docker. Returns False (after one clear error) when injection
        cannot work here; the caller decides whether that is fatal."""
        binder = NamespaceBinder()
        reason = await binder.check()
        if reason is not None:
            binder.close()
            self.unavailable = reason
            log.error("ambassador injection is off: %s", reason)
            return False
        self._binder = binder
        raise_fd_limit()
        self.limiter.limit = connection_limit(self.options.max_conns)
        loop = asyncio.get_running_loop()
        if self._owns_bridge:
            self._bridge = EventBridge(self._queue, loop, self._docker_url)
            self._bridge.start()
        else:
            self._bridge.subscribe(self._queue)  # type: ignore[union-attr]
        self._consumer = loop.create_task(self._consume(), name="injector events")
        return True

    async def stop(self) -> None:
        """Close every injected listener (hosts lines stay, so a restart reuses them)."""
        for task in list(self._retries):
            task.cancel()
        await asyncio.gather(*self._retries, return_exceptions=True)
        if self._consumer is not None:
            self._consumer.cancel()
            await asyncio.gather(self._consumer, return_exceptions=True)
        if self._bridge is not None:
            if self._owns_bridge:
                await self._bridge.stop()
            else:
                self._bridge.unsubscribe(self._queue)
        for cid in list(self.attached):
            await self._detach(cid)
        await self.feed.close()
        if self._binder is not None:
            self._binder.close()
            self._binder = None
        await self.docker.close()

    # ---- events ------------------------------------------------------------------------------

    async def _consume(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                if event.kind == CONNECTED:
                    await self.resync()
                elif event.kind == DISCONNECTED:
                    continue
                elif event.kind == CONTAINER and event.action in RECHECK_ACTIONS:
                    if (event.attributes and self.label not in event.attributes
                            and event.container_id not in self.attached):
                        continue  # unlabelled: events carry a container's labels, which never change
                    await self._check(event.container_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("injector: handling %s %s failed; the container's next event (or an engine "
                              "reconnect) looks at it again", event.action or event.kind, event.container_id[:12])

    async def resync(self) -> None:
        """Attach to every labelled running container and detach from the rest."""
        try:
            running = {cid for cid, _ in await self.docker.running()}
        except Exception as exc:
            log.warning("injector: cannot list containers (%s); waiting for the engine", exc)
            return
        for cid in list(self.attached):
            if cid not in running:
                await self._check(cid)
        results = await asyncio.gather(*(self._check(cid) for cid in running), return_exceptions=True)
        for cid, result in zip(running, results, strict=True):
            if isinstance(result, Exception):  # one container's trouble must not stop the others
                log.error("injector: container %s: %s: %s", cid[:12], type(result).__name__, result)
        self.synced.set()

    async def _check(self, cid: str) -> None:
        lock = self._locks.setdefault(cid, asyncio.Lock())
        async with lock:
            try:
                await self._reconcile(cid)
            except asyncio.CancelledError:
                raise
            except Exception:
                att = self.attached.get(cid)
                if att is None:
                    raise  # nothing attached: the next event or engine reconnect looks again
                log.exception("container %s: attaching failed", att.name)
                att.broken = True  # attached again from scratch, after a pause
                self._retry_later(cid, att)
            finally:
                if not lock._waiters and cid not in self.attached:  # type: ignore[attr-defined]
                    self._locks.pop(cid, None)

    async def _reconcile(self, cid: str) -> None:
        info = await self.docker.inspect(cid)
        state = (info or {}).get("State") or {}
        labels = ((info or {}).get("Config") or {}).get("Labels") or {}
        label = labels.get(self.label)
        pid = int(state.get("Pid") or 0)
        wanted = info is not None and state.get("Running") and pid > 0 and label is not None
        if wanted and (why := _shared_namespace(info)):  # type: ignore[arg-type]
            log.warning("container %s: %s; %s is not served there", _name(info, cid), why, self.label)  # type: ignore[arg-type]
            wanted = False
        current = self.attached.get(cid)
        if current is not None and (not wanted or current.pid != pid or current.label != label
                                    or current.broken):
            await self._detach(cid)
            current = None
        if current is not None and wanted and current.name != _name(info, cid):  # type: ignore[arg-type]
            self._renamed(current, _name(info, cid))  # type: ignore[arg-type]
        fresh = False
        if wanted and current is None:
            await self._attach(cid, info, pid, label)  # type: ignore[arg-type]
            current, fresh = self.attached.get(cid), True
        if current is not None and current.unopened:
            if not fresh:
                await self._reopen(current)
            if current.unopened:
                self._retry_later(cid, current)
                return
        self._attempts.pop(cid, None)

    @staticmethod
    def _renamed(att: Attachment, name: str) -> None:
        """`docker rename`: the status page, logs and metrics use the new name from now on."""
        log.info("container %s: renamed to %s", att.name, name)
        att.name = name
        for spec, route, _ in att.routes:
            route.name = route.balancer.name = f"{name}/{spec.name}"

    async def _reopen(self, att: Attachment) -> None:
        """Try again the routes that could not listen (the others keep their connections)."""
        unopened, att.unopened = att.unopened, []
        for spec, port in unopened:
            await self._open_route(att, spec, port)

    def _retry_later(self, cid: str, att: Attachment) -> None:
        """Look at the container again after a growing pause: a route could not listen, or attaching
        failed, and the container lives on."""
        n = self._attempts[cid] = self._attempts.get(cid, 0) + 1
        delay = min(RETRY_BASE * 2 ** min(n - 1, 8), RETRY_MAX)
        log.warning("container %s: trying again in %gs", att.name, delay)

        async def retry() -> None:
            await asyncio.sleep(delay)
            if self.attached.get(cid) is att:
                try:
                    await self._check(cid)
                except Exception:  # a task of its own: nobody above would log it
                    log.exception("container %s: trying again failed", att.name)

        task = asyncio.get_running_loop().create_task(retry(), name=f"injector retry {cid[:12]}")
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    # ---- attach / detach ---------------------------------------------------------------------

    async def _attach(self, cid: str, info: dict[str, Any], pid: int, label: str) -> None:
        name = _name(info, cid)
        specs, warnings = parse_connect_label(label)
        for warning in warnings:
            log.warning("container %s: %s", name, warning)
        hosts_path = info.get("HostsPath") or ""
        user_file = _user_hosts_mount(info)
        if user_file is not None:
            # `-v FILE:/etc/hosts`: Docker then reports FILE as HostsPath. It is the user's file (maybe
            # the host's own /etc/hosts, maybe mounted read-only): never ours to edit.
            hosts_path = ""
            log.warning("container %s: its /etc/hosts is mounted from %s (-v …:/etc/hosts), which waypost "
                        "leaves alone; names won't resolve, the apps must dial the 127.127.x.y addresses",
                        name, user_file)
        elif not hosts_path or not os.path.exists(hosts_path):
            hosts_path = f"/proc/{pid}/root/etc/hosts"
        att = Attachment(cid, name, pid, label, hosts_path)
        self.attached[cid] = att
        text = ""
        if hosts_path:
            try:
                text = await self._binder.run(_read_text, hosts_path)  # type: ignore[union-attr]
            except OSError as exc:
                log.warning("container %s: cannot read its hosts file %s (%s); names won't resolve, "
                            "the apps must dial the 127.127.x.y addresses", name, hosts_path, exc.strerror)
        att.addresses = allocate([s.name for s in specs], read_waypost_lines(text))
        if hosts_path:
            try:
                await self._binder.run(update_file, hosts_path, att.addresses)  # type: ignore[union-attr]
            except OSError as exc:
                log.warning("container %s: cannot write its hosts file %s (%s); names won't resolve, "
                            "the apps must dial the 127.127.x.y addresses", name, hosts_path, exc.strerror)
        for spec in specs:
            if spec.port is not None:
                await self._open_route(att, spec, spec.port)
            else:
                task = asyncio.get_running_loop().create_task(self._open_when_port_known(att, spec))
                att.pending.append(task)
        log.info("container %s: ambassador attached (%s)", name,
                 ", ".join(f"{s.name}→{s.service}@{att.addresses[s.name]}" for s in specs) or "no routes")

    async def _open_when_port_known(self, att: Attachment, spec: ConnectSpec) -> None:
        """Open the route once the service's port is known (keeping its watch alive)."""
        placeholder: Subscriber = lambda _instances: None  # noqa: E731
        self.feed.subscribe(spec.service, spec.tag, placeholder)
        try:
            def waiting() -> None:
                log.info("container %s: %s listens once service %s has a passing instance (its port comes from "
                         "the catalog; name it in the label, %s:PORT, to listen at once)", att.name, spec.name,
                         spec.service, spec.name)

            port = await self.feed.first_port(spec.service, spec.tag, waiting)
            if self.attached.get(att.container_id) is att:
                await self._open_route(att, spec, port)
        finally:
            self.feed.unsubscribe(spec.service, spec.tag, placeholder)

    async def _open_route(self, att: Attachment, spec: ConnectSpec, port: int) -> None:
        assert self._binder is not None
        address = att.addresses[spec.name]
        try:
            sock = await self._binder.listen(att.pid, address, port, self.options.backlog)
        except (NamespaceError, OSError) as exc:
            log.warning("container %s: cannot listen on %s:%d for %s (%s)", att.name, address, port, spec.name,
                        exc.strerror or exc)
            if exc.errno != errno.ESRCH:  # the container's process is not gone: worth another try
                att.unopened.append((spec, port))
            return
        route_spec = RouteSpec(address, port, service=spec.service, tag=spec.tag,
                               text=f"{address}:{port}={spec.service}" + (f"#{spec.tag}" if spec.tag else ""))
        route = Route(route_spec, self.options, None, self.limiter, name=f"{att.name}/{spec.name}")
        await route.start(sock)
        callback: Subscriber = route.set_backends
        att.routes.append((spec, route, callback))
        self.feed.subscribe(spec.service, spec.tag, callback)

    async def _detach(self, cid: str) -> None:
        att = self.attached.pop(cid, None)
        if att is None:
            return
        for task in att.pending:
            task.cancel()
        await asyncio.gather(*att.pending, return_exceptions=True)
        for spec, route, callback in att.routes:
            self.feed.unsubscribe(spec.service, spec.tag, callback)
            try:
                await route.stop()
            except Exception:  # the container is forgotten: every one of its routes must stop
                log.exception("container %s: stopping route %s failed", att.name, route.name)
        log.info("container %s: ambassador detached", att.name)

    # ---- views -------------------------------------------------------------------------------

    @property
    def routes(self) -> list[Route]:
        """Every injected route (the shape the ambassador's metrics collector reads)."""
        return [route for att in self.attached.values() for _, route, _ in att.routes]

    def snapshot(self) -> list[dict[str, Any]]:
        """Per attached container: its routes with backends and connection counts."""
        out = []
        for att in self.attached.values():
            routes = []
            for spec, route, _ in att.routes:
                snap = route.snapshot()
                snap["name"] = spec.name
                routes.append(snap)
            out.append({"client": att.name, "container": att.container_id[:12], "routes": routes})
        return out


def _user_hosts_mount(info: dict[str, Any]) -> str | None:
    """The source of a user mount over the container's /etc/hosts (``-v FILE:/etc/hosts``), if any."""
    for mount in info.get("Mounts") or ():
        if isinstance(mount, dict) and str(mount.get("Destination") or "").rstrip("/") == "/etc/hosts":
            return str(mount.get("Source") or mount.get("Name") or "a volume")
    return None


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8", errors="surrogateescape") as fh:
        return fh.read()
