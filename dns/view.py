"""The in-memory catalog view DNS answers from, kept fresh by blocking-query watches.

One watch lists service names; one watch per service follows its instances (with health). The
view keeps the last-known data while the catalog is unreachable and says so through ``stale``.
Listeners are called synchronously with the service name after every change, so the answer table
is rebuilt before the next query is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from waypost.catalog import CRITICAL, PASSING, Instance, Watch

if TYPE_CHECKING:
    from waypost.catalog import CatalogClient
    from waypost.catalog.reader import CatalogReader

log = logging.getLogger("waypost.dns.view")

Listener = Callable[[str], None]


class CatalogView:
    """Services and their instances as DNS should see them.

    ``apply(service, instances)`` replaces one service's instances (any health status; critical
    ones, and warning ones with ``only_passing``, are dropped); with a ``client`` the view calls it
    itself from catalog watches between ``start()`` and ``stop()``.
    """

    def __init__(
        self, client: CatalogClient | CatalogReader | None = None, only_passing: bool = False, wait: str = "30s"
    ) -> None:
        self.client = client
        self.only_passing = only_passing
        self.wait = wait
        self.services: dict[str, tuple[Instance, ...]] = {}  # healthy instances, sorted by ID
        self.everything: dict[str, tuple[Instance, ...]] = {}  # all instances, for node records
        self.updates = 0
        self._listeners: list[Listener] = []
        self._services_watch: Watch | None = None
        self._watches: dict[str, Watch] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self._main: asyncio.Task | None = None
        self._synced = asyncio.Event()

    # ---- data --------------------------------------------------------------------------------

    def healthy(self, instance: Instance) -> bool:
        """Whether DNS hands out this instance."""
        if instance.status == PASSING:
            return True
        return not self.only_passing and instance.status != CRITICAL and instance.status != "maintenance"

    def apply(self, service: str, instances: Iterable[Instance]) -> None:
        """Replace a service's instances and tell listeners; an empty list removes the service."""
        every = tuple(sorted(instances, key=lambda i: i.id))
        if every:
            self.everything[service] = every
            self.services[service] = tuple(i for i in every if self.healthy(i))
        else:
            if service not in self.everything:
                return
            self.everything.pop(service, None)
            self.services.pop(service, None)
        self.updates += 1
        for listener in list(self._listeners):
            try:
                listener(service)
            except Exception:  # a broken listener must not stop the watches
                log.exception("dns view listener failed for service %s", service)

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(service)`` after every change."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    # ---- state of the watches -----------------------------------------------------------------

    @property
    def stale(self) -> bool:
        """True while the catalog can't be read (answers come from last-known data) or before the
        first read. Always False for a view without a client (driven by ``apply``)."""
        if self.client is None:
            return False
        sw = self._services_watch
        if sw is None or not sw.has_value or not sw.reachable:
            return True
        return any(w.errors and not w.reachable for w in self._watches.values())

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self, timeout: float | None = None) -> None:
        """Wait until the service list and every service's first instance read have arrived."""
        await asyncio.wait_for(self._synced.wait(), timeout)

    # ---- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start following the catalog (no-op without a client)."""
        if self.client is None:
            self._synced.set()
            return
        if self._main is None:
            self._main = asyncio.get_running_loop().create_task(self._follow_services(), name="dns-view")

    async def stop(self) -> None:
        """Stop every watch; the data stays as it was."""
        tasks = [t for t in [self._main, *self._tasks.values()] if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._main = None
        self._tasks.clear()
        self._watches.clear()

    async def _follow_services(self) -> None:
        assert self.client is not None
        self._services_watch = self.client.watch_services(wait=self.wait)
        async for names in self._services_watch:
            wanted = set(names)
            for name in wanted - set(self._tasks):
                watch = self.client.watch(name, passing_only=False, wait=self.wait)
                self._watches[name] = watch
                self._tasks[name] = asyncio.get_running_loop().create_task(
                    self._follow_service(name, watch), name=f"dns-view-{name}"
                )
            for name in set(self._tasks) - wanted:
                self._tasks.pop(name).cancel()
                self._watches.pop(name, None)
                self.apply(name, ())
            if not self._synced.is_set():
                # The first instance reads of every service count as part of the initial sync.
                self._check_synced()

    async def _follow_service(self, name: str, watch: Watch) -> None:
        async for instances in watch:
            self.apply(name, instances)
            if not self._synced.is_set():
                self._check_synced()

    def _check_synced(self) -> None:
        if self._services_watch is not None and self._services_watch.has_value and all(
            w.has_value for w in self._watches.values()
        ):
            self._synced.set()
