"""A read-only catalog client for processes that only watch: h11 over asyncio streams.

The sidecar ambassador and `waypost dns` only read the catalog (``/v1/health/service/<name>`` and
``/v1/catalog/services`` blocking queries). :class:`CatalogClient` is built on py-consul's aiohttp
client, and importing aiohttp plus py-consul (which imports requests) adds ~20 MB of resident
memory; this reader keeps an idle sidecar under 30 MB. It shares everything that decides
behaviour with the full client: :class:`~waypost.catalog.watch.Watch` (blocking-query index
rules, backoff, last value kept), the instance model, and :class:`~waypost.config.CatalogConfig`
(URL, token, TLS CA file, verification). h11 (python-hyper's sans-IO HTTP/1.1 parser) does the
protocol work; connections are kept alive and reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any
from urllib.parse import quote, urlencode

import h11

from waypost.catalog.model import path_segment
from waypost.catalog.reads import CatalogReads
from waypost.config import CatalogConfig

CONNECT_TIMEOUT = 5.0
READ_SIZE = 65536


class CatalogReadError(Exception):
    """The catalog answered a read with an error status (e.g. 403 for a bad token)."""

    def __init__(self, status: int, path: str, body: bytes) -> None:
        text = body.decode(errors="replace").strip()[:200]
        super().__init__(f"catalog read {path}: HTTP {status}{': ' + text if text else ''}")
        self.status = status


class _Connection:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)

    async def get(self, target: str, headers: list[tuple[str, str]]) -> tuple[int, dict[bytes, bytes], bytes]:
        conn = self.h11
        self.writer.write(conn.send(h11.Request(method="GET", target=target, headers=headers))
                          + conn.send(h11.EndOfMessage()))
        await self.writer.drain()
        status, response_headers, body = 0, {}, bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await self.reader.read(READ_SIZE))  # b"" tells h11 the peer closed
            elif isinstance(event, h11.Response):
                status = event.status_code
                response_headers = {k.lower(): v for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return status, response_headers, bytes(body)
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionResetError("the catalog closed the connection mid-response")

    def next_cycle(self) -> bool:
        """Get ready for the next request on this connection; False when it can't be reused."""
        conn = self.h11
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
            return True
        return False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class CatalogReader(CatalogReads):
    """The read half of :class:`~waypost.catalog.CatalogClient`: ``url``, ``close()`` and the
    :class:`~waypost.catalog.reads.CatalogReads` (same arguments, same results)."""

    def __init__(self, config: CatalogConfig | None = None) -> None:
        self.config = config or CatalogConfig.from_url()
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        self._headers = [("Host", f"{host}:{self.config.port}"), ("Accept", "application/json"),
                         ("User-Agent", "waypost-reader")]
        if self.config.token:
            self._headers.append(("X-Consul-Token", self.config.token))
        self._idle: list[_Connection] = []
        self._ssl: Any = None
        if self.config.scheme == "https":
            import ssl

            self._ssl = ssl.create_default_context(cafile=self.config.ca_file or None)
            if not self.config.verify:
                self._ssl.check_hostname = False
                self._ssl.verify_mode = ssl.CERT_NONE

    @property
    def url(self) -> str:
        return self.config.url

    async def close(self) -> None:
        """Close the idle connections (requests in flight close their own when cancelled)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    async def __aenter__(self) -> CatalogReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _connect(self) -> _Connection:
        async with asyncio.timeout(CONNECT_TIMEOUT):  # not wait_for: see waypost/catalog/watch.py
            reader, writer = await asyncio.open_connection(self.config.host, self.config.port, ssl=self._ssl,
                                                           limit=READ_SIZE)
        return _Connection(reader, writer)

    async def _get(self, path: str, params: dict[str, Any]) -> tuple[int, Any]:
        """GET a JSON resource; returns (X-Consul-Index, decoded body)."""
        query = urlencode({k: v for k, v in params.items() if v is not None})
        target = path + ("?" + query if query else "")
        status, headers, body = await self._exchange(target)
        if status != 200:
            raise CatalogReadError(status, path, body)
        return int(headers.get(b"x-consul-index", b"0") or 0), json.loads(body) if body else None

    async def _exchange(self, target: str) -> tuple[int, dict[bytes, bytes], bytes]:
        """One request on a kept-alive connection if there is one, else on a new one."""
        if self._idle:
            try:
                return await self._request(self._idle.pop(), target)
            except (ConnectionError, h11.RemoteProtocolError):
                pass  # the catalog had closed that idle connection: once more on a new one
        return await self._request(await self._connect(), target)

    async def _request(self, conn: _Connection, target: str) -> tuple[int, dict[bytes, bytes], bytes]:
        """Send, read the whole answer, then keep the connection for the next request or close it
        (also when cancelled half-way: its state is unknown then)."""
        answer = None
        try:
            answer = await conn.get(target, self._headers)
            return answer
        finally:
            if answer is not None and conn.next_cycle():
                self._idle.append(conn)
            else:
                conn.close()

    async def _health_service(self, service: str, tag: str | None, passing_only: bool, index: int = 0,
                              wait: str | None = None) -> tuple[int, list[dict[str, Any]]]:
        path = "/v1/health/service/" + quote(path_segment(service), safe="")
        params = {"index": index or None, "wait": wait if index else None,
                  "passing": "1" if passing_only else None, "tag": tag}
        idx, data = await self._get(path, params)
        return idx, data or []

    async def _catalog_services(self, index: int = 0, wait: str | None = None) -> tuple[int, dict[str, Any]]:
        idx, data = await self._get("/v1/catalog/services", {"index": index or None, "wait": wait if index else None})
        return idx, data or {}
