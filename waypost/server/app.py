"""The embedded catalog server: lifecycle, middleware (ACL token, datacenter, Consul errors),
blocking queries and durable commits. The endpoints themselves live in :mod:`waypost.server.api`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import socket
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from waypost.listen import listening_socket
from waypost.server.checks import CheckRunner
from waypost.server.http_util import (
    DEFAULT_WAIT,
    JITTER_FRACTION,
    MAX_WAIT,
    HTTPError,
    bad_request,
    json_response,
    parse_duration,
    parse_uint,
    text_response,
)
from waypost.server.persist import Persister, PersistError
from waypost.server.store import PASSING, SERF_CHECK_ID, Change, Store

log = logging.getLogger("waypost.catalog")


class _ClientErrorFilter(logging.Filter):
    """aiohttp logs every unparsable request (junk bytes, bad URLs, bad headers) as an ERROR with a
    traceback; that is the client's problem, so it becomes one DEBUG line (no log flooding)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg = "catalog: refused a malformed request: %s"
            record.args = (" ".join(str(exc).split())[:300],)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return log.isEnabledFor(logging.DEBUG)
        return True


http_log = logging.getLogger("waypost.catalog.http")
http_log.addFilter(_ClientErrorFilter())

CONSUL_COMPAT_VERSION = "1.17.0"
MAX_BODY = 4 * 1024 * 1024
DURABLE_WAIT = 2.0  # how long a read waits for its index to reach the disk before answering anyway
READ_HEADERS = {"X-Consul-KnownLeader": "true", "X-Consul-LastContact": "0",
                "X-Consul-Effective-Consistency": "leader"}

Compute = Callable[[], tuple[int, Any]]


def _body_too_large(size: int | None) -> HTTPError:
    got = f"({size} bytes)" if size else ""
    return HTTPError(413, f"Request body{got} too large, max size: {MAX_BODY} bytes")


class CatalogServer:
    """A single-node catalog speaking the Consul HTTP API subset Waypost (and registrator) use.

    ``app`` exists right after construction so callers can add routes before :meth:`start`.
    ``reap_interval`` and ``deregister_critical_min`` are Consul's reaper period (30 s) and minimum
    ``DeregisterCriticalServiceAfter`` (1 min); tests may lower them before ``start()``.
    """

    reap_interval: float = 30.0
    deregister_critical_min: float = 60.0

    def __init__(self, host: str = "127.0.0.1", port: int = 8500, data_dir: str | None = None,
                 token: str | None = None, node_name: str | None = None, datacenter: str = "dc1",
                 node_address: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None) -> None:
        self.host = host
        self.ssl_context = ssl_context
        self.port = port
        self.data_dir = data_dir
        self.token = token or None
        self.token_reads = False
        self.datacenter = datacenter
        self.node_name = node_name or socket.gethostname() or "waypost"
        self.node_address = node_address
        self.started_at = time.time()
        self.store = Store(datacenter, self.node_name, node_address, str(uuid.uuid4()))
        self.persister: Persister | None = Persister(data_dir) if data_dir else None
        self.checks = CheckRunner(self.store, self._persist_in_background)
        self.app = web.Application(middlewares=[self._middleware], client_max_size=MAX_BODY)
        self._runner: web.AppRunner | None = None
        self._stopping = False
        from waypost.server.api import add_routes  # api imports this module's helpers

        add_routes(self)

    @property
    def url(self) -> str:
        host = self.host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://[{host}]:{self.port}" if ":" in host else f"{scheme}://{host}:{self.port}"

    # ---- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load persisted state, register the agent's node, bind, and start the check runners."""
        if self.persister is not None:
            rows = await self.persister.open()
            self.store.load(rows)
            for key, value in rows.get("meta", []):
                if key == "node_id":
                    self.store.node_id = str(value)
            # everything loaded is on disk, whatever the stored index row says
            self.persister.durable_index = max(self.persister.durable_index, self.store.index)
            log.info("catalog: loaded %d service(s), %d check(s), %d key(s) from %s (index %d)",
                     len(self.store.services), len(self.store.checks), len(self.store.kv),
                     self.persister.path, self.store.index)
        await self.commit(*self.ensure_local_node(), extra=[("meta", "node_id", self.store.node_id)])
        self.checks.reap_interval = self.reap_interval
        self.checks.deregister_min = self.deregister_critical_min
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=1.0,
                                     logger=http_log)
        await self._runner.setup()
        try:
            sock = await listening_socket(self.host, self.port)
            site = web.SockSite(self._runner, sock, ssl_context=self.ssl_context)
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            if self.persister is not None:
                await self.persister.close()
            raise OSError(exc.errno, f"cannot listen on {self.host}:{self.port}: {exc.strerror}; "
                                     "pick another --listen address or stop what uses it") from exc
        self.port = sock.getsockname()[1]
        await self.checks.start()

    async def stop(self) -> None:
        """Wake blocked readers, stop checks, close the listener and flush the data dir."""
        self._stopping = True
        self.store._notify(list(self.store._waiters))
        await self.checks.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.persister is not None:
            await self.persister.close()

    def ensure_local_node(self) -> list[Change]:
        """The agent's node and its passing serfHealth check, as a Consul dev agent has them."""
        changes = []
        store = self.store
        change = store.ensure_node(self.node_name, self.node_address, store.node_id)
        if change:
            changes.append(change)
        serf = {
            "Node": self.node_name, "CheckID": SERF_CHECK_ID, "Name": "Serf Health Status",
            "Status": PASSING, "Notes": "", "Output": "Agent alive and reachable", "ServiceID": "",
            "ServiceName": "", "ServiceTags": [], "Type": "", "Interval": "", "Timeout": "",
            "ExposedPort": 0, "Definition": {},
        }
        existing = store.checks.get((store.node_key, SERF_CHECK_ID))
        if existing is None or existing["Status"] != PASSING:
            change = store.register_check(self.node_name, serf, None)
            if change:
                changes.append(change)
        return changes

    # ---- durability ---------------------------------------------------------------------------

    async def commit(self, *changes: Change | None, extra: list[tuple[str, str, Any]] | None = None) -> None:
        """Wait until these changes are durable (no-op without a data dir). 500 if the disk fails."""
        if self.persister is None:
            return
        ops = [op for c in changes if c is not None for op in c.ops] + (extra or [])
        if not ops:
            return
        try:
            await self.persister.submit(ops)
        except PersistError as exc:
            raise HTTPError(500, str(exc)) from None

    async def durable(self, index: int) -> None:
        """Hold a read until `index` is on disk, so a crash cannot take back an index a client saw."""
        if self.persister is not None and index > self.persister.durable_index:
            if not await self.persister.wait_durable(index, DURABLE_WAIT):
                log.warning("catalog: index %d not on disk after %.0f s; answering anyway", index, DURABLE_WAIT)

    def _persist_in_background(self, change: Change) -> None:
        """Check-runner results: persisted, but nobody waits for them."""
        if self.persister is None:
            return
        fut = self.persister.submit(change.ops)
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # errors are logged by the writer

    # ---- request plumbing ---------------------------------------------------------------------

    def _token_of(self, request: web.Request) -> str:
        token = request.headers.get("X-Consul-Token") or request.query.get("token", "")
        if not token:
            auth = request.headers.get("Authorization", "")
            if auth[:7].lower() == "bearer ":
                token = auth[7:].strip()
        return token

    def _denied(self, request: web.Request) -> str | None:
        """Consul's 403 text when this request lacks the token, else None."""
        if self.token is None or not request.path.startswith("/v1/"):
            return None
        is_write = request.method not in ("GET", "HEAD", "OPTIONS")
        if not is_write and (not self.token_reads or request.path.startswith("/v1/status/")):
            return None
        given = self._token_of(request)
        if not given:
            return "Permission denied"
        # constant time, and hashing first hides the configured token's length too
        digest = hashlib.sha256(given.encode("utf-8", "surrogateescape")).digest()
        if hmac.compare_digest(digest, hashlib.sha256(self.token.encode()).digest()):
            return None
        return "ACL not found"

    @web.middleware
    async def _middleware(self, request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        consul_path = request.path.startswith("/v1/")
        try:
            if consul_path:
                denied = self._denied(request)
                if denied:
                    raise HTTPError(403, denied)
                length = request.content_length
                if length is not None and length > MAX_BODY and not request.path.startswith("/v1/kv/"):
                    raise _body_too_large(length)
                dc = request.query.get("dc")
                if dc and dc != self.datacenter and not request.path.startswith(("/v1/agent/", "/v1/status/")):
                    raise HTTPError(500, "No path to datacenter")
            return await handler(request)
        except HTTPError as exc:
            return text_response(exc.status, exc.text)
        except web.HTTPRequestEntityTooLarge:  # a chunked body grew past MAX_BODY while read
            if not consul_path:
                raise
            return text_response(413, _body_too_large(None).text)
        except web.HTTPMethodNotAllowed as exc:
            if not consul_path:
                raise
            resp = text_response(405, f"method {request.method} not allowed")
            resp.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
            return resp
        except web.HTTPNotFound:
            if not consul_path:
                raise
            return text_response(404, "404 page not found")
        except web.HTTPException:
            raise
        except asyncio.CancelledError:
            raise
        except ConnectionResetError:
            raise
        except Exception as exc:  # noqa: BLE001 - one line, never a traceback to the client
            log.exception("catalog: %s %s failed", request.method, request.path)
            return text_response(500, f"internal error: {exc.__class__.__name__}: {exc}")

    def reply(self, request: web.Request, data: Any, index: int | None = None,
              headers: dict[str, str] | None = None) -> web.Response:
        """A JSON answer with Consul's read headers (and ``X-Consul-Index`` when given)."""
        hdrs = dict(READ_HEADERS) if request.method == "GET" else {}
        if index is not None:
            hdrs["X-Consul-Index"] = str(max(index, 1))
        if headers:
            hdrs.update(headers)
        return json_response(data, pretty="pretty" in request.query, headers=hdrs)

    def reply_raw(self, request: web.Request, body: bytes, index: int) -> web.Response:
        """An already-encoded JSON answer with the read headers."""
        hdrs = dict(READ_HEADERS)
        hdrs["X-Consul-Index"] = str(max(index, 1))
        return web.Response(body=body, content_type="application/json", headers=hdrs)

    def wait_params(self, request: web.Request) -> tuple[int, float]:
        """``?index`` and ``?wait`` (default 5m, capped at 10m, plus up to wait/16 of jitter)."""
        min_index = parse_uint(request.query, "index", "index") or 0
        wait = DEFAULT_WAIT
        if "wait" in request.query:
            raw = request.query["wait"]
            try:
                wait = parse_duration(raw)
            except ValueError:
                raise bad_request(f"Invalid wait time: {raw!r} (write a duration such as 30s or 5m)") from None
            if wait <= 0:
                wait = DEFAULT_WAIT
        wait = min(wait, MAX_WAIT)
        return min_index, wait + random.uniform(0, wait / JITTER_FRACTION)

    async def blocking(self, request: web.Request, keys: Iterable[str], compute: Compute) -> tuple[int, Any]:
        """Run ``compute`` now, or (with ``?index``) again on each change to ``keys`` until the
        result's index moves past the client's, the wait ends, or the server stops."""
        min_index, wait = self.wait_params(request)
        idx, result = compute()
        if min_index == 0:
            await self.durable(idx)
            return idx, result
        keys = tuple(keys)
        deadline = time.monotonic() + wait
        while idx <= min_index and min_index <= self.store.index and not self._stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await self.store.wait_for_change(keys, remaining)
            idx, result = compute()
        await self.durable(idx)
        return idx, result

    async def blocking_hash(self, request: web.Request, keys: Iterable[str],
                            compute: Callable[[], tuple[str, Any]]) -> tuple[str, Any]:
        """Hash-based blocking (``?hash=``) as ``/v1/agent/service/:id`` offers it."""
        _, wait = self.wait_params(request)
        want = request.query.get("hash", "")
        digest, result = compute()
        await self.durable(self.store.index)
        if not want:
            return digest, result
        keys = tuple(keys)
        deadline = time.monotonic() + wait
        while digest == want and not self._stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await self.store.wait_for_change(keys, remaining)
            digest, result = compute()
            await self.durable(self.store.index)
        return digest, result
