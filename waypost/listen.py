"""Sockets bound and connected by us, handed to the event loop ready to use.

uvloop resolves the address given to ``create_server`` and ``create_datagram_endpoint`` on libuv's
thread pool, even a numeric one, which starts four resolver threads that live as long as the
process. Every address Waypost listens on or forwards to is an IP literal (the flags are parsed
that way), so binding the socket here costs nothing, and the processes keep to the threads they
need: the Docker event bridge, namespace entry and the catalog's disk writes. A listen address
given as a host name is still accepted: it is resolved with the loop's own resolver, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket


def numeric_family(host: str) -> int | None:
    """AF_INET / AF_INET6 for an IP literal (an IPv6 zone ``%eth0`` allowed), None for a host name."""
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    return socket.AF_INET6 if addr.version == 6 else socket.AF_INET


def tcp_listener(family: int, address: tuple, *, backlog: int = 1024,  # type: ignore[type-arg]
                 reuse_port: bool = False) -> socket.socket:
    """A non-blocking TCP socket of `family` listening on `address` (SO_REUSEADDR; IPv6 sockets
    are v6-only, as asyncio makes them). Binds in whatever network namespace the thread is in."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def listening_socket(host: str, port: int, *, backlog: int = 1024, reuse_port: bool = False) -> socket.socket:
    """:func:`tcp_listener` on host:port, for ``create_server(sock=…)`` or aiohttp's ``SockSite``."""
    family = numeric_family(host)
    if family is not None:
        return tcp_listener(family, (host, port), backlog=backlog, reuse_port=reuse_port)
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    if not infos:
        raise OSError(f"{host!r} resolves to no address")
    return tcp_listener(infos[0][0], infos[0][4], backlog=backlog, reuse_port=reuse_port)


def connected_udp_socket(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket connected to an IP literal host:port (no packet is sent)."""
    family = numeric_family(host)
    if family is None:
        raise ValueError(f"{host!r} is not an IP address")
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.connect((host, port))
    except OSError:
        sock.close()
        raise
    return sock
