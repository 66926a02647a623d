"""Forwarding of names outside the domain to upstream resolvers (never an open resolver).

The client's query is sent as-is (its ID, EDNS and flags) to each upstream in order, over UDP for
UDP clients and TCP for TCP clients (a truncated UDP answer is passed on, so the client retries
over TCP). The first answer with the same ID and RCODE NOERROR or NXDOMAIN wins; any other RCODE
(SERVFAIL, REFUSED, NOTIMP, ...) moves on to the next upstream, as Consul's ``handleRecurse`` does.
When no upstream gives such an answer (each failed, timed out or could not be reached) ``forward``
returns None and the server answers SERVFAIL with RA itself, as Consul does: an upstream's failing
answer is never passed on, because a REFUSED from upstream would look to the client like Waypost
refusing it recursion (an ACL answer), when it is the upstream that failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import struct
from collections.abc import Sequence

from dnslib import RCODE

from waypost.dns.config import Network
from waypost.listen import connected_udp_socket

log = logging.getLogger("waypost.dns.recursor")

ACCEPTED_RCODES = (0, 3)  # NOERROR, NXDOMAIN: an upstream's answer to pass on; anything else tries the next


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
        """The first upstream's NOERROR or NXDOMAIN answer to ``query``, or None when no upstream
        gave one (every one failed, timed out or was unreachable)."""
        for host, port in self.upstreams:
            answer = await self._ask(host, port, query, tcp)
            if answer is None:
                continue
            rcode = answer[3] & 0x0F
            if rcode in ACCEPTED_RCODES:
                self.forwarded += 1
                return answer
            log.debug("recursor %s:%d answered %s", host, port, RCODE.get(rcode, rcode))
        self.failed += 1
        return None

    async def _ask(self, host: str, port: int, query: bytes, tcp: bool) -> bytes | None:
        """One upstream's answer, or None on a timeout or socket error."""
        try:
            async with asyncio.timeout(self.timeout):
                return await (self._tcp(host, port, query) if tcp else self._udp(host, port, query))
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            log.debug("recursor %s:%d failed: %r", host, port, exc)
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
