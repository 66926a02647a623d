"""Forwarding of names outside the domain to upstream resolvers (never an open resolver).

The client's query is sent as-is (its ID, EDNS and flags) to each upstream in order, over UDP for
UDP clients and TCP for TCP clients (a truncated UDP answer is passed on, so the client retries
over TCP); the first well-formed answer with the same ID wins. ``forward`` returns None when every upstream failed or
timed out, so the server can answer SERVFAIL.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import struct
from collections.abc import Sequence

from waypost.dns.config import Network
from waypost.listen import connected_udp_socket

log = logging.getLogger("waypost.dns.recursor")


class _OneAnswer(asyncio.DatagramProtocol):
    def __init__(self, query_id: bytes, peer: tuple[str, int]) -> None:
        self.query_id = query_id
        self.peer = peer
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        # Only the upstream's own reply to this ID counts (spoofed or stray packets are ignored).
        if (addr[0], addr[1]) == self.peer and len(data) >= 12 and data[:2] == self.query_id and data[2] & 0x80:
            if not self.answer.done():
                self.answer.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


class Recursor:
    """Upstream resolvers tried in order, each with ``timeout`` seconds, plus the client ACL."""

    def __init__(self, upstreams: Sequence[tuple[str, int]], timeout: float = 2.0,
                 allow_from: Sequence[Network] = ()) -> None:
        self.upstreams = tuple(upstreams)
        self.timeout = timeout
        self.allow_from = tuple(allow_from)
        self.forwarded = 0
        self.failed = 0
        self.refused = 0

    @property
    def enabled(self) -> bool:
        return bool(self.upstreams)

    def allowed(self, client: str) -> bool:
        """Whether this client address may use recursion."""
        try:
            ip = ipaddress.ip_address(client.split("%")[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self.allow_from)

    async def forward(self, query: bytes, tcp: bool = False) -> bytes | None:
        """The first upstream answer to ``query``, or None when all upstreams failed."""
        for host, port in self.upstreams:
            try:
                if tcp:
                    answer = await asyncio.wait_for(self._tcp(host, port, query), self.timeout)
                else:
                    answer = await asyncio.wait_for(self._udp(host, port, query), self.timeout)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                log.debug("recursor %s:%d failed: %r", host, port, exc)
                continue
            if answer is not None:
                self.forwarded += 1
                return answer
        self.failed += 1
        return None

    async def _udp(self, host: str, port: int, query: bytes) -> bytes | None:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(
            lambda: _OneAnswer(query[:2], (host, port)), sock=connected_udp_socket(host, port)
        )
        try:
            transport.sendto(query)
            return await proto.answer
        finally:
            transport.close()

    async def _tcp(self, host: str, port: int, query: bytes) -> bytes | None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(struct.pack("!H", len(query)) + query)
            await writer.drain()
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            answer = await reader.readexactly(length)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        if len(answer) < 12 or answer[:2] != query[:2]:
            return None
        return answer
