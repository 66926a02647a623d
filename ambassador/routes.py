"""Routes: a listener plus a balancer, fed by a catalog watch or a static list; and the Ambassador.

A route is written ``LISTEN=SERVICE[#TAG]`` (backends follow the catalog) or
``LISTEN=HOST:PORT[,HOST:PORT…]`` (static backends, no catalog), where LISTEN is ``PORT``
(on 127.0.0.1), ``HOST:PORT`` or ``[V6]:PORT``.

The listener may also be a socket made elsewhere (``Route.start(sock=…)``), e.g. bound inside
another network namespace: accepted connections live there, upstream connects are made from
this process's namespace.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
import resource
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from waypost.ambassador.balancer import POLICIES, Backend, Balancer, Endpoint
from waypost.ambassador.pipe import ClientSide, Pipe, UpstreamSide, reset
from waypost.config import ConfigError, parse_hostport
from waypost.listen import listening_socket

if TYPE_CHECKING:
    from waypost.catalog import CatalogClient, Instance
    from waypost.catalog.reader import CatalogReader

log = logging.getLogger("waypost.ambassador")

SERVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
STARTING_PAUSE = 0.02  # first pause before retrying a backend that refused in its first seconds
FD_RESERVE = 32  # descriptors kept for the listener, admin, catalog and logs


# ---- route specs -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """A parsed ``--route``: where to listen and where to send connections."""

    listen_host: str
    listen_port: int
    service: str | None = None
    tag: str | None = None
    static: tuple[Endpoint, ...] = ()
    text: str = ""

    @property
    def listen(self) -> str:
        return Endpoint(self.listen_host, self.listen_port).address

    @property
    def target(self) -> str:
        if self.service:
            return self.service + (f"#{self.tag}" if self.tag else "")
        return ",".join(e.address for e in self.static)


def parse_route(text: str, flag: str = "--route") -> RouteSpec:
    """Parse ``LISTEN=SERVICE[#TAG]`` or ``LISTEN=HOST:PORT,HOST:PORT``; ConfigError names the flag."""
    raw = text.strip()
    example = "e.g. 127.0.0.1:6379=redis, 6379=redis#primary or 6379=10.0.0.5:6379,10.0.0.6:6379"
    if "=" not in raw:
        raise ConfigError(f"{flag} {text!r}: expected LISTEN=SERVICE or LISTEN=HOST:PORT,…; {example}")
    listen_text, target = (p.strip() for p in raw.split("=", 1))
    if not listen_text or not target:
        raise ConfigError(f"{flag} {text!r}: both sides of '=' are needed; {example}")
    if listen_text.isdigit():
        listen_host, listen_port = "127.0.0.1", int(listen_text)
        if not 0 <= listen_port <= 65535:
            raise ConfigError(f"{flag} {text!r}: listen port {listen_port} is out of range 0-65535")
    else:
        listen_host, listen_port = parse_hostport(listen_text, flag=f"{flag} {text!r}: listen address")
    if ":" in target or "," in target:
        static: list[Endpoint] = []
        for part in target.split(","):
            part = part.strip()
            if not part:
                raise ConfigError(f"{flag} {text!r}: empty backend in the list; {example}")
            host, port = parse_hostport(part, flag=f"{flag} {text!r}: backend")
            if port == 0:
                raise ConfigError(f"{flag} {text!r}: backend {part!r} needs a port other than 0")
            static.append(Endpoint(host, port))
        return RouteSpec(listen_host, listen_port, static=tuple(static), text=raw)
    service, _, tag = target.partition("#")
    if not SERVICE_RE.match(service):
        raise ConfigError(f"{flag} {text!r}: {service!r} is not a service name (letters, digits, '-', '_', '.'); "
                          f"{example}")
    if "#" in target and not tag:
        raise ConfigError(f"{flag} {text!r}: empty tag after '#'; {example}")
    return RouteSpec(listen_host, listen_port, service=service, tag=tag or None, text=raw)


# ---- options and the shared connection limit -------------------------------------------------


@dataclass(slots=True)
class Options:
    """Knobs shared by every route of an ambassador (the CLI flags)."""

    lb: str = "p2c"
    connect_timeout: float = 2.0
    retries: int = 2
    eject_after: int = 3
    eject_base: float = 1.0
    eject_max: float = 60.0
    wait_for_backends: float = 5.0
    drain_timeout: float | None = None
    idle_timeout: float | None = None  # close connections idle both ways this long (None: never)
    max_conns: int = 0  # 0: as many as the descriptor limit allows
    strict_services: bool = True  # unknown catalog service at start → ConfigError
    backlog: int = 1024
    reuse_port: bool = False  # SO_REUSEPORT on listeners: several processes share them (--workers)

    def __post_init__(self) -> None:
        if self.lb not in POLICIES:
            raise ConfigError(f"--lb {self.lb!r}: use one of {', '.join(POLICIES)}")
        for name in ("connect_timeout", "wait_for_backends"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0")
        if self.retries < 0:
            raise ConfigError("--retries must be >= 0")
        if self.max_conns < 0:
            raise ConfigError("--max-conns must be >= 0 (0: limited by file descriptors)")
        if self.drain_timeout is not None and self.drain_timeout < 0:
            raise ConfigError("--drain-timeout must be >= 0")
        if self.idle_timeout is not None and self.idle_timeout <= 0:
            raise ConfigError("--idle-timeout must be more than 0 seconds (leave it out to never close idle "
                              "connections)")


class RateLimitedLog:
    """At most one warning per `interval` seconds per key, with a count of the ones held back."""

    def __init__(self, interval: float = 5.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -1e9) < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return
        held = self._held.pop(key, 0)
        self._last[key] = now
        if held:
            msg += f" ({held} more like this in the last {self.interval:g}s)"
        log.warning(msg, *args)


class ConnLimiter:
    """The ambassador-wide cap on open client connections (`--max-conns`)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self.refused = 0
        self.fd_exhausted = 0
        self.log = RateLimitedLog()

    def full(self) -> bool:
        return 0 < self.limit <= self.active


def raise_fd_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit from %d to %d: %s", soft, hard, exc)
    elif hard == resource.RLIM_INFINITY and soft < 1 << 20:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (1 << 20, hard))
            soft = 1 << 20
        except (ValueError, OSError):
            pass
    return soft


def connection_limit(wanted: int) -> int:
    """The connection limit to enforce for ``--max-conns wanted`` (0: what the open-files limit
    allows), never more than the descriptors allow (warned once; call after raise_fd_limit)."""
    fd_cap = default_max_conns()
    if wanted == 0:
        return fd_cap
    if wanted > fd_cap:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        log.warning("--max-conns %d is more than the open-files limit (%d, two per connection) allows; "
                    "refusing connections beyond %d instead (raise `ulimit -n` to allow more)", wanted, soft, fd_cap)
        return fd_cap
    return wanted


def default_max_conns() -> int:
    """Each proxied connection holds two descriptors; keep a reserve for everything else."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(1, (soft - FD_RESERVE) // 2)


# ---- a route ---------------------------------------------------------------------------------


_FD_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


@dataclass(slots=True)
class RouteCounters:
    total: int = 0
    refused: int = 0
    no_backend: int = 0
    all_failed: int = 0
    connect_failures: int = 0
    idle_closed: int = 0


class Route:
    """One listener forwarding to one backend set.

    Backends come from ``set_backends`` (static lists, tests, other components) or, for a service
    route given a catalog client, from the catalog watch that :meth:`start` runs.
    """

    def __init__(
        self,
        spec: RouteSpec,
        options: Options | None = None,
        catalog: CatalogClient | CatalogReader | None = None,
        limiter: ConnLimiter | None = None,
        name: str | None = None,
    ) -> None:
        self.spec = spec
        self.options = options or Options()
        self.catalog = catalog
        self.limiter = limiter or ConnLimiter(self.options.max_conns)
        self.name = name or spec.text or spec.listen
        o = self.options
        self.balancer = Balancer(o.lb, eject_after=o.eject_after, eject_base=o.eject_base, eject_max=o.eject_max,
                                 drain_timeout=o.drain_timeout, name=self.name)
        self.counters = RouteCounters()
        self.active = 0
        self.pipes: set[Pipe] = set()
        self.server: asyncio.AbstractServer | None = None
        self.sockets: list[socket.socket] = []
        self._bound: tuple[str, int] | None = None  # listen_address, read once the socket is bound
        self.watch: Any = None
        self._watch_task: asyncio.Task[None] | None = None
        self._idle_task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._log = RateLimitedLog()
        self._loop: asyncio.AbstractEventLoop | None = None
        if spec.static:
            self.balancer.set_backends(spec.static)

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self, sock: socket.socket | None = None) -> None:
        """Listen (on `sock` when given, else on the spec's address) and follow the catalog."""
        loop = self._loop = asyncio.get_running_loop()
        try:
            if sock is None:
                sock = await listening_socket(self.spec.listen_host, self.spec.listen_port,
                                              backlog=self.options.backlog, reuse_port=self.options.reuse_port)
            sock.setblocking(False)
            self.server = await loop.create_server(self._protocol, sock=sock, backlog=self.options.backlog)
        except OSError as exc:
            hint = " (port in use: pick another LISTEN port or stop what holds it)" \
                if exc.errno == errno.EADDRINUSE else ""
            raise ConfigError(f"--route {self.spec.text!r}: cannot listen on {self.spec.listen}: "
                              f"{exc.strerror or exc}{hint}") from None
        self.sockets = list(self.server.sockets or ())
        self._bound = None
        _ = self.listen_address  # remember it: the socket has no address once closed
        if self.spec.service and self.catalog is not None:
            self._watch_task = loop.create_task(self._follow(), name=f"route {self.name} watch")
        if self.options.idle_timeout:
            self._idle_task = loop.create_task(self._sweep_idle(self.options.idle_timeout),
                                               name=f"route {self.name} idle sweep")

    @property
    def listen_address(self) -> tuple[str, int]:
        """The bound (host, port): useful when the spec said port 0."""
        if self.sockets and self._bound is None:
            try:
                addr = self.sockets[0].getsockname()
                self._bound = (addr[0], addr[1])
            except (OSError, ValueError):  # closed already (uvloop's socket has no fd after stop)
                pass
        return self._bound or (self.spec.listen_host, self.spec.listen_port)

    async def stop(self) -> None:
        """Stop listening and watching, and reset every open connection."""
        if self.server is not None:
            self.server.close()
        for task in (self._watch_task, self._idle_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._watch_task = self._idle_task = None
        for task in list(self._pending):
            task.cancel()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        for pipe in list(self.pipes):
            try:
                pipe.abort()
            except Exception:  # one connection's surprise must not leave the others open
                log.exception("route %s: resetting a connection failed", self.name)
        for backend in self.balancer.all_backends():
            if backend.drain_handle is not None:
                backend.drain_handle.cancel()
                backend.drain_handle = None
        if self.server is not None:
            await self.server.wait_closed()
            self.server = None

    async def _follow(self) -> None:
        assert self.catalog is not None and self.spec.service
        while True:
            try:
                self.watch = self.catalog.watch(self.spec.service, self.spec.tag, passing_only=True)
                async for instances in self.watch:
                    self.set_backends(instances)
            except asyncio.CancelledError:
                raise
            except Exception:  # the watch handles catalog errors itself; this is a bug guard
                log.exception("route %s: catalog watch failed; restarting it in 1s", self.name)
                await asyncio.sleep(1.0)

    async def _sweep_idle(self, timeout: float) -> None:
        """Close connections that moved no byte either way for `timeout` seconds (--idle-timeout).

        Looks every timeout/4 (at least every 5 s), so a connection is closed between `timeout`
        and 1.25 × `timeout` after its last byte (the data path itself keeps no clock). A connection
        whose write buffer stays full (its reader stopped) is reset instead: a FIN could not be
        sent, and would make the other side take a cut stream for a whole one.
        """
        loop = asyncio.get_running_loop()
        interval = min(max(timeout / 4, 0.01), 5.0)
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            for pipe in list(self.pipes):
                if pipe.done or pipe.closing or pipe.idle_for(now) < timeout:
                    continue
                self.counters.idle_closed += 1
                if pipe.stuck():  # a peer stopped reading: a FIN would never go out, and would
                    # tell the other side the stream ended when it did not
                    log.debug("route %s: resetting a connection to %s stuck for %gs (--idle-timeout)",
                              self.name, pipe.backend.address, timeout)
                    pipe.abort()
                else:
                    log.debug("route %s: closing a connection to %s idle for %gs (--idle-timeout)",
                              self.name, pipe.backend.address, timeout)
                    pipe.close()

    def set_backends(self, backends: Iterable[Instance | Endpoint | tuple[str, int]]) -> None:
        """Replace the backend set (catalog instances, endpoints or (host, port) pairs)."""
        endpoints: list[Endpoint] = []
        for item in backends:
            if isinstance(item, Endpoint):
                endpoints.append(item)
            elif isinstance(item, tuple):
                endpoints.append(Endpoint(item[0], int(item[1])))
            else:
                host, port = item.endpoint
                if not host or not port:
                    self._log.warning(f"bad-instance:{item.id}", "route %s: instance %r has no address or port; "
                                      "skipping it (fix its registration)", self.name, item.id)
                    continue
                endpoints.append(Endpoint(host, port, item.id))
        self.balancer.set_backends(endpoints)

    # ---- connections -------------------------------------------------------------------------

    def _protocol(self) -> ClientSide:
        return ClientSide(self._accepted)

    def _accepted(self, client: ClientSide) -> None:
        limiter = self.limiter
        if limiter.full():
            limiter.refused += 1
            self.counters.refused += 1
            limiter.log.warning("max-conns", "connection limit reached (--max-conns %d, %d open): refusing new "
                                "connections on route %s", limiter.limit, limiter.active, self.name)
            client.refuse()
            return
        limiter.active += 1
        self.active += 1
        self.counters.total += 1
        task = self._loop.create_task(self._serve(client))  # type: ignore[union-attr]
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _unlinked_done(self) -> None:
        self.active -= 1
        self.limiter.active -= 1

    def _pipe_closed(self, pipe: Pipe) -> None:
        self.pipes.discard(pipe)
        self.balancer.released(pipe.backend, pipe)
        self._unlinked_done()

    async def _serve(self, client: ClientSide) -> None:
        """Pick and connect a backend for `client`, retrying other instances on connect failure."""
        linked = False
        try:
            linked = await self._connect(client)
        except asyncio.CancelledError:
            reset(client.transport)
            raise
        except Exception:  # never let one connection's surprise touch the others
            log.exception("route %s: unexpected error while connecting a client; closing it", self.name)
            reset(client.transport)
        finally:
            if not linked:
                self._unlinked_done()

    async def _connect(self, client: ClientSide) -> bool:
        loop = self._loop
        assert loop is not None
        balancer = self.balancer
        opts = self.options
        tried: set[Backend] = set()
        starting: set[Backend] = set()  # refused the connect in their first seconds: retried
        errors: list[str] = []
        deadline: float | None = None
        pause = STARTING_PAUSE
        while True:
            backend = balancer.pick(tried)
            if backend is None and starting:
                if deadline is None:
                    deadline = loop.time() + opts.wait_for_backends
                if await self._pause_for_starting(client, deadline, pause):
                    tried -= starting
                    starting.clear()
                    pause = min(pause * 2, 8 * STARTING_PAUSE)
                    continue
            if backend is None:
                if balancer.has_backends():  # every backend was tried and failed
                    self.counters.all_failed += 1
                    self._log.warning("all-failed", "route %s: could not connect to any backend (%s); closing the "
                                      "client", self.name, "; ".join(errors))
                    client.close()
                    return False
                if deadline is None:
                    deadline = loop.time() + opts.wait_for_backends
                remaining = deadline - loop.time()
                if remaining <= 0 or not await balancer.wait_for_backends(remaining):
                    self.counters.no_backend += 1
                    self._log.warning("no-backends", "route %s: no backends for %s after waiting %gs "
                                      "(--wait-for-backends); closing the client", self.name, self.spec.target,
                                      opts.wait_for_backends)
                    client.close()
                    return False
                continue
            if client.lost:
                return False
            try:
                async with asyncio.timeout(opts.connect_timeout or None):
                    _, upstream = await loop.create_connection(
                        lambda b=backend: UpstreamSide(b), backend.host, backend.port)
            except (OSError, TimeoutError) as exc:
                if isinstance(exc, OSError) and exc.errno in _FD_ERRNOS:
                    self.limiter.fd_exhausted += 1
                    self.limiter.log.warning("fds", "out of file descriptors or buffers (%s): refusing new "
                                             "connections on route %s", exc.strerror, self.name)
                    client.refuse()
                    return False
                reason = "timeout" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
                self.counters.connect_failures += 1
                tried.add(backend)
                errors.append(f"{backend.address}: {reason}")
                if isinstance(exc, ConnectionRefusedError) and balancer.starting(backend):
                    balancer.refused_while_starting(backend)
                    starting.add(backend)
                    continue  # try the others now; this one again after a pause (see above)
                balancer.connect_failed(backend, reason)
                if len(tried) - len(starting) > opts.retries:
                    self.counters.all_failed += 1
                    self._log.warning("all-failed", "route %s: connect failed (%s) after %d attempt(s) "
                                      "(--retries %d); closing the client", self.name, "; ".join(errors),
                                      len(tried), opts.retries)
                    client.close()
                    return False
                continue
            if backend.removed:  # the catalog dropped it while we connected: no byte flowed, so
                # pick again rather than start a connection that draining would never see
                upstream.transport.close()  # type: ignore[union-attr]
                tried.add(backend)
                continue
            pipe = Pipe(client, upstream, backend, self._pipe_closed, loop.time())
            balancer.connected(backend, pipe)
            self.pipes.add(pipe)
            pipe.start()
            return True

    async def _pause_for_starting(self, client: ClientSide, deadline: float, pause: float) -> bool:
        """Wait `pause` (within the --wait-for-backends window) before retrying starting backends."""
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0 or client.lost:
            return False
        await asyncio.sleep(min(pause, remaining))
        return not client.lost

    # ---- views -------------------------------------------------------------------------------

    def sync_bytes(self) -> None:
        """Bring the backends' byte counters up to date (the data path credits them lazily)."""
        for pipe in self.pipes:
            pipe.sync()

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready state for /v1/routes and status pages."""
        self.sync_bytes()
        b = self.balancer
        backends = b.all_backends()
        host, port = self.listen_address
        data: dict[str, Any] = {
            "name": self.name,
            "route": self.spec.text,
            "listen": Endpoint(host, port).address,
            "service": self.spec.service,
            "tag": self.spec.tag,
            "static": bool(self.spec.static),
            "policy": b.policy,
            "active": self.active,
            "total": self.counters.total,
            "refused": self.counters.refused,
            "no_backend": self.counters.no_backend,
            "all_failed": self.counters.all_failed,
            "connect_failures": self.counters.connect_failures,
            "idle_closed": self.counters.idle_closed,
            "bytes_up": b.retired_bytes_up + sum(x.bytes_up for x in backends),
            "bytes_down": b.retired_bytes_down + sum(x.bytes_down for x in backends),
            "backends": b.snapshot(),
        }
        if self.spec.service:
            data["catalog_reachable"] = None if self.watch is None else bool(self.watch.reachable)
        return data


# ---- the ambassador --------------------------------------------------------------------------


@dataclass
class Ambassador:
    """A set of routes sharing options, a connection limit and (for service routes) a catalog client.

    ``start()`` raises :class:`ConfigError` naming ``--route`` for a port in use or (with
    ``options.strict_services``) a service the catalog does not know.
    """

    specs: Iterable[RouteSpec | str] = ()
    catalog: CatalogClient | CatalogReader | None = None
    options: Options = field(default_factory=Options)

    def __post_init__(self) -> None:
        self.routes: list[Route] = []
        self._initial = [parse_route(s) if isinstance(s, str) else s for s in self.specs]
        self.limiter = ConnLimiter(self.options.max_conns)
        self.started = False

    async def start(self) -> None:
        """Raise the fd limit, check the routes and start listening on all of them."""
        raise_fd_limit()
        self.limiter.limit = connection_limit(self.options.max_conns)
        if self.options.strict_services:
            await self._check_services(self._initial)
        try:
            for spec in self._initial:
                await self.add_route(spec, check=False)
        except BaseException:
            await self.stop()
            raise
        self.started = True

    async def stop(self) -> None:
        """Stop every route (listeners closed, open connections reset)."""
        routes, self.routes = self.routes, []
        await asyncio.gather(*(r.stop() for r in routes), return_exceptions=True)
        self.started = False

    async def add_route(self, spec: RouteSpec | str, sock: socket.socket | None = None, name: str | None = None,
                        check: bool = False) -> Route:
        """Start one more route; `sock` is a ready listening socket (bound elsewhere) to serve.

        A service route without a catalog client gets its backends only from ``route.set_backends``.
        With `check`, a service the catalog does not know raises ConfigError (as at start).
        """
        if isinstance(spec, str):
            spec = parse_route(spec)
        if check:
            await self._check_services([spec])
        route = Route(spec, self.options, self.catalog, self.limiter, name=name)
        await route.start(sock)
        self.routes.append(route)
        host, port = route.listen_address
        log.info("route %s: listening on %s → %s", route.name, Endpoint(host, port).address, spec.target)
        return route

    async def remove_route(self, route: Route) -> None:
        """Stop one route and forget it."""
        if route in self.routes:
            self.routes.remove(route)
        await route.stop()

    async def _check_services(self, specs: list[RouteSpec]) -> None:
        wanted = [s for s in specs if s.service]
        if not wanted or self.catalog is None:
            return
        try:
            async with asyncio.timeout(5):
                known = await self.catalog.services()
        except Exception as exc:  # unreachable catalog: not a config error; the watch keeps trying
            log.warning("catalog %s unreachable at start (%s); routes will follow it once it answers",
                        self.catalog.url, exc.__class__.__name__)
            return
        for spec in wanted:
            if spec.service not in known:
                names = ", ".join(sorted(known)) or "none"
                raise ConfigError(f"--route {spec.text!r}: service {spec.service!r} is not in the catalog at "
                                  f"{self.catalog.url} (known services: {names})")
            if spec.tag and spec.tag not in (known.get(spec.service) or ()):
                log.warning("route %s: no instance of %s has tag %r yet", spec.text, spec.service, spec.tag)

    def snapshot(self) -> dict[str, Any]:
        """Every route with its backends, plus the shared connection counters."""
        return {
            "active": self.limiter.active,
            "max_conns": self.limiter.limit,
            "refused": self.limiter.refused,
            "fd_exhausted": self.limiter.fd_exhausted,
            "routes": [r.snapshot() for r in self.routes],
        }
