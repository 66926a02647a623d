"""The backend set of one route: load-balancing policies, passive health ejection and draining.

A :class:`Balancer` is synchronous and loop-free except for :meth:`Balancer.wait_for_backends`,
so a catalog watch, a static list or a test can push a new set with :meth:`Balancer.set_backends`
and the very next :meth:`Balancer.pick` sees it.

States of a backend:

- ``up``: takes new connections;
- ``ejected``: failed ``eject_after`` consecutive connects; takes no new connections until its
  cool-down ends (the cool-down doubles each time it is ejected again without a success in between);
- ``draining``: gone from the catalog; takes no new connections, its open ones continue (and are
  closed after ``drain_timeout`` when one is set). It is forgotten when the last one closes.

An ejected backend that leaves the catalog and comes back (a flapping health check, a registrator
resync) keeps its ejection: the cool-down it was serving and the doubling schedule are remembered
until ``eject_max`` seconds after the cool-down ends, so flapping in the catalog does not turn a
failing instance into a fresh one that clients hit again at once.

When every present backend is ejected, the one whose cool-down ends first is used anyway (a
"panic" pick, as Envoy does): refusing all traffic because of a flapping single backend helps nobody.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger("waypost.ambassador")
STARTUP_GRACE = 2.0  # seconds a new backend's refused connects are retried instead of failing clients

POLICIES = ("p2c", "round-robin", "least-conn", "random")

UP = "up"
EJECTED = "ejected"
DRAINING = "draining"
PENALTY_MEMORY = 1024  # retired backends whose ejection is remembered (module docs)


class Closable(Protocol):
    """What the balancer needs from an open connection to end it when draining times out."""

    def abort(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a backend listens, plus the catalog instance ID it came from (empty for static ones)."""

    host: str
    port: int
    id: str = ""

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class Backend:
    """One upstream endpoint with its live counters. Counters are plain attributes (hot path)."""

    __slots__ = (
        "endpoint", "host", "port", "address", "removed", "active", "total", "bytes_up", "bytes_down",
        "connect_failures", "consecutive_failures", "ejections", "eject_until", "conns", "drain_handle",
        "added_at",
    )

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.host = endpoint.host
        self.port = endpoint.port
        self.address = endpoint.address
        self.removed = False
        self.active = 0
        self.total = 0
        self.bytes_up = 0  # client → backend
        self.bytes_down = 0  # backend → client
        self.connect_failures = 0
        self.consecutive_failures = 0
        self.ejections = 0
        self.eject_until = 0.0
        self.conns: set[Closable] = set()
        self.drain_handle: asyncio.TimerHandle | None = None
        self.added_at = -math.inf  # when it joined the set (balancer clock): see Balancer.starting

    def state(self, now: float | None = None) -> str:
        if self.removed:
            return DRAINING
        if self.eject_until and (now if now is not None else time.monotonic()) < self.eject_until:
            return EJECTED
        return UP

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """JSON-ready view for /v1/routes and the status page."""
        now = time.monotonic() if now is None else now
        state = self.state(now)
        data: dict[str, Any] = {
            "address": self.address,
            "id": self.endpoint.id,
            "state": state,
            "active": self.active,
            "total": self.total,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "connect_failures": self.connect_failures,
        }
        if state == EJECTED:
            data["ejected_for_s"] = round(self.eject_until - now, 3)
        return data

    def __repr__(self) -> str:
        return f"Backend({self.address}, {self.state()}, active={self.active})"


class Balancer:
    """Picks a backend for each new connection and tracks health and draining."""

    def __init__(
        self,
        policy: str = "p2c",
        eject_after: int = 3,
        eject_base: float = 1.0,
        eject_max: float = 60.0,
        drain_timeout: float | None = None,
        name: str = "",
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown load-balancing policy {policy!r}; use one of {', '.join(POLICIES)}")
        self.policy = policy
        self.eject_after = eject_after
        self.eject_base = eject_base
        self.eject_max = eject_max
        self.drain_timeout = drain_timeout
        self.name = name
        self._rng = rng or random.Random()
        self._clock = clock
        self.backends: dict[tuple[str, int], Backend] = {}  # present (up or ejected), in catalog order
        self.draining: dict[tuple[str, int], Backend] = {}
        self._live: list[Backend] = []  # self.backends.values() as a list, for fast picks
        self._rr = 0
        self._changed = asyncio.Event()  # replaced after each wake-up
        self._known = False  # set_backends was called once: later additions are new instances
        self.retired_bytes_up = 0
        self.retired_bytes_down = 0
        self.retired_total = 0
        self.retired_failures = 0
        # ejection history of retired backends: key -> (ejections, eject_until); see the module docs
        self._penalties: dict[tuple[str, int], tuple[int, float]] = {}

    # ---- the backend set ---------------------------------------------------------------------

    def set_backends(self, endpoints: Iterable[Endpoint | tuple[str, int]]) -> None:
        """Replace the backend set: new ones take traffic at once, missing ones start draining."""
        wanted: dict[tuple[str, int], Endpoint] = {}
        for ep in endpoints:
            if not isinstance(ep, Endpoint):
                ep = Endpoint(ep[0], int(ep[1]))
            wanted.setdefault((ep.host, ep.port), ep)
        for key in [k for k in self.backends if k not in wanted]:
            self._start_draining(self.backends.pop(key))
        fresh: dict[tuple[str, int], Backend] = {}
        for key, ep in wanted.items():
            backend = self.backends.get(key)
            if backend is None:
                backend = self.draining.pop(key, None)
                if backend is not None:  # came back before it finished draining
                    backend.removed = False
                    if backend.drain_handle is not None:
                        backend.drain_handle.cancel()
                        backend.drain_handle = None
                    log.info("route %s: backend %s is back", self.name, backend.address)
                else:
                    backend = Backend(ep)
                    if self._known:  # the first set (static, or the first catalog answer) is not "starting"
                        backend.added_at = self._clock()
                    self._restore_penalty(key, backend)
            backend.endpoint = ep  # the instance ID may have changed
            fresh[key] = backend
        self.backends = fresh
        self._known = True
        self._live = list(fresh.values())
        if self._live:
            self._wake()

    def _start_draining(self, backend: Backend) -> None:
        backend.removed = True
        if backend.active == 0:
            log.info("route %s: backend %s removed", self.name, backend.address)
            self._retire(backend)
            return
        log.info("route %s: backend %s removed; draining %d open connection(s)%s", self.name, backend.address,
                 backend.active, f" (closed after {self.drain_timeout:g}s)" if self.drain_timeout else "")
        self.draining[(backend.host, backend.port)] = backend
        if self.drain_timeout is not None:
            backend.drain_handle = asyncio.get_running_loop().call_later(
                self.drain_timeout, self._drain_expired, backend)

    def _drain_expired(self, backend: Backend) -> None:
        backend.drain_handle = None
        if backend.conns:
            log.info("route %s: drain timeout for %s; closing %d connection(s)", self.name, backend.address,
                     len(backend.conns))
        for conn in list(backend.conns):
            try:
                conn.abort()
            except Exception:  # a call_later callback: nothing above would catch it, and the rest must go
                log.exception("route %s: resetting a connection to %s failed", self.name, backend.address)

    def _retire(self, backend: Backend) -> None:
        self.retired_bytes_up += backend.bytes_up
        self.retired_bytes_down += backend.bytes_down
        self.retired_total += backend.total
        self.retired_failures += backend.connect_failures
        if backend.ejections:
            penalties = self._penalties
            penalties[(backend.host, backend.port)] = (backend.ejections, backend.eject_until)
            if len(penalties) > PENALTY_MEMORY:  # churning addresses: forget the expired ones first
                now = self._clock()
                for key in [k for k, (_, until) in penalties.items() if until + self.eject_max < now]:
                    del penalties[key]
                while len(penalties) > PENALTY_MEMORY:
                    del penalties[next(iter(penalties))]  # then the oldest

    def _restore_penalty(self, key: tuple[str, int], backend: Backend) -> None:
        """Give a returning backend the ejection it left with (module docs), and log the addition."""
        ejections, until = self._penalties.pop(key, (0, 0.0))
        now = self._clock()
        if ejections and now < until + self.eject_max:
            backend.ejections, backend.eject_until = ejections, until
            if until > now:
                log.info("route %s: backend %s added; still ejected for %.1fs (it left the set ejected)",
                         self.name, backend.address, until - now)
                return
        log.info("route %s: backend %s added", self.name, backend.address)

    # ---- picking -----------------------------------------------------------------------------

    def has_backends(self) -> bool:
        return bool(self._live)

    def pick(self, exclude: set[Backend] | frozenset[Backend] = frozenset()) -> Backend | None:
        """A backend for a new connection, or None when there is none (outside `exclude`)."""
        live = self._live
        if not live:
            return None
        now = self._clock()
        candidates = [b for b in live if b.eject_until <= now and b not in exclude] \
            if (exclude or self._any_ejected(live, now)) else live
        if not candidates:
            rest = [b for b in live if b not in exclude]
            if not rest:
                return None
            return min(rest, key=lambda b: b.eject_until)  # panic: everything is ejected
        n = len(candidates)
        if n == 1:
            return candidates[0]
        policy = self.policy
        if policy == "p2c":
            i = self._rng.randrange(n)
            j = self._rng.randrange(n - 1)
            if j >= i:
                j += 1
            a, b = candidates[i], candidates[j]
            return a if a.active <= b.active else b
        if policy == "round-robin":
            self._rr = (self._rr + 1) % n
            return candidates[self._rr]
        if policy == "least-conn":
            start = self._rr = (self._rr + 1) % n  # rotate ties
            best = candidates[start]
            for k in range(1, n):
                c = candidates[(start + k) % n]
                if c.active < best.active:
                    best = c
            return best
        return candidates[self._rng.randrange(n)]

    @staticmethod
    def _any_ejected(live: list[Backend], now: float) -> bool:
        for b in live:
            if b.eject_until > now:
                return True
        return False

    async def wait_for_backends(self, timeout: float) -> bool:
        """Wait until the set is non-empty; False on timeout."""
        if self._live:
            return True
        try:
            async with asyncio.timeout(timeout):
                while not self._live:
                    await self._changed.wait()
        except TimeoutError:
            return bool(self._live)
        return True

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # ---- outcomes ----------------------------------------------------------------------------

    def starting(self, backend: Backend) -> bool:
        """True in the first STARTUP_GRACE seconds after the backend joined a set already known
        (not for static backends or the instances of the first catalog answer).

        Registrators record a container when it starts, often a few milliseconds before its
        process listens: a refused connect then means "not yet", not "broken".
        """
        return self._clock() - backend.added_at < STARTUP_GRACE

    def refused_while_starting(self, backend: Backend) -> None:
        """Count a refused connect to a starting backend without moving it towards ejection."""
        backend.connect_failures += 1

    def connect_failed(self, backend: Backend, reason: str = "") -> None:
        """Count a failed connect; eject after `eject_after` in a row, for a growing cool-down."""
        backend.connect_failures += 1
        backend.consecutive_failures += 1
        if self.eject_after <= 0 or backend.consecutive_failures < self.eject_after or backend.removed:
            return
        now = self._clock()
        if backend.eject_until > now:
            return  # panic pick of an already-ejected backend
        backend.ejections += 1
        # the exponent is capped: a backend dead for days must not overflow the float
        cooldown = min(self.eject_base * 2 ** min(backend.ejections - 1, 30), self.eject_max)
        backend.eject_until = now + cooldown
        backend.consecutive_failures = 0
        log.warning("route %s: backend %s ejected for %gs after %d failed connects%s", self.name,
                    backend.address, cooldown, self.eject_after, f" ({reason})" if reason else "")

    def connected(self, backend: Backend, conn: Closable) -> None:
        """A connect succeeded: the backend is healthy and carries one more connection."""
        if backend.ejections or backend.eject_until:
            if backend.eject_until:
                log.info("route %s: backend %s is healthy again", self.name, backend.address)
            backend.ejections = 0
            backend.eject_until = 0.0
        backend.consecutive_failures = 0
        backend.active += 1
        backend.total += 1
        backend.conns.add(conn)

    def released(self, backend: Backend, conn: Closable) -> None:
        """A connection to `backend` closed."""
        backend.active -= 1
        backend.conns.discard(conn)
        if backend.removed and backend.active == 0:
            key = (backend.host, backend.port)
            if self.draining.get(key) is backend:
                del self.draining[key]
                if backend.drain_handle is not None:
                    backend.drain_handle.cancel()
                    backend.drain_handle = None
                log.info("route %s: backend %s drained", self.name, backend.address)
                self._retire(backend)

    # ---- views -------------------------------------------------------------------------------

    def all_backends(self) -> list[Backend]:
        return [*self.backends.values(), *self.draining.values()]

    def snapshot(self) -> list[dict[str, Any]]:
        now = self._clock()
        return [b.snapshot(now) for b in self.all_backends()]

