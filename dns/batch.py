"""Batched UDP I/O for the DNS hot path: ``recvmmsg``/``sendmmsg`` through libc (Linux).

Python's socket module has no ``recvmmsg``; under load a datagram-per-syscall loop spends most of
its time entering and leaving the kernel. :class:`BatchSocket` receives up to ``BATCH`` queries
with one call and sends their answers back with one call. It keeps all buffers in preallocated
``bytearray``s and reads and writes the ``struct mmsghdr`` fields through memoryviews, so the
per-datagram work in Python is a slice and a few integer stores — no ctypes object per packet.

``BatchSocket.create()`` returns None where this can't work (not Linux, no libc symbol, unusual
struct layout), and the server falls back to an asyncio ``DatagramProtocol``.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import socket
import struct
import sys
from collections.abc import Callable

from waypost.libc import libc as c_library

log = logging.getLogger("waypost.dns")

BATCH = 64
BUFFER = 4096  # largest query read (EDNS queries are small; bigger ones are garbage anyway)
NAME = 128  # sizeof(struct sockaddr_storage)
MMSGHDR = 64  # sizeof(struct mmsghdr) on LP64: msghdr (56) + msg_len (4) + padding
MSG_DONTWAIT = 0x40

# Offsets inside struct mmsghdr (LP64 Linux), in units of the memoryview's item size.
_Q_NAME, _Q_IOV, _Q_IOVLEN, _Q_CONTROL, _Q_CONTROLLEN = 0, 2, 3, 4, 5  # 8-byte fields
_I_NAMELEN, _I_FLAGS, _I_LEN = 2, 12, 14  # 4-byte fields

_libc: ctypes.CDLL | None = None


def _load_libc() -> ctypes.CDLL | None:
    global _libc
    if _libc is None:
        if not sys.platform.startswith("linux") or ctypes.sizeof(ctypes.c_void_p) != 8:
            return None
        try:
            libc = c_library()
            for fn in (libc.recvmmsg, libc.sendmmsg):
                fn.restype = ctypes.c_int
                fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
        except (OSError, AttributeError):
            return None
        _libc = libc
    return _libc


def _address(buf: bytearray) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


def parse_sockaddr(raw: bytes) -> tuple:
    """A ``struct sockaddr_in``/``sockaddr_in6`` as the (host, port[, flow, scope]) tuple asyncio uses."""
    family = raw[0] | raw[1] << 8
    port = raw[2] << 8 | raw[3]
    if family == socket.AF_INET6:
        flow, = struct.unpack("!I", raw[4:8])
        scope, = struct.unpack("=I", raw[24:28])
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port, flow, scope
    return socket.inet_ntop(socket.AF_INET, raw[4:8]), port


class BatchSocket:
    """One non-blocking UDP socket served in batches: ``drain(answer)`` until the socket is empty.

    ``answer(data, name_bytes)`` returns the reply bytes or None (no reply, or the caller replies
    later itself through :meth:`sendto`).
    """

    def __init__(self, sock: socket.socket, libc: ctypes.CDLL) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self._recvmmsg = libc.recvmmsg
        self._sendmmsg = libc.sendmmsg
        # receive side: BATCH slots of (data buffer, source address, iovec, mmsghdr)
        self._rdata = bytearray(BATCH * BUFFER)
        self._rnames = bytearray(BATCH * NAME)
        self._riov = bytearray(BATCH * 16)
        self._rmsgs = bytearray(BATCH * MMSGHDR)
        # send side: answers are copied into slots; destinations point at the receive side's names
        self._sdata = bytearray(BATCH * BUFFER)
        self._siov = bytearray(BATCH * 16)
        self._smsgs = bytearray(BATCH * MMSGHDR)
        self._rnames_addr = _address(self._rnames)
        self._rmsgs_addr = _address(self._rmsgs)
        self._smsgs_addr = _address(self._smsgs)
        self._rdata_mv = memoryview(self._rdata)
        self._rnames_mv = memoryview(self._rnames)
        self._sdata_mv = memoryview(self._sdata)
        self._ri = memoryview(self._rmsgs).cast("I")
        self._sq = memoryview(self._smsgs).cast("Q")
        self._si = memoryview(self._smsgs).cast("I")
        self._siov_q = memoryview(self._siov).cast("Q")
        rq = memoryview(self._rmsgs).cast("Q")
        riov = memoryview(self._riov).cast("Q")
        rdata, riov_addr = _address(self._rdata), _address(self._riov)
        sdata, siov_addr = _address(self._sdata), _address(self._siov)
        for i in range(BATCH):
            base = i * (MMSGHDR // 8)
            riov[2 * i], riov[2 * i + 1] = rdata + i * BUFFER, BUFFER
            rq[base + _Q_NAME] = self._rnames_addr + i * NAME
            rq[base + _Q_IOV], rq[base + _Q_IOVLEN] = riov_addr + i * 16, 1
            self._ri[i * (MMSGHDR // 4) + _I_NAMELEN] = NAME  # the kernel shrinks it to the real size
            self._siov_q[2 * i] = sdata + i * BUFFER
            self._sq[base + _Q_IOV], self._sq[base + _Q_IOVLEN] = siov_addr + i * 16, 1

    @classmethod
    def create(cls, sock: socket.socket) -> BatchSocket | None:
        """A batch server on ``sock``, or None where recvmmsg/sendmmsg can't be used."""
        libc = _load_libc()
        if libc is None:
            return None
        return cls(sock, libc)

    def sendto(self, data: bytes, addr: tuple) -> None:
        """Send one datagram now (answers that came later, e.g. from a recursor); drop if full."""
        try:
            self.sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            log.debug("dns udp: send buffer full, dropped a %d-byte answer", len(data))
        except OSError as exc:
            log.debug("dns udp: sendto %s: %r", addr, exc)

    def drain(self, answer: Callable[[bytes, bytes], bytes | None], rounds: int = 16) -> None:
        """Receive and answer batches until the socket is empty (or ``rounds`` batches were served)."""
        ri, sq, si, siov = self._ri, self._sq, self._si, self._siov_q
        rdata, rnames, sdata = self._rdata_mv, self._rnames_mv, self._sdata_mv
        stride_i = MMSGHDR // 4
        stride_q = MMSGHDR // 8
        rnames_addr = self._rnames_addr
        for _ in range(rounds):
            got = self._recvmmsg(self.fd, self._rmsgs_addr, BATCH, MSG_DONTWAIT, None)
            if got <= 0:
                if got < 0:
                    err = ctypes.get_errno()
                    if err not in (errno.EAGAIN, errno.EINTR):
                        log.debug("dns udp: recvmmsg: %s", errno.errorcode.get(err, err))
                return
            out = 0
            for i in range(got):
                base_i = i * stride_i
                size = ri[base_i + _I_LEN]
                data = bytes(rdata[i * BUFFER:i * BUFFER + size])
                namelen = ri[base_i + _I_NAMELEN]
                ri[base_i + _I_NAMELEN] = NAME  # re-arm the slot for the next recvmmsg
                source = bytes(rnames[i * NAME:i * NAME + namelen])
                try:
                    resp = answer(data, source)
                except Exception:  # one bad datagram must not cost the rest of the batch
                    log.exception("dns udp: failed to answer a %d-byte datagram", size)
                    continue
                if resp is None:
                    continue
                rlen = len(resp)
                if rlen > BUFFER:
                    self.sendto(resp, parse_sockaddr(source))
                    continue
                sdata[out * BUFFER:out * BUFFER + rlen] = resp
                siov[2 * out + 1] = rlen
                base_q = out * stride_q
                sq[base_q + _Q_NAME] = rnames_addr + i * NAME
                si[out * stride_i + _I_NAMELEN] = namelen
                out += 1
            sent = 0
            while sent < out:
                n = self._sendmmsg(self.fd, self._smsgs_addr + sent * MMSGHDR, out - sent, MSG_DONTWAIT, None)
                if n <= 0:
                    err = ctypes.get_errno() if n < 0 else 0
                    if err == errno.EINTR:
                        continue
                    # EAGAIN (send buffer full) or a per-destination error: skip that one datagram
                    log.debug("dns udp: sendmmsg: %s", errno.errorcode.get(err, err))
                    sent += 1
                    continue
                sent += n
            if got < BATCH:
                return
