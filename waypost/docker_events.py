"""The Docker engine, seen from the event loop: an event stream and a few non-blocking calls.

The docker SDK is blocking. Its event stream runs in ONE thread (:class:`EventBridge`) that hands
every event to the loop with ``loop.call_soon_threadsafe`` into an :class:`asyncio.Queue`, and
reconnects with backoff when the engine restarts or the stream breaks (posting ``disconnected`` /
``connected`` markers so the consumer can resync). One-shot calls (inspect, list, info) are plain
HTTP requests on the loop (:class:`DockerAPI`, aiohttp over the engine's socket): no thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import docker

log = logging.getLogger("waypost.docker")

MAX_CONNECTIONS = 10  # to the engine for inspect/list/info; a resync's burst of inspects queues beyond
CONNECTED = "connected"
DISCONNECTED = "disconnected"
CONTAINER = "container"
DEFAULT_SOCKET = "/var/run/docker.sock"
GLIDERLABS_SOCKET = "/tmp/docker.sock"  # gliderlabs/registrator's run line: -v /var/run/docker.sock:/tmp/docker.sock
LOCAL_SOCKETS: tuple[str, ...] = (DEFAULT_SOCKET, GLIDERLABS_SOCKET)  # tried in this order
_announced_fallbacks: set[str] = set()  # local sockets already logged as chosen


@dataclass(frozen=True, slots=True)
class DockerEvent:
    """One item of the bridge's queue: a container event or a connection state change."""

    kind: str  # CONNECTED, DISCONNECTED or CONTAINER
    action: str = ""  # "start", "die", "health_status", … (for CONTAINER; detail after ':' dropped)
    container_id: str = ""
    time_nano: int = 0
    attributes: dict[str, str] = field(default_factory=dict)
    detail: str = ""  # e.g. "healthy" for "health_status: healthy", or the error text


def choose_socket(candidates: Sequence[str], exists: Callable[[str], bool]) -> str:
    """The first of `candidates` that `exists`, else the first one (so errors name the usual path)."""
    return next((path for path in candidates if exists(path)), candidates[0])


def resolve_docker_url(docker_url: str | None) -> str | None:
    """`docker_url`, or a fallback local socket's ``unix://`` URL, or None for the docker SDK's default.

    With no `docker_url` and no ``DOCKER_HOST``, the engine's socket is looked for at each of
    :data:`LOCAL_SOCKETS`: one mounted only at ``/tmp/docker.sock`` (as gliderlabs/registrator's
    documented run line does) is used, and that is logged once.
    """
    if docker_url or os.environ.get("DOCKER_HOST"):
        return docker_url
    paths = LOCAL_SOCKETS
    path = choose_socket(paths, os.path.exists)
    if path == paths[0]:
        return None  # the usual socket (or none found): the SDK's own default, as before
    if path not in _announced_fallbacks:
        _announced_fallbacks.add(path)
        log.info("no docker socket at %s; using unix://%s (set DOCKER_HOST or --docker to choose)",
                 paths[0], path)
    return f"unix://{path}"


def describe_docker_url(docker_url: str | None) -> str:
    """The engine address `docker_url` resolves to, for messages."""
    return resolve_docker_url(docker_url) or os.environ.get("DOCKER_HOST") or f"unix://{LOCAL_SOCKETS[0]}"


def make_client(docker_url: str | None = None, timeout: float = 30.0) -> docker.APIClient:
    """A low-level docker client for `docker_url`, else ``DOCKER_HOST`` / the local socket."""
    docker_url = resolve_docker_url(docker_url)
    if docker_url:
        return docker.APIClient(base_url=docker_url, version="auto", timeout=timeout, num_pools=1)
    kwargs = docker.utils.kwargs_from_env()
    kwargs.setdefault("version", "auto")
    # docker-py's unix-socket adapter keys pools by URL: one pool keeps idle connections bounded
    return docker.APIClient(timeout=timeout, num_pools=1, **kwargs)


def parse_event(raw: dict[str, Any]) -> DockerEvent | None:
    """A docker ``/events`` message as a :class:`DockerEvent` (None for events about no container).

    A network's ``connect`` / ``disconnect`` becomes the container's ``network_connect`` /
    ``network_disconnect`` (its attributes then name the network, not the container's labels).
    """
    kind = raw.get("Type", "container")
    action_text = str(raw.get("Action") or raw.get("status") or "")
    actor = raw.get("Actor") or {}
    if kind == "network":
        attributes = {str(k): str(v) for k, v in (actor.get("Attributes") or {}).items()}
        if action_text not in ("connect", "disconnect") or not attributes.get("container"):
            return None
        return DockerEvent(kind=CONTAINER, action=f"network_{action_text}", container_id=attributes["container"],
                           time_nano=int(raw.get("timeNano") or 0),
                           attributes={"network": attributes.get("name", "")})
    if kind != "container":
        return None
    action, _, detail = action_text.partition(":")
    return DockerEvent(
        kind=CONTAINER,
        action=action.strip(),
        container_id=str(actor.get("ID") or raw.get("id") or ""),
        time_nano=int(raw.get("timeNano") or int(raw.get("time") or 0) * 1_000_000_000),
        attributes={str(k): str(v) for k, v in (actor.get("Attributes") or {}).items()},
        detail=detail.strip(),
    )


class EventBridge:
    """Reads Docker's event stream in one thread and feeds an asyncio queue; never gives up.

    Each (re)connection posts a ``connected`` item *after* the stream is subscribed, so a resync
    started on it cannot miss an event; each break posts ``disconnected`` and retries with
    exponential backoff (`min_backoff` doubling to `max_backoff`).

    Several consumers can share one bridge (``waypost up``: registrator and injector): each
    :meth:`subscribe`-s its own queue and gets every item; one that joins a live stream gets a
    ``connected`` item at once, so it resyncs like the others did.
    """

    def __init__(
        self,
        queue: asyncio.Queue[DockerEvent] | None,
        loop: asyncio.AbstractEventLoop,
        docker_url: str | None = None,
        min_backoff: float = 0.1,
        max_backoff: float = 5.0,
    ) -> None:
        self._queues: list[asyncio.Queue[DockerEvent]] = [queue] if queue is not None else []
        self._loop = loop
        self._docker_url = docker_url
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._stream: Any = None
        self._client: docker.APIClient | None = None
        self._thread: threading.Thread | None = None
        self._finished: asyncio.Future[None] | None = None  # resolved (on the loop) when the thread ends
        self.connected = False
        self.connections = 0
        self.events = 0

    def start(self) -> None:
        """Start the reader thread (a daemon: it never keeps the process alive)."""
        self._finished = self._loop.create_future()
        self._thread = threading.Thread(target=self._run_and_report, name="docker-events", daemon=True)
        self._thread.start()

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop reading: close the stream from the loop's side and wait for the thread."""
        self._stopping.set()
        with self._lock:
            stream, client = self._stream, self._client
        for closer in (getattr(stream, "close", None), getattr(client, "close", None)):
            if closer is not None:
                try:
                    closer()
                except Exception:  # noqa: BLE001 - closing a broken stream may fail; we are leaving
                    pass
        if self._finished is not None:
            # the thread reports its end on the loop: nothing blocks while it notices the closed stream
            await asyncio.wait([self._finished], timeout=timeout)

    def subscribe(self, queue: asyncio.Queue[DockerEvent]) -> None:
        """Deliver every later item to `queue` too (call on the loop's thread)."""
        if queue not in self._queues:
            self._queues.append(queue)
            if self.connected:
                queue.put_nowait(DockerEvent(kind=CONNECTED))

    def unsubscribe(self, queue: asyncio.Queue[DockerEvent]) -> None:
        """Stop delivering to `queue`."""
        if queue in self._queues:
            self._queues.remove(queue)

    def _post(self, item: DockerEvent) -> None:
        try:
            self._loop.call_soon_threadsafe(self._deliver, item)
        except RuntimeError:  # the loop is closed: we are shutting down
            self._stopping.set()

    def _deliver(self, item: DockerEvent) -> None:  # on the loop
        for queue in self._queues:
            queue.put_nowait(item)

    def _run_and_report(self) -> None:
        try:
            self._run()
        finally:
            finished = self._finished
            if finished is not None:
                try:
                    self._loop.call_soon_threadsafe(lambda: finished.done() or finished.set_result(None))
                except RuntimeError:  # the loop is closed already
                    pass

    def _run(self) -> None:
        backoff = self.min_backoff
        failures = 0
        while not self._stopping.is_set():
            client: docker.APIClient | None = None
            try:
                client = make_client(self._docker_url)
                stream = client.events(decode=True, filters={"type": ["container", "network"]})
                with self._lock:
                    self._client, self._stream = client, stream
                if self._stopping.is_set():
                    break
                self.connected = True
                self.connections += 1
                failures = 0
                backoff = self.min_backoff
                self._post(DockerEvent(kind=CONNECTED))
                for raw in stream:
                    event = parse_event(raw)
                    if event is not None:
                        self.events += 1
                        self._post(event)
                if not self._stopping.is_set():
                    raise ConnectionError("event stream ended (engine stopped or restarted)")
            except Exception as exc:  # noqa: BLE001 - any failure: report, back off, reconnect
                if self._stopping.is_set():
                    break
                failures += 1
                was_connected = self.connected
                self.connected = False
                text = f"{exc.__class__.__name__}: {exc}"
                if was_connected or failures == 1:
                    log.warning("docker engine at %s unreachable (%s); reconnecting with backoff (is dockerd "
                                "running? in a container, mount its socket at /var/run/docker.sock or "
                                "/tmp/docker.sock; another engine: set DOCKER_HOST or --docker)",
                                describe_docker_url(self._docker_url), text)
                self._post(DockerEvent(kind=DISCONNECTED, detail=text))
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)
            finally:
                with self._lock:
                    self._client, self._stream = None, None
                if client is not None:
                    try:
                        client.close()
                    except Exception:  # noqa: BLE001
                        pass
        self.connected = False


class DockerError(Exception):
    """The engine answered a call with an error status."""

    def __init__(self, status: int, what: str, message: str) -> None:
        super().__init__(f"docker {what}: HTTP {status}: {message}")
        self.status = status


class DockerAPI:
    """Inspect / list / info on the Docker engine, on the event loop (aiohttp over its socket).

    The engine's address comes from `docker_url`, else ``DOCKER_HOST`` (with ``DOCKER_TLS_VERIFY``
    and ``DOCKER_CERT_PATH``), else the local socket (``/tmp/docker.sock`` when only that is
    mounted: :func:`resolve_docker_url`), resolved by the docker SDK's own helpers so it means
    what it means to the event stream. The HTTP session is made on first use, so a down
    engine at start-up only makes calls fail (and be retried by the caller).
    """

    def __init__(self, docker_url: str | None = None, timeout: float = 30.0) -> None:
        self._docker_url = docker_url
        self._timeout = timeout
        self._session: Any = None
        self._base = ""

    def _connect_args(self) -> tuple[str, dict[str, Any]]:
        """(base URL, aiohttp connector kwargs) for the engine's address."""
        import aiohttp

        docker_url = resolve_docker_url(self._docker_url)
        if docker_url:
            base_url, tls = docker_url, None
        else:
            env = docker.utils.kwargs_from_env()
            base_url, tls = env.get("base_url"), env.get("tls")
        url = docker.utils.parse_host(base_url, False, tls=bool(tls))
        if url.startswith("http+unix://"):
            return "http://docker", {"connector": aiohttp.UnixConnector(path=url[len("http+unix://"):],
                                                                         limit=MAX_CONNECTIONS)}
        if url.startswith("ssh://"):
            raise DockerError(0, "connect", f"{url}: ssh:// engines are not supported; use unix:// or tcp://")
        ssl_context: Any = None
        if url.startswith("https://"):
            import ssl

            ssl_context = ssl.create_default_context(cafile=getattr(tls, "ca_cert", None))
            if not getattr(tls, "verify", True):
                ssl_context.check_hostname = False
                ssl_context.verify_mode = ssl.CERT_NONE
            cert = getattr(tls, "cert", None)
            if cert:
                ssl_context.load_cert_chain(*cert)
        return url.rstrip("/"), {"connector": aiohttp.TCPConnector(ssl=ssl_context if ssl_context else False,
                                                                   limit=MAX_CONNECTIONS)}

    async def _get(self, path: str, what: str, missing_ok: bool = False) -> Any:
        import aiohttp

        if self._session is None:
            self._base, kwargs = self._connect_args()
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout), **kwargs)
        async with self._session.get(self._base + path) as resp:
            if resp.status == 404 and missing_ok:
                return None
            if resp.status != 200:
                text = (await resp.text()).strip()
                try:
                    text = json.loads(text).get("message", text)
                except (ValueError, AttributeError):
                    pass
                raise DockerError(resp.status, what, text[:300])
            return await resp.json(content_type=None)

    async def inspect(self, container_id: str) -> dict[str, Any] | None:
        """The container's inspect document, or None when it no longer exists."""
        return await self._get(f"/containers/{quote(container_id, safe='')}/json", "inspect", missing_ok=True)

    async def running(self) -> list[tuple[str, str]]:
        """(id, name) of every running (and paused) container."""
        listed = await self._get("/containers/json", "list containers") or []
        return [(c["Id"], (c.get("Names") or ["/"])[0].lstrip("/")) for c in listed]

    async def info(self) -> dict[str, Any]:
        """The engine's ``/info`` (``Name`` is the Docker host's host name)."""
        return await self._get("/info", "info") or {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
