"""The event loop every waypost process runs: uvloop, without resolver threads for IP addresses.

uvloop's ``sock_connect`` (which aiohttp uses for every new connection, py-consul's included)
looks the address up with ``getaddrinfo`` and no socket type, and with no type uvloop skips its
fast path for IP literals: even ``127.0.0.1`` went to libuv's thread pool, which starts four
threads that stay for the life of the process. :class:`Loop` answers numeric addresses itself
(``AI_NUMERICHOST``: no name service is consulted, nothing blocks); names still go to uvloop.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from waypost.listen import numeric_family

try:
    import uvloop
except ImportError:  # pragma: no cover - platform without uvloop
    uvloop = None  # type: ignore[assignment]


if uvloop is not None:

    class Loop(uvloop.Loop):  # type: ignore[misc,name-defined]
        """uvloop's loop with a thread-free ``getaddrinfo`` for IP literals."""

        async def getaddrinfo(self, host: Any, port: Any, *, family: int = 0, type: int = 0,  # noqa: A002
                              proto: int = 0, flags: int = 0) -> list[Any]:
            if isinstance(host, str) and numeric_family(host) is not None:
                return socket.getaddrinfo(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)
            return await super().getaddrinfo(host, port, family=family, type=type, proto=proto, flags=flags)

    class LoopPolicy(uvloop.EventLoopPolicy):  # type: ignore[misc,name-defined]
        """Creates :class:`Loop` event loops."""

        def _loop_factory(self) -> Loop:
            return Loop()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A waypost :class:`Loop` (the stdlib loop where uvloop is missing)."""
    return Loop() if uvloop is not None else asyncio.new_event_loop()


def install() -> bool:
    """Make :class:`Loop` the loop ``asyncio.run`` creates; False where uvloop is missing."""
    if uvloop is None:  # pragma: no cover
        return False
    asyncio.set_event_loop_policy(LoopPolicy())
    return True
