"""The agent's own health checks: HTTP and TCP probes on their interval, TTL expiry, and the reaper
for ``DeregisterCriticalServiceAfter``. Outputs are worded like Consul's so UIs and scripts match.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from waypost.server.registration import OUTPUT_MAX
from waypost.server.store import CRITICAL, PASSING, WARNING, Change, Store

log = logging.getLogger("waypost.catalog.checks")

MIN_INTERVAL = 1.0  # Consul's MinInterval: shorter intervals are raised to this
DEFAULT_TIMEOUT = 10.0
USER_AGENT = "Consul Health Check"


def truncate_output(text: str, limit: int = OUTPUT_MAX) -> str:
    """Keep the last `limit` bytes (the check's OutputMaxSize), as Consul's circular buffer does."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    return data[-limit:].decode("utf-8", "ignore")


class StatusGate:
    """Consul's StatusHandler: a status reaches the catalog only after SuccessBeforePassing
    successes (passing or warning) or FailuresBeforeCritical failures in a row; from
    FailuresBeforeWarning failures on, a failure shows as warning. Counters start at their
    thresholds, so the first result after (re)start is reported at once."""

    def __init__(self, definition: dict[str, Any]) -> None:
        self.success_before = int(definition.get("SuccessBeforePassing") or 0)
        self.failures_before_critical = int(definition.get("FailuresBeforeCritical") or 0)
        self.failures_before_warning = int(definition.get("FailuresBeforeWarning") or 0)
        self.successes = self.success_before
        self.failures = self.failures_before_critical

    def status(self, status: str) -> str | None:
        """The status to report for one probe result, or None to keep the current one."""
        if status in (PASSING, WARNING):
            self.successes += 1
            self.failures = 0
            return status if self.successes >= self.success_before else None
        self.failures += 1
        self.successes = 0
        if self.failures >= self.failures_before_critical:
            return status
        if self.failures >= self.failures_before_warning:
            return WARNING
        return None


def _os_reason(exc: BaseException) -> str:
    err = exc if isinstance(exc, OSError) else getattr(exc, "os_error", None)
    if isinstance(err, OSError):
        text = os.strerror(err.errno) if err.errno else (err.strerror or "")
        if text:
            return text[0].lower() + text[1:]  # Go's wording: "connection refused"
    return str(exc) or exc.__class__.__name__


async def probe_http(session: aiohttp.ClientSession, definition: dict[str, Any]) -> tuple[str, str]:
    """One HTTP check: 2xx passing, 429 warning, anything else critical."""
    url = definition["HTTP"]
    method = (definition.get("Method") or "GET").upper()
    timeout = definition.get("Timeout") or DEFAULT_TIMEOUT
    headers: dict[str, str] = {"User-Agent": USER_AGENT, "Accept": "text/plain, text/*, */*"}
    for name, values in (definition.get("Header") or {}).items():
        if values:
            headers[name] = values[-1] if isinstance(values, list) else str(values)
    ssl_ctx: bool | ssl.SSLContext | None = False if definition.get("TLSSkipVerify") else None
    verb = method[0] + method[1:].lower()
    try:
        async with session.request(
            method, url, headers=headers, data=(definition.get("Body") or None),
            timeout=aiohttp.ClientTimeout(total=timeout), ssl=ssl_ctx,
            allow_redirects=not definition.get("DisableRedirects"),
        ) as resp:
            body = await resp.content.read(64 * 1024)
            output = f"HTTP {method} {url}: {resp.status} {resp.reason or ''} Output: " + body.decode(
                "utf-8", "replace")
            limit = definition.get("OutputMaxSize") or OUTPUT_MAX
            if 200 <= resp.status <= 299:
                return PASSING, truncate_output(output, limit)
            if resp.status == 429:
                return WARNING, truncate_output(output, limit)
            return CRITICAL, truncate_output(output, limit)
    except TimeoutError:
        return CRITICAL, f'{verb} "{url}": context deadline exceeded (Client.Timeout exceeded while awaiting headers)'
    except aiohttp.InvalidURL:
        return CRITICAL, f'parse "{url}": invalid URL'
    except aiohttp.ClientConnectorError as exc:
        return CRITICAL, f'{verb} "{url}": dial tcp {exc.host}:{exc.port}: connect: {_os_reason(exc)}'
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return CRITICAL, f'{verb} "{url}": {exc.__class__.__name__}: {exc}'


def split_hostport(target: str) -> tuple[str, int]:
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address {target}: missing port in address")
    return host.strip("[]") or "127.0.0.1", int(port)


async def probe_tcp(definition: dict[str, Any]) -> tuple[str, str]:
    """One TCP check: passing when a connection opens within the timeout."""
    target = definition["TCP"]
    timeout = definition.get("Timeout") or DEFAULT_TIMEOUT
    try:
        host, port = split_hostport(target)
    except ValueError as exc:
        return CRITICAL, f"dial tcp {exc}"
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return CRITICAL, f"dial tcp {target}: i/o timeout"
    except socket.gaierror as exc:
        return CRITICAL, f"dial tcp: lookup {host}: {exc.strerror or exc}"
    except OSError as exc:
        return CRITICAL, f"dial tcp {target}: connect: {_os_reason(exc)}"
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return PASSING, f"TCP connect {target}: Success"


class CheckRunner:
    """Runs the local node's HTTP/TCP/TTL checks and reaps services critical for too long.

    ``on_change`` receives every index-moving :class:`Change` (the server persists it).
    """

    def __init__(self, store: Store, on_change: Callable[[Change], None], reap_interval: float = 30.0,
                 deregister_min: float = 60.0) -> None:
        self.store = store
        self.on_change = on_change
        self.reap_interval = reap_interval
        self.deregister_min = deregister_min
        self._tasks: dict[str, tuple[dict[str, Any], asyncio.Task[None]]] = {}
        self._ttl_timers: dict[str, asyncio.TimerHandle] = {}
        self._ttl_last_output: dict[str, str] = {}
        self._critical_since: dict[str, float] = {}
        self._session: aiohttp.ClientSession | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._started = False

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True))
        self._started = True
        self.sync(initial=True)
        self._reaper = asyncio.create_task(self._reap_loop(), name="waypost-catalog-reaper")

    async def stop(self) -> None:
        self._started = False
        tasks = [t for _, t in self._tasks.values()]
        if self._reaper is not None:
            tasks.append(self._reaper)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        for timer in self._ttl_timers.values():
            timer.cancel()
        self._ttl_timers.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ---- reconcile with the store -------------------------------------------------------------

    def sync(self, initial: bool = False) -> None:
        """Start, restart or stop runners so they match the local node's check definitions."""
        if not self._started:
            return
        node = self.store.node_key
        changed = self.store.local_check_changes
        if initial:
            changed.update(cid for (n, cid) in self.store.check_defs if n == node)
        wanted = {cid: self.store.check_defs[(node, cid)] for cid in changed
                  if (node, cid) in self.store.check_defs}
        for cid in changed:
            if cid in self._tasks and self._tasks[cid][0] != wanted.get(cid):
                self._tasks.pop(cid)[1].cancel()
            if cid in self._ttl_timers and wanted.get(cid, {}).get("Type") != "ttl":
                self._ttl_timers.pop(cid).cancel()
                self._ttl_last_output.pop(cid, None)
            if cid not in wanted:
                self._critical_since.pop(cid, None)
        changed.clear()
        for cid, definition in wanted.items():
            chk = self.store.checks.get((node, cid))
            if chk is not None and chk["Status"] == CRITICAL:
                self._critical_since.setdefault(cid, time.monotonic())
            kind = definition.get("Type")
            if kind in ("http", "tcp") and cid not in self._tasks:
                delay = random.uniform(0, max(definition["Interval"], MIN_INTERVAL)) if initial else 0.0
                task = asyncio.create_task(self._probe_loop(cid, definition, delay), name=f"check {cid}")
                self._tasks[cid] = (definition, task)
            elif kind == "ttl" and initial:
                self._resume_ttl(cid, definition["TTL"], self.store.ttl_state.pop(cid, None))
            elif kind == "ttl":
                # a changed registration restarts the clock with its (maybe new) TTL, as Consul's addCheck
                self._arm_ttl(cid, definition["TTL"])

    # ---- results ------------------------------------------------------------------------------

    def _report(self, cid: str, status: str, output: str) -> None:
        if status == CRITICAL:
            self._critical_since.setdefault(cid, time.monotonic())
        else:
            self._critical_since.pop(cid, None)
        change = self.store.set_check_status(self.store.node_name, cid, status, output)
        if change is not None:
            self.on_change(change)

    async def _probe_loop(self, cid: str, definition: dict[str, Any], delay: float) -> None:
        interval = max(definition["Interval"], MIN_INTERVAL)
        gate = StatusGate(definition)
        if delay:
            await asyncio.sleep(delay)
        while True:
            started = time.monotonic()
            try:
                if definition["Type"] == "http":
                    assert self._session is not None
                    status, output = await probe_http(self._session, definition)
                else:
                    status, output = await probe_tcp(definition)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a probe bug must not kill the check loop
                log.warning("check %s: probe failed unexpectedly: %r", cid, exc)
                status, output = CRITICAL, f"probe error: {exc}"
            if (self.store.node_key, cid) not in self.store.checks:
                return
            gated = gate.status(status)
            if gated is not None:
                self._report(cid, gated, output)
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    # ---- TTL ----------------------------------------------------------------------------------

    def _arm_ttl(self, cid: str, ttl: float) -> None:
        old = self._ttl_timers.pop(cid, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._ttl_timers[cid] = loop.call_later(ttl, self._ttl_expired, cid)

    def _resume_ttl(self, cid: str, ttl: float, saved: dict[str, Any] | None) -> None:
        """Restart a TTL clock after a restart from its persisted deadline, as Consul's loadCheckState:
        a deadline that passed while the catalog was down makes the check critical at once."""
        if saved is None:  # data written before deadlines were persisted
            self._arm_ttl(cid, ttl)
            return
        output = str(saved.get("Output") or "")
        self._ttl_last_output[cid] = output
        remaining = float(saved.get("Deadline") or 0.0) - time.time()
        if remaining <= 0:
            self._ttl_expired(cid)
            return
        chk = self.store.checks[(self.store.node_key, cid)]
        self.store.set_check_status(self.store.node_name, cid, chk["Status"], output)
        self._arm_ttl(cid, remaining)

    def _ttl_expired(self, cid: str) -> None:
        self._ttl_timers.pop(cid, None)
        last = self._ttl_last_output.get(cid, "")
        output = f"TTL expired (last output before timeout follows): {last}" if last else "TTL expired"
        log.info("check %s missed its TTL; now critical", cid)
        self._report(cid, CRITICAL, output)

    def is_ttl(self, cid: str) -> bool:
        return self.store.check_defs.get((self.store.node_key, cid), {}).get("Type") == "ttl"

    def update_ttl(self, cid: str, status: str, output: str) -> Change | None:
        """A pass/warn/fail/update call: set the status and restart the TTL clock."""
        definition = self.store.check_defs[(self.store.node_key, cid)]
        output = truncate_output(output, definition.get("OutputMaxSize") or OUTPUT_MAX)
        self._ttl_last_output[cid] = output
        if self._started:
            self._arm_ttl(cid, definition["TTL"])
        if status == CRITICAL:
            self._critical_since.setdefault(cid, time.monotonic())
        else:
            self._critical_since.pop(cid, None)
        deadline = time.time() + definition["TTL"]
        return self.store.set_check_status(self.store.node_name, cid, status, output, ttl_deadline=deadline)

    # ---- DeregisterCriticalServiceAfter -------------------------------------------------------

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(self.reap_interval)
            try:
                self.reap()
            except Exception:  # noqa: BLE001 - keep reaping on the next round
                log.exception("catalog: reaping critical services failed")

    def reap(self) -> None:
        """Deregister services whose check has been critical longer than its deregister timeout."""
        now = time.monotonic()
        node = self.store.node_key
        for (n, cid), definition in list(self.store.check_defs.items()):
            after = definition.get("DeregisterCriticalServiceAfter") or 0.0
            if n != node or after <= 0:
                continue
            chk = self.store.checks.get((n, cid))
            if chk is None or not chk["ServiceID"] or chk["Status"] != CRITICAL:
                continue
            since = self._critical_since.setdefault(cid, now)
            if now - since >= max(after, self.deregister_min):
                log.info("check %s has been critical for %.0fs; deregistering service %s",
                         cid, now - since, chk["ServiceID"])
                change = self.store.deregister_service(self.store.node_name, chk["ServiceID"])
                if change is not None:
                    self.on_change(change)
                self.sync()
