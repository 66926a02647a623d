"""Desired vs registered: keep the catalog equal to the running containers, writing only differences.

Every trigger (a Docker event, a full sync on start / reconnect / ``--resync``) ends in the same
level-triggered step for one container: inspect it now, describe what it should have in the
catalog, compare with what this node has registered for it, and write the difference. Steps of one
container run one at a time and coalesce (a burst of events costs at most one extra step), so a
quick die→start always ends with the state Docker reports last.

Ownership: every registration carries ``waypost-node`` / ``waypost-container`` Meta markers. The
registered view is rebuilt from the catalog on every full sync (services whose ``waypost-node`` is
this node), so a registrator restart never duplicates, and a catalog that lost its state gets
everything back. ``--cleanup`` additionally removes gliderlabs-style IDs ``<node>:<name>:<port>``
without a marker (left by gliderlabs/registrator on this host) whose container is not running, and
registrations kept by ``--deregister on-success`` once the container is no longer running.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from consul.exceptions import ACLPermissionDenied, BadRequest

from waypost.catalog.model import ServiceDef

from .metadata import MARKER_CONTAINER, MARKER_NODE, describe, docker_check_id, docker_state
from .options import RegistratorOptions

log = logging.getLogger("waypost.registrator.sync")

MAINTENANCE_CHECK_PREFIX = "_service_maintenance:"  # Consul's check for a service in maintenance
CALL_TIMEOUT = 15.0
DOCKER_CHECK_REFRESH = 24 * 3600.0
_LEGACY_ID = re.compile(r"^(.+?):([a-zA-Z0-9][a-zA-Z0-9_.-]+):[0-9]+(?::udp)?$")


class DockerSource(Protocol):
    """What the reconciler needs from the Docker engine (see :class:`events.DockerAPI`)."""

    async def inspect(self, container_id: str) -> dict[str, Any] | None: ...

    async def running(self) -> list[tuple[str, str]]: ...


class CatalogWriter(Protocol):
    """The subset of :class:`waypost.catalog.CatalogClient` the reconciler uses."""

    async def register(self, service: ServiceDef, replace_existing_checks: bool = True) -> None: ...

    async def deregister(self, service_id: str) -> None: ...

    async def update_ttl(self, check_id: str, status: str, output: str = "") -> bool | None: ...

    async def local_services(self, filter_expr: str | None = None) -> dict[str, ServiceDef]: ...

    async def local_checks(self) -> dict[str, dict[str, Any]]: ...


@dataclass(slots=True)
class Registered:
    """One registration this node owns, as last written or read back."""

    service: ServiceDef
    container: str
    checks: frozenset[str]
    docker_status: str | None
    docker_updated: float = 0.0


@dataclass(slots=True)
class _Work:
    dirty: bool = False
    sweep: bool = False
    task: asyncio.Task[None] | None = None


def is_running(container: dict[str, Any] | None) -> bool:
    """Running (paused counts as running) and not in a restart loop."""
    state = (container or {}).get("State") or {}
    return bool(state.get("Running")) and not state.get("Restarting")


def failed_exit(container: dict[str, Any]) -> bool:
    """Exited with a non-zero code that is not a signal (gliderlabs' on-success rule)."""
    state = container.get("State") or {}
    code = int(state.get("ExitCode") or 0)
    return not is_running(container) and code != 0 and not code & 128


def _docker_status(service: ServiceDef) -> str | None:
    wanted = docker_check_id(service.id)
    for check in service.checks:
        if check.check_id == wanted:
            return check.initial_status
    return None


class Reconciler:
    """Applies desired state per container with ordering, coalescing and retry with backoff."""

    def __init__(
        self,
        catalog: CatalogWriter,
        docker: DockerSource,
        options: RegistratorOptions,
        default_ip: str = "",
        min_backoff: float = 0.1,
        max_backoff: float | None = None,
    ) -> None:
        if not options.node:
            raise ValueError("RegistratorOptions.node must be resolved before reconciling")
        self.catalog = catalog
        self.docker = docker
        self.options = options
        self.default_ip = default_ip
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff if max_backoff is not None else max(options.retry_interval, min_backoff)
        self.registered: dict[str, Registered] = {}
        self._work: dict[str, _Work] = {}
        self._warned: dict[str, tuple[str, ...]] = {}
        self._live: dict[str, set[str]] = {}  # running container → the service IDs it wants
        self._sync_lock = asyncio.Lock()
        self._closed = False
        self.syncs = 0
        self.last_sync = 0.0
        self.writes = 0
        self.errors = 0
        self.warnings = 0
        self.catalog_ok = True

    # ---- per-container ordered work -------------------------------------------------------------

    def knows(self, container_id: str) -> bool:
        """Whether the container is running with services or has registrations."""
        return container_id in self._live or any(r.container == container_id for r in self.registered.values())

    def kick(self, container_id: str, sweep: bool = False) -> asyncio.Task[None]:
        """Schedule a reconcile of one container after any running for it; returns its task."""
        work = self._work.get(container_id)
        if work is None:
            work = self._work[container_id] = _Work()
        work.dirty = True
        work.sweep = work.sweep or sweep
        if work.task is None or work.task.done():
            work.task = asyncio.get_running_loop().create_task(
                self._run(container_id, work), name=f"reconcile-{container_id[:12]}"
            )
        return work.task

    async def _run(self, container_id: str, work: _Work) -> None:
        backoff = self.min_backoff
        failures = 0
        while work.dirty and not self._closed:
            work.dirty = False
            sweep, work.sweep = work.sweep, False
            try:
                await self.reconcile(container_id, sweep)
            except asyncio.CancelledError:
                raise
            except BadRequest as exc:  # the catalog answered and said no: retrying can't change that
                self.errors += 1
                log.warning("container %s: the catalog rejected its registration (%s); fix its SERVICE_* "
                            "labels or env; tried again when the container changes or at the next resync",
                            container_id[:12], _describe_error(exc))
            except ACLPermissionDenied as exc:  # answered too: retrying forever would hold up every sync
                self.errors += 1
                log.warning("container %s: the catalog refused the write (ACL: %s); give the token "
                            "(--catalog-token / CONSUL_HTTP_TOKEN) service:write on its services; tried again "
                            "when the container changes or at the next resync", container_id[:12],
                            _describe_error(exc))
            except Exception as exc:  # noqa: BLE001 - catalog or engine down: retry this container
                work.dirty = True
                work.sweep = work.sweep or sweep
                failures += 1
                self.errors += 1
                if failures == 1:
                    log.warning("container %s: %s; retrying with backoff", container_id[:12], _describe_error(exc))
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, self.max_backoff)
            else:
                if failures:
                    log.info("container %s: reconciled after %d retries", container_id[:12], failures)
                failures = 0
                backoff = self.min_backoff
        if self._work.get(container_id) is work and not work.dirty:
            del self._work[container_id]

    async def _call(self, make: Callable[[], Awaitable[Any]]) -> Any:
        try:
            async with asyncio.timeout(CALL_TIMEOUT):  # not wait_for: see waypost/catalog/watch.py
                result = await make()
        except (BadRequest, ACLPermissionDenied):
            self.catalog_ok = True  # it answered
            raise
        except Exception:
            self.catalog_ok = False
            raise
        self.catalog_ok = True
        return result

    async def reconcile(self, container_id: str, sweep: bool = False) -> None:
        """Make the catalog match one container now (raises on catalog/engine errors)."""
        doc = await self.docker.inspect(container_id)
        current = {sid: reg for sid, reg in self.registered.items() if reg.container == container_id}
        desired: dict[str, ServiceDef] = {}
        if doc is not None and is_running(doc):
            peer = None
            mode = str((doc.get("HostConfig") or {}).get("NetworkMode") or "")
            if self.options.internal and mode.startswith("container:"):
                peer = await self.docker.inspect(mode.split(":", 1)[1])
            described = describe(doc, self.options, self.default_ip, peer)
            self._log_warnings(container_id, described.warnings)
            desired = {svc.id: svc for svc in described.services}
        elif doc is not None and self.options.deregister == "on-success" and failed_exit(doc) and not (
            sweep and self.options.cleanup
        ):
            self._live.pop(container_id, None)
            if current:
                log.info("container %s exited with code %s: keeping its registrations (--deregister on-success)",
                         container_id[:12], (doc.get("State") or {}).get("ExitCode"))
            return
        else:
            self._warned.pop(container_id, None)

        if desired:
            self._live[container_id] = set(desired)
        else:
            self._live.pop(container_id, None)
        for sid, service in desired.items():
            reg = self.registered.get(sid)
            if reg is not None and reg.container != container_id and sid in self._live.get(reg.container, ()):
                self._log_warnings(container_id + sid, (
                    f"container {container_id[:12]}: service ID {sid!r} is already registered for running "
                    f"container {reg.container[:12]}; set a different SERVICE_ID",))
                continue
            want_checks = frozenset(c.check_id for c in service.checks)
            want_status = _docker_status(service)
            if (
                reg is None
                or reg.container != container_id
                or reg.checks != want_checks
                or not service.same_registration(reg.service)
            ):
                await self._call(lambda s=service: self.catalog.register(s))
                self.writes += 1
                self.registered[sid] = Registered(service, container_id, want_checks, want_status, time.time())
                log.info("registered %s (%s at %s:%d) for container %s", sid, service.name, service.address,
                         service.port, container_id[:12])
            elif want_status is not None and reg.docker_status != want_status:
                await self._update_docker_check(sid, want_status, doc)
                reg.service = service
        for sid in current.keys() - desired.keys():
            await self._call(lambda s=sid: self.catalog.deregister(s))
            self.writes += 1
            self.registered.pop(sid, None)
            log.info("deregistered %s (container %s %s)", sid, container_id[:12],
                     "gone" if doc is None else "not running" if not is_running(doc) else "changed")
            for other, sids in self._live.items():
                if other != container_id and sid in sids:
                    self.kick(other)  # it wanted the same ID: it may have it now

    async def _update_docker_check(self, sid: str, status: str, doc: dict[str, Any] | None) -> None:
        state = docker_state(doc or {}, self.options.docker_health)
        output = state[1] if state else ""
        found = await self._call(lambda: self.catalog.update_ttl(docker_check_id(sid), status, output))
        self.writes += 1
        reg = self.registered[sid]
        if found is False:  # the catalog lost it (reaped by DeregisterCriticalServiceAfter, removed by hand)
            log.warning("%s: the catalog no longer has it; registering it again", sid)
            self.registered.pop(sid, None)
            self.kick(reg.container)
            return
        reg.docker_status = status
        reg.docker_updated = time.time()
        log.info("%s: docker check %s (%s)", sid, status, output)

    def _log_warnings(self, container_id: str, warnings: tuple[str, ...]) -> None:
        if self._warned.get(container_id) == warnings:
            return  # already said, don't repeat on every resync
        self._warned[container_id] = warnings
        for warning in warnings:
            self.warnings += 1
            log.warning("%s", warning)

    # ---- full sync ------------------------------------------------------------------------------

    async def _retry(self, what: str, make: Callable[[], Awaitable[Any]]) -> Any:
        backoff = self.min_backoff
        failures = 0
        while True:
            try:
                async with asyncio.timeout(CALL_TIMEOUT):
                    return await make()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - retried until it works or we are cancelled
                failures += 1
                self.errors += 1
                if failures == 1:
                    log.warning("sync: %s failed (%s); retrying with backoff", what, _describe_error(exc))
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, self.max_backoff)

    async def load_registered(self) -> dict[str, ServiceDef]:
        """Rebuild the registered view from the catalog; returns every local service (all owners)."""
        services: dict[str, ServiceDef] = await self._retry("reading the catalog's services",
                                                           self.catalog.local_services)
        checks: dict[str, dict[str, Any]] = await self._retry("reading the catalog's checks",
                                                             self.catalog.local_checks)
        self.catalog_ok = True
        by_service: dict[str, set[str]] = {}
        status: dict[str, str] = {}
        for check_id, check in checks.items():
            if check_id.startswith(MAINTENANCE_CHECK_PREFIX):
                continue  # maintenance mode is the operator's, not part of what we register
            by_service.setdefault(str(check.get("ServiceID") or ""), set()).add(check_id)
            status[check_id] = str(check.get("Status") or "")
        now = time.time()
        previous = self.registered
        view: dict[str, Registered] = {}
        for sid, service in services.items():
            meta = service.meta_dict
            if meta.get(MARKER_NODE) != self.options.node:
                continue
            docker_id = docker_check_id(sid)
            view[sid] = Registered(
                service=service,
                container=meta.get(MARKER_CONTAINER, ""),
                checks=frozenset(by_service.get(sid, ())),
                docker_status=status.get(docker_id),
                # keep the last refresh time: a --resync shorter than the refresh period must not
                # postpone the TTL refresh forever
                docker_updated=previous[sid].docker_updated if sid in previous else now,
            )
        self.registered = view
        return services

    async def full_sync(self, reason: str = "") -> None:
        """Compare every running container with this node's registrations; write differences."""
        async with self._sync_lock:
            started = time.monotonic()
            services = await self.load_registered()
            running: list[tuple[str, str]] = await self._retry("listing containers", self.docker.running)
            if self.options.cleanup:
                await self._cleanup_legacy(services, {name for _, name in running})
            wanted = {cid for cid, _ in running} | {reg.container for reg in self.registered.values()}
            tasks = [self.kick(cid, sweep=True) for cid in sorted(wanted) if cid]
            if tasks:
                await asyncio.gather(*(asyncio.shield(t) for t in set(tasks)))
            self._forget_gone(wanted)
            self.syncs += 1
            self.last_sync = time.time()
            log.info("sync%s: %d running containers, %d registrations, %.0f ms",
                     f" ({reason})" if reason else "", len(running), len(self.registered),
                     (time.monotonic() - started) * 1000)

    def _forget_gone(self, alive: set[str]) -> None:
        """Drop per-container state of containers neither running nor registered (their events may
        have been missed while the engine was away)."""
        self._live = {cid: sids for cid, sids in self._live.items() if cid in alive}
        self._warned = {key: w for key, w in self._warned.items() if key[:64] in alive or key in alive}

    async def _cleanup_legacy(self, services: dict[str, ServiceDef], running_names: set[str]) -> None:
        for sid, service in services.items():
            if MARKER_NODE in service.meta_dict:
                continue  # owned by some Waypost node: not a legacy registration
            match = _LEGACY_ID.match(sid)
            if not match or match.group(1) != self.options.node or match.group(2) in running_names:
                continue
            try:
                await self._call(lambda s=sid: self.catalog.deregister(s))
            except Exception as exc:  # noqa: BLE001 - next sync tries again
                log.warning("cleanup: deregistering %s failed (%s)", sid, _describe_error(exc))
                continue
            self.writes += 1
            log.info("cleanup: removed dangling %s (no running container %s)", sid, match.group(2))

    async def refresh_docker_checks(self, max_age: float = DOCKER_CHECK_REFRESH) -> None:
        """Re-send docker TTL checks older than `max_age` so their long TTL never expires."""
        now = time.time()
        for sid, reg in list(self.registered.items()):
            if reg.docker_status is not None and now - reg.docker_updated > max_age:
                found = await self._call(lambda s=sid, st=reg.docker_status: self.catalog.update_ttl(
                    docker_check_id(s), st, "refreshed"))
                reg.docker_updated = now
                if found is False:
                    log.warning("%s: the catalog no longer has it; registering it again", sid)
                    self.registered.pop(sid, None)
                    self.kick(reg.container)

    async def deregister_all(self) -> None:
        """Remove every registration this node owns (``--deregister-on-exit``).

        The catalog is asked once more which registrations carry this node's marker: a write that
        was still in flight when :meth:`close` stopped the work may have landed without being recorded
        here, and leaving it would leak a registration for a container nobody watches."""
        owned = set(self.registered)
        try:
            services = await self._call(self.catalog.local_services)
            owned |= {sid for sid, svc in services.items() if svc.meta_dict.get(MARKER_NODE) == self.options.node}
        except Exception as exc:  # noqa: BLE001 - best effort: what we recorded is still removed
            log.warning("deregister on exit: could not list the catalog's services (%s); removing the %d "
                        "registration(s) recorded here", _describe_error(exc), len(owned))
        for sid in sorted(owned):
            try:
                await self._call(lambda s=sid: self.catalog.deregister(s))
                self.registered.pop(sid, None)
                log.info("deregistered %s on exit", sid)
            except Exception as exc:  # noqa: BLE001 - best effort on the way out
                log.warning("deregister %s on exit failed (%s)", sid, _describe_error(exc))

    async def idle(self) -> None:
        """Wait until no container work is pending (for tests and benchmarks)."""
        while self._work:
            tasks = [w.task for w in self._work.values() if w.task is not None]
            if not tasks:
                return
            await asyncio.wait(tasks)

    async def close(self, grace: float = 0.0) -> None:
        """Stop all container work (registrations stay as they are).

        No new reconcile starts; ones already running get up to `grace` seconds to finish their
        writes (so that a following :meth:`deregister_all` sees them), then are cancelled."""
        self._closed = True
        tasks = [w.task for w in self._work.values() if w.task is not None and not w.task.done()]
        if tasks and grace > 0:
            await asyncio.wait(tasks, timeout=grace)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._work.clear()


def _describe_error(exc: BaseException) -> str:
    text = str(exc)
    return exc.__class__.__name__ + (f": {text}" if text else "")
