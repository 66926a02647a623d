"""Facts about this host the registrator needs: its node name and its routable IP."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket

log = logging.getLogger("waypost.registrator")

# Connecting a UDP socket only selects a route; no packet is sent to these addresses.
_ROUTE_PROBES = ((socket.AF_INET, "198.51.100.1"), (socket.AF_INET6, "2001:db8::1"))


def _usable(ip: str) -> bool:
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    return not (addr.is_loopback or addr.is_unspecified or addr.is_link_local)


def default_route_ip() -> str:
    """The source address of this host's default route (IPv4 first), or "" when there is none.

    Local syscalls only (a UDP connect picks a route and sends nothing): safe on the event loop.
    """
    for family, probe in _ROUTE_PROBES:
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.connect((probe, 9))
                ip = sock.getsockname()[0]
        except OSError:
            continue
        if _usable(ip):
            return ip
    return ""


async def routable_ip() -> str:
    """The source address of this host's default route, else a non-loopback address of its name.

    Never a 127.x / ::1 address (registering those would make other hosts dial themselves);
    empty when nothing better is known, in which case the catalog uses the node's address.
    """
    ip = default_route_ip()
    if ip:
        return ip
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(socket.gethostname(), None,
                                                              proto=socket.IPPROTO_TCP)
    except OSError:
        infos = []
    for info in infos:
        ip = str(info[4][0])
        if _usable(ip):
            return ip
    return ""
