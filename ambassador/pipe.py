"""A faithful TCP byte pipe between an accepted client and an upstream backend.

Built on asyncio Protocols (fast under uvloop: each chunk is one ``recv`` and, while the other
side's buffer is empty, one immediate ``send``). What the pipe preserves:

- backpressure both ways: when one side's write buffer passes its high-water mark, reading from
  the other side pauses until it drains;
- half-close: an EOF from one side becomes ``write_eof`` (``shutdown(SHUT_WR)``) on the other, and
  the pipe closes when both directions are done;
- resets: when one side fails (ECONNRESET, EPIPE, …) the other is closed with ``SO_LINGER 0``, so
  its peer sees a reset too rather than a clean end of stream;
- TCP_NODELAY and keepalive on both sockets.

Once linked, each half's ``data_received`` *is* the other half's ``transport.write``: no Python
frame runs per chunk. Bytes are counted by the kernel instead (``TCP_INFO``'s
``tcpi_bytes_received``) and credited to the backend by :meth:`Pipe.sync` — at EOF, at close,
before metrics are read and at each idle sweep. Sockets that are not TCP (socketpairs in tests)
keep a counting Python callback.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import socket
import struct
import termios
from collections.abc import Callable
from typing import Any

from waypost.ambassador.balancer import Backend

log = logging.getLogger("waypost.ambassador")

_LINGER_RESET = struct.pack("ii", 1, 0)
_INT_ZERO = struct.pack("i", 0)  # TIOCOUTQ (= SIOCOUTQ on sockets) and FIONREAD write an int here
_TCP_INFO_LEN = 136  # struct tcp_info up to tcpi_bytes_received (Linux >= 4.1)
_TCP_INFO_BYTES_RECEIVED = 128  # offset of __u64 tcpi_bytes_received; tcpi_state is byte 0
_FIN_RECEIVED_STATES = frozenset({6, 8, 9, 11})  # TIME_WAIT, CLOSE_WAIT, LAST_ACK, CLOSING
WRITE_HIGH_WATER = 512 * 1024
WRITE_LOW_WATER = 128 * 1024
KEEPALIVE_IDLE = 60


def tune_socket(transport: asyncio.BaseTransport) -> bool:
    """TCP_NODELAY, keepalive and write-buffer limits on a freshly connected transport.

    Returns whether the transport is a TCP socket (so the kernel can count its bytes).
    """
    transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)  # type: ignore[attr-defined]
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
    except OSError:  # not TCP (tests over socketpairs) or already gone
        return False
    return _KERNEL_COUNTS


def _kernel_counts_bytes() -> bool:
    """Whether this kernel's TCP_INFO has tcpi_bytes_received (Linux >= 4.1)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            return len(probe.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)) >= _TCP_INFO_LEN
    except (OSError, AttributeError):  # AttributeError: no socket.TCP_INFO off Linux
        return False


_KERNEL_COUNTS = _kernel_counts_bytes()


def bytes_read(sock: Any, eof: bool) -> int | None:
    """Bytes this process has read from a TCP socket, from the kernel's count; None if unavailable.

    ``tcpi_bytes_received`` counts what the peer sent (its FIN as one more byte) whether or not
    it was read yet, so the FIN and the bytes still queued for reading (FIONREAD) are taken off.
    `eof`: the FIN was read already (so nothing is queued).
    """
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
        if eof:
            return struct.unpack_from("Q", info, _TCP_INFO_BYTES_RECEIVED)[0] - 1
        unread = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, _INT_ZERO))[0]
    except (OSError, ValueError, struct.error):  # closed (uvloop: fd -1) or not TCP
        return None
    received = struct.unpack_from("Q", info, _TCP_INFO_BYTES_RECEIVED)[0] - unread
    # A socket reset after it got a FIN it never read (state CLOSE) is one byte over: rare, and
    # tcp_info cannot tell it from a plain reset.
    return received - 1 if info[0] in _FIN_RECEIVED_STATES else received


def reset(transport: asyncio.BaseTransport | None) -> None:
    """Close a transport so that its peer sees a TCP reset (SO_LINGER 0, then abort)."""
    if transport is None:
        return
    _set_linger_reset(transport)  # also right after a graceful close() that is still flushing
    transport.abort()  # type: ignore[attr-defined]


def _set_linger_reset(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        except (OSError, ValueError):  # ValueError: uvloop's handle is already closed (fd -1)
            pass


class _Side(asyncio.Protocol):
    __slots__ = ("transport", "peer", "pipe", "eof", "lost", "early", "discard", "data_received",
                 "tcp", "received", "credited", "_write")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.pipe: Pipe | None = None
        self.eof = False
        self.lost = False
        self.early: list[bytes] = []  # data that arrived before the two halves were linked
        self.discard = False  # being closed without a peer: drop what arrives
        self.tcp = False  # a TCP socket on a kernel that counts its bytes (set by connection_made)
        self.received = 0  # bytes read from this side (as of the last refresh on TCP sockets)
        self.credited = 0  # of those, how many the backend's counters hold
        self._write: Callable[[bytes], None] | None = None
        # Instance attribute, not a method: link() swaps it for the peer's transport.write.
        self.data_received: Callable[[bytes], None] = self._hold

    def _hold(self, data: bytes) -> None:
        """data_received until linked (a greeting backend, a chunk before the pause): keep it."""
        if not self.discard:
            self.early.append(data)
            self.received += len(data)

    def _forward_counting(self, data: bytes) -> None:
        """data_received once linked, where the kernel cannot count bytes (not TCP)."""
        self._write(data)  # type: ignore[misc]
        self.received += len(data)

    def link(self, peer: _Side, pipe: Pipe, direct: bool) -> None:
        """Send what this side receives to `peer`; `direct`: straight into its transport.write."""
        self.peer = peer
        self.pipe = pipe
        self._write = peer.transport.write  # type: ignore[union-attr]
        self.data_received = self._write if direct else self._forward_counting
        if not self.lost:
            self.transport.set_protocol(self)  # type: ignore[union-attr]  # uvloop caches data_received

    def refresh(self) -> None:
        """Bring `received` up to date from the kernel's count (TCP sockets only)."""
        if self.tcp and not self.lost and self.transport is not None:
            count = bytes_read(self.transport.get_extra_info("socket"), self.eof)
            if count is not None and count > self.received:
                self.received = count

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if peer is None:
            return True  # not linked yet: Pipe() forwards the EOF
        self.refresh()  # final: the kernel's count holds every byte before the FIN
        self.pipe._credit()  # type: ignore[union-attr]
        if peer.lost:
            return False
        if peer.eof:  # both directions finished: close (buffered data is flushed first)
            peer.transport.close()  # type: ignore[union-attr]
            return False
        try:
            peer.transport.write_eof()  # type: ignore[union-attr]
        except (OSError, RuntimeError):
            pass
        return True  # keep our transport open: the other direction still flows

    def pause_writing(self) -> None:
        peer = self.peer
        if peer is not None and not peer.lost:
            peer.transport.pause_reading()  # type: ignore[union-attr]

    def resume_writing(self) -> None:
        peer = self.peer
        if peer is not None and not peer.lost and not peer.eof:
            peer.transport.resume_reading()  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        pipe = self.pipe
        if pipe is not None:
            self.refresh()  # the socket is still open here, on both loops
            pipe._credit()
        self.lost = True
        peer = self.peer
        if peer is not None and not peer.lost:
            if exc is not None:
                reset(peer.transport)
            else:
                peer.transport.close()  # type: ignore[union-attr]
        if self.pipe is not None:
            self.pipe._side_lost()


class ClientSide(_Side):
    """The accepted connection. Reading is paused until an upstream is linked.

    ``on_accept(side)`` runs from ``connection_made``; it must eventually link the side into a
    :class:`Pipe`, or :meth:`close` / :meth:`refuse` it.
    """

    __slots__ = ("on_accept", "backend")

    def __init__(self, on_accept: Callable[[ClientSide], None]) -> None:
        super().__init__()
        self.on_accept = on_accept
        self.backend: Backend | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.pause_reading()  # type: ignore[attr-defined]
        self.tcp = tune_socket(transport)
        self.on_accept(self)

    def close(self, linger: float = 1.0) -> None:
        """End an unlinked client cleanly (there is no backend to give it).

        Sends FIN at once, then reads and drops whatever the client sent for up to `linger`
        seconds before closing: closing a socket with unread data would make the kernel answer
        with a reset instead of a clean end of stream.
        """
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.discard = True
        self.early.clear()
        try:
            transport.write_eof()
        except (OSError, RuntimeError):
            transport.close()
            return
        transport.resume_reading()
        asyncio.get_running_loop().call_later(linger, transport.close)

    def eof_received(self) -> bool:
        if self.discard:
            return False  # the client finished too: close now
        return super().eof_received()

    def refuse(self) -> None:
        """Refuse an unlinked client with a reset (connection limit)."""
        reset(self.transport)


class UpstreamSide(_Side):
    """The connection to the backend."""

    __slots__ = ("backend",)

    def __init__(self, backend: Backend) -> None:
        super().__init__()
        self.backend = backend

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.tcp = tune_socket(transport)


class Pipe:
    """One proxied connection: a client half, an upstream half, and the backend it counts against.

    Construct, register it wherever it is tracked, then call :meth:`start` to link the halves
    and let bytes flow. ``on_close`` runs once, when both halves are gone.
    """

    __slots__ = ("client", "upstream", "backend", "on_close", "done", "seen", "idle_since", "closing")

    def __init__(self, client: ClientSide, upstream: UpstreamSide, backend: Backend,
                 on_close: Callable[[Pipe], None], now: float = 0.0) -> None:
        self.client = client
        self.upstream = upstream
        self.backend = backend
        self.on_close = on_close
        self.done = False
        self.seen: tuple[int, int, int] = (0, 0, 0)  # what idle_for saw at the last sweep
        self.idle_since = now
        self.closing = False  # close() or abort() was called: the sweeps leave it alone

    def start(self) -> None:
        """Link the halves, forward anything that arrived early, and resume the client."""
        client, upstream, backend = self.client, self.upstream, self.backend
        client.backend = backend
        direct = client.tcp and upstream.tcp
        client.link(upstream, self, direct)
        upstream.link(client, self, direct)
        if client.lost:  # the client left while we were connecting: on_close runs via upstream
            if upstream.lost:
                self._side_lost()
            else:
                reset(upstream.transport)
            return
        for src, dst in ((client, upstream), (upstream, client)):
            for chunk in src.early:  # counted in `received` when held
                dst.transport.write(chunk)  # type: ignore[union-attr]
            src.early.clear()
        if upstream.lost:  # the backend already closed: deliver what it said, then close
            client.transport.close()  # type: ignore[union-attr]
            return
        if upstream.eof:
            client.transport.write_eof()  # type: ignore[union-attr]
        client.transport.resume_reading()  # type: ignore[union-attr]

    def sync(self) -> None:
        """Credit the backend with the bytes moved since the last sync (reads the kernel's counts)."""
        self.client.refresh()
        self.upstream.refresh()
        self._credit()

    def _credit(self) -> None:
        client, upstream, backend = self.client, self.upstream, self.backend
        backend.bytes_up += client.received - client.credited
        client.credited = client.received
        backend.bytes_down += upstream.received - upstream.credited
        upstream.credited = upstream.received

    def _side_lost(self) -> None:
        if self.done or not (self.client.lost and self.upstream.lost):
            return
        self.done = True
        self.on_close(self)

    def idle_for(self, now: float) -> float:
        """Seconds since bytes last moved either way (as of the sweeps, which call this).

        Moving means a byte read from either side, or a write buffer that shrank or grew: a slow
        reader being fed from the buffer (its peer paused by backpressure) is not idle.
        """
        self.sync()
        seen = (self.client.received + self.upstream.received, self._buffered(self.client),
                self._buffered(self.upstream))
        if seen != self.seen:
            self.seen = seen
            self.idle_since = now
        return now - self.idle_since

    def stuck(self) -> bool:
        """Whether bytes wait in a write buffer (after idle_for said nothing moved: a peer that stopped reading)."""
        return self._buffered(self.client) > 0 or self._buffered(self.upstream) > 0

    @staticmethod
    def _buffered(side: _Side) -> int:
        """Bytes written to this side and not yet taken by its peer: our buffer plus the kernel's
        unacknowledged send queue (which drains while ours waits for the socket to be writable)."""
        transport = side.transport
        if transport is None or side.lost:
            return 0
        queued = 0
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                queued = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, _INT_ZERO))[0]
            except (OSError, ValueError):  # not TCP (socketpairs in tests) or already closed
                pass
        return transport.get_write_buffer_size() + queued

    def close(self) -> None:
        """End both halves cleanly (FIN after what is buffered): the idle timeout's way out."""
        self.closing = True
        for side in (self.client, self.upstream):
            if side.transport is not None and not side.lost:
                side.transport.close()

    def abort(self) -> None:
        """End both halves with a reset (drain timeout, shutdown, a peer that stopped reading)."""
        self.closing = True
        for side in (self.client, self.upstream):
            if not side.lost:  # a lost side's transport is closed already (and uvloop's has no fd)
                reset(side.transport)

    def describe(self) -> dict[str, Any]:
        peer = self.client.transport.get_extra_info("peername") if self.client.transport else None
        return {"client": str(peer), "backend": self.backend.address}
