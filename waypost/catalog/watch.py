"""Blocking-query watches: an async iterator that wakes when a catalog read changes.

Follows Consul's blocking-query rules: pass the last ``X-Consul-Index`` back as ``index`` with a
``wait``; reset to 0 when the index goes backwards (the catalog restarted or was replaced); treat
an index below 1 as 1; back off with jitter on errors and keep the last value meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger("waypost.catalog.watch")

Fetch = Callable[[int, str], Awaitable[tuple[int, Any]]]


def parse_wait(wait: str) -> float:
    """Seconds in a Consul duration such as ``"30s"``, ``"2m"`` or ``"500ms"``."""
    for suffix, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if wait.endswith(suffix):
            return float(wait[: -len(suffix)]) * scale
    return float(wait)


class Watch(Generic[T]):
    """Repeats one catalog read as a blocking query and yields its value each time it changes.

    ``value`` holds the last value read (kept while the catalog is unreachable); ``reachable``
    tells whether the last attempt succeeded. Iterating yields the first value as soon as it is
    read, then only values that differ from the one before.
    """

    def __init__(
        self,
        name: str,
        fetch: Fetch,
        transform: Callable[[Any], T],
        wait: str = "30s",
        min_backoff: float = 0.05,
        max_backoff: float = 5.0,
    ) -> None:
        self.name = name
        self._fetch = fetch
        self._transform = transform
        self.wait = wait
        self._timeout = parse_wait(wait) * (1 + 1 / 16) + 5.0
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.index = 0
        self.value: T | None = None
        self.has_value = False
        self.reachable = False
        self.errors = 0
        self.updates = 0

    async def poll(self) -> bool:
        """One blocking read; returns True when the value changed. Raises on error."""
        # asyncio.timeout, not wait_for: Python 3.11's wait_for returns a read that finished in the
        # same instant as a cancel() and drops the cancellation (the watch would run on, unfollowed)
        async with asyncio.timeout(self._timeout):
            index, raw = await self._fetch(self.index, self.wait)
        self.reachable = True
        if index < self.index:
            log.info("watch %s: catalog index went back from %d to %d (catalog restarted); resetting",
                     self.name, self.index, index)
        self.index = max(index, 1)
        value = self._transform(raw)
        if self.has_value and value == self.value:
            return False
        self.value = value
        self.has_value = True
        self.updates += 1
        return True

    async def __aiter__(self) -> AsyncIterator[T]:
        backoff = self.min_backoff
        while True:
            try:
                changed = await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # network errors, timeouts, 5xx: keep the last value
                task = asyncio.current_task()
                if task is not None and task.cancelling():  # a read that failed *because* of cancel()
                    raise asyncio.CancelledError from exc
                self.index = 0  # the catalog may come back with a lower index
                self.errors += 1
                if self.reachable or self.errors == 1:
                    log.warning("watch %s: catalog unreachable (%s); keeping last value, retrying",
                                self.name, exc.__class__.__name__ + (f": {exc}" if str(exc) else ""))
                self.reachable = False
                # jitter stays under max_backoff: it bounds how long after the catalog returns
                # a consumer keeps serving last-known data
                await asyncio.sleep(min(backoff * (0.5 + random.random()), self.max_backoff))
                backoff = min(backoff * 2, self.max_backoff)
                continue
            backoff = self.min_backoff
            if changed:
                yield self.value  # type: ignore[misc]
