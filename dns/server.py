"""The DNS server: a UDP ``DatagramProtocol`` and a TCP server in front of the answer table.

Fast path (no parser): a standard query with one question and at most an EDNS OPT record whose
lower-cased name is in the table gets the prebuilt answer with the query's ID, RD bit and question
bytes copied in. Everything else goes through dnslib (the slow path), which answers the other
names in the domain, forwards names outside it, and turns bad packets into FORMERR / NOTIMP /
REFUSED, or drops them when there is no header to answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import struct
from collections.abc import Sequence

from dnslib import QTYPE, DNSRecord
from prometheus_client import CollectorRegistry

from waypost.dns.answers import AnswerTable
from waypost.dns.batch import BatchSocket, parse_sockaddr
from waypost.dns.config import DnsConfig
from waypost.dns.metrics import DnsCollector, DnsStats, make_registry, stat_key
from waypost.dns.pools import Chase, Prebuilt, Ring
from waypost.dns.recursor import Recursor
from waypost.dns.view import CatalogView
from waypost.dns.wire import (
    AAAA,
    ANY,
    CLASS_IN,
    FORMERR,
    NOTIMP,
    OPT,
    OPT_RR,
    OPT_RR_DO,
    PLAIN_LIMIT,
    REFUSED,
    SERVFAIL,
    TCP_LIMIT,
    UDP_MAX,
    A,
    followed_records,
)

log = logging.getLogger("waypost.dns")

BADVERS = 16
QD1 = b"\x00\x01\x00\x00\x00\x00"  # qdcount 1, ancount 0, nscount 0
AR0, AR1 = b"\x00\x00", b"\x00\x01"
OPT_HEAD = b"\x00\x00\x29"
XFR = (b"\x00\xfb", b"\x00\xfc")  # IXFR, AXFR: refused by the slow path
TCP_IDLE = 10.0
MAX_RECURSIONS = 256  # recursions in flight; beyond that new ones get SERVFAIL at once
_random = random.random


class _Recurse:
    """Marker returned by the slow path: forward this query upstream, or (``chase``) resolve the
    target of choice ``chase[1]`` of a CNAME answer upstream and answer with both."""

    __slots__ = ("question", "edns", "key", "chase")

    def __init__(self, question: bytes, edns: tuple[int, bool] | None, key: bytes,
                 chase: tuple[Chase, int] | None = None) -> None:
        self.question = question
        self.edns = edns
        self.key = key
        self.chase = chase


def _error(data: bytes, rcode: int, question: bytes = b"", edns: tuple[int, bool] | None = None,
           ra: bool = False) -> bytes:
    """A header-only (or header + question) error answer echoing ID, opcode and RD."""
    b2 = 0x80 | (data[2] & 0x79)  # QR, opcode and RD copied
    ext = rcode >> 4
    b3 = (0x80 if ra else 0) | (rcode & 0x0F)
    opt = b""
    if edns is not None:
        opt = b"\x00" + struct.pack("!HHBBHH", OPT, 1232, ext, 0, 0x8000 if edns[1] else 0, 0)
    counts = struct.pack("!HHHH", 1 if question else 0, 0, 0, 1 if opt else 0)
    return data[:2] + bytes((b2, b3)) + counts + question + opt


def _request_edns(record: DNSRecord | None) -> tuple[int, bool] | None:
    """(UDP size, DO) of a parsed query's single OPT record; None without one (or with several)."""
    if record is None:
        return None
    opts = [r for r in record.ar if r.rtype == OPT]
    if len(opts) != 1:
        return None
    return min(max(PLAIN_LIMIT, opts[0].rclass), UDP_MAX), bool(opts[0].ttl & 0x8000)


def _parse(data: bytes) -> DNSRecord | None:
    try:
        return DNSRecord.parse(data)
    except Exception:  # dnslib raises several kinds on garbage
        return None


class DnsServer:
    """Serves one :class:`AnswerTable` kept in step with a :class:`CatalogView`, over UDP and TCP.

    ``start()`` binds both sockets on ``config.listen`` (port 0 picks a free port, see ``port``);
    ``reuse_port`` lets several processes share the port (``--workers``).
    """

    def __init__(self, config: DnsConfig, view: CatalogView, reuse_port: bool = False,
                 batch_udp: bool = True) -> None:
        self.config = config
        self.batch_udp = batch_udp
        self.view = view
        self.reuse_port = reuse_port
        host = config.listen[0]
        ns_address = "127.0.0.1" if host in ("", "0.0.0.0", "::", "localhost") else host
        self.recursor = Recursor(config.recursors, config.recursor_timeout, config.allow_recursion_from)
        self.table = AnswerTable(config, recursion_available=self.recursor.enabled, ns_address=ns_address)
        self.stats = DnsStats()
        self.collector = DnsCollector(self.stats, lambda: self.view.stale, lambda: len(self.view.services),
                                      lambda: len(self.table.names))
        self.registry: CollectorRegistry = make_registry(self.collector)
        self._names = self.table.names  # mutated in place, never rebound
        self._answers = self.stats.answers
        self.port: int = config.listen[1]
        self._udp: asyncio.DatagramTransport | None = None
        self._batch: BatchSocket | None = None
        self._tcp: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self._ra = self.recursor.enabled
        self._trim_warned: set[tuple[bytes, int]] = set()

    # ---- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Build every answer from the view, follow its changes and start listening."""
        for service in list(self.view.everything):
            self._on_change(service)
        self.view.subscribe(self._on_change)
        loop = asyncio.get_running_loop()
        host, port = self.config.listen
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for attempt in range(20):
            udp_sock = self._bind(family, socket.SOCK_DGRAM, host, port)
            bound = udp_sock.getsockname()[1]
            try:
                tcp_sock = self._bind(family, socket.SOCK_STREAM, host, bound)
            except OSError:
                udp_sock.close()
                if port == 0 and attempt < 19:
                    continue  # the TCP side of a random UDP port was taken: pick another
                raise
            break
        self.port = bound
        self._batch = BatchSocket.create(udp_sock) if self.batch_udp else None
        if self._batch is not None:
            loop.add_reader(udp_sock.fileno(), self._batch.drain, self._answer_batched)
        else:
            self._udp, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self), sock=udp_sock)
        self._tcp = await loop.create_server(lambda: _TcpProtocol(self), sock=tcp_sock)
        log.info("dns: serving %s on %s:%d (udp+tcp)%s", self.config.domain, host, self.port,
                 f", recursing via {', '.join(f'{h}:{p}' for h, p in self.config.recursors)}"
                 if self._ra else "")

    def _bind(self, family: int, kind: int, host: str, port: int) -> socket.socket:
        sock = socket.socket(family, kind)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if kind == socket.SOCK_DGRAM:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            sock.bind((host, port))
            if kind == socket.SOCK_STREAM:
                sock.listen(512)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    async def stop(self) -> None:
        """Stop listening and drop in-flight recursions."""
        self.view.unsubscribe(self._on_change)
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._batch is not None:
            asyncio.get_running_loop().remove_reader(self._batch.fd)
            self._batch.sock.close()
            self._batch = None
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), 1.0)
            self._tcp = None
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _on_change(self, service: str) -> None:
        self.table.update_service(service, self.view.services.get(service, ()), self.view.everything.get(service, ()))

    # ---- answering ----------------------------------------------------------------------------

    def fast(self, data: bytes, tcp: bool = False) -> bytes | None:
        """The prebuilt answer for a plain query of a known name, or None for the slow path."""
        size = len(data)
        if size < 17 or data[2] & 0xF8 or data[4:10] != QD1:
            return None
        ar = data[10:12]
        edns = False
        if ar == AR0:
            qend = size  # the question runs to the end: no need to scan the name
        elif ar == AR1:
            # exactly one OPT record with version 0; its options (cookies, ECS…) are ignored
            if data[-11:-8] == OPT_HEAD and data[-2:] == AR0:
                qend = size - 11
            else:
                qend = data.find(b"\x00", 12) + 5
                if qend < 17 or size < qend + 11 or data[qend:qend + 3] != OPT_HEAD or (
                        size != qend + 11 + (data[qend + 9] << 8 | data[qend + 10])):
                    return None
            if data[qend + 6]:
                return None  # EDNS version > 0: BADVERS from the slow path
            edns = True
        else:
            return None
        name = data[12:qend - 4].lower()
        entry = self._names.get(name)
        if entry is None:
            if name[-1:] != b"\x00":
                return None
            entry = self.table.miss(name)  # .addr names, NXDOMAIN in the domain
            if entry is None:
                return None
        tc = data[qend - 4:qend]
        pre = entry.get(tc)
        if pre is None:
            if tc[2:] != CLASS_IN or tc[:2] in XFR:
                return None
            pre = entry[None]
        if tcp:
            if pre.need > TCP_LIMIT:
                return None  # needs cutting to fit one TCP message
        elif edns and (data[qend + 3] << 8 | data[qend + 4]) < pre.need:
            return None  # needs cutting to the client's buffer size
        if pre.custom:
            resp = pre.respond(data[:2], data[12:qend], data[2] & 1,
                               (OPT_RR_DO if data[qend + 7] & 0x80 else OPT_RR) if edns else None, tcp)
            if resp is None:
                return None
            self._answers[tc, pre.rcode] += 1
            return resp
        full = pre.full
        n = len(full)
        if n > 1:
            i = int(_random() * n)
            if pre.fresh is not None:  # a pool of shuffles: turn it over (Prebuilt.pick, inlined)
                pre.left -= 1
                if pre.left <= 0:
                    pre.refresh()
        else:
            i = 0
        rd = data[2] & 1
        if edns:
            v = full[i]
            resp = b"".join((data[:2], v[2 + rd], data[12:qend], v[4],
                             OPT_RR_DO if data[qend + 7] & 0x80 else OPT_RR))
        elif tcp:
            v = full[i]
            resp = b"".join((data[:2], v[rd], data[12:qend], v[4]))
        else:
            v2 = pre.plain[i]
            resp = b"".join((data[:2], v2[rd], data[12:qend], v2[2]))
        self._answers[tc, pre.rcode] += 1
        return resp

    def _answer_batched(self, data: bytes, sockaddr: bytes) -> bytes | None:
        """One datagram from :class:`BatchSocket`: fast path, else slow path with the parsed client."""
        try:
            resp = self.fast(data)
        except Exception:
            return self.internal_error(data, parse_sockaddr(sockaddr)[0])
        if resp is not None:
            return resp
        addr = parse_sockaddr(sockaddr)
        result = self.answer_slow(data, addr[0], False)
        if isinstance(result, _Recurse):
            batch = self._batch
            if batch is not None:
                self.recurse(data, addr[0], False, result, lambda b: batch.sendto(b, addr))
            return None
        return result

    def slow(self, data: bytes, client: str, tcp: bool) -> bytes | _Recurse | None:
        """Answer anything the fast path didn't: parse with dnslib, or an error, or None (drop)."""
        events = self.stats.events
        if len(data) < 12 or data[2] & 0x80:
            events["dropped"] += 1  # no header to answer, or a response (never answer those)
            return None
        record = _parse(data)
        request_edns = _request_edns(record)  # echoed in errors too (RFC 6891 7)
        opcode = (data[2] >> 3) & 0x0F
        if opcode != 0:
            events["notimp"] += 1
            self.stats.answers[(b"", NOTIMP)] += 1
            return _error(data, NOTIMP, edns=request_edns, ra=self._ra)
        if record is None:
            return self._formerr(data)
        if len(record.questions) != 1:
            return self._formerr(data, request_edns)
        opts = [r for r in record.ar if r.rtype == OPT]
        if len(opts) > 1:
            return self._formerr(data)  # which OPT to answer to is the error itself
        q = record.questions[0]
        try:
            labels = [bytes(lbl) for lbl in q.qname.label]
            name = b"".join(bytes((len(lbl),)) + lbl for lbl in labels) + b"\x00"
            question = name + struct.pack("!HH", q.qtype, q.qclass)
        except Exception:
            return self._formerr(data, request_edns)
        if len(name) > 255 or any(len(lbl) > 63 or not lbl for lbl in labels):
            return self._formerr(data, request_edns)
        edns: tuple[int, bool] | None = None
        if opts:
            opt = opts[0]
            if (opt.ttl >> 16) & 0xFF:
                events["badvers"] += 1
                self.stats.answers[(stat_key(q.qtype), BADVERS)] += 1
                return _error(data, BADVERS, question, (PLAIN_LIMIT, False), ra=self._ra)
            edns = request_edns
        key = stat_key(q.qtype)
        if q.qclass not in (1, 255):
            self.stats.answers[(key, REFUSED)] += 1
            return _error(data, REFUSED, question, edns, ra=self._ra)
        if q.qtype in (251, 252):  # IXFR, AXFR: no zone transfers
            self.stats.answers[(key, REFUSED)] += 1
            return _error(data, REFUSED, question, edns, ra=self._ra)
        pre = self.table.lookup(name.lower(), q.qtype)
        if pre is None:
            return _Recurse(question, edns, key)
        if pre.chase:
            return _Recurse(question, edns, key, (pre, pre.pick()))  # type: ignore[arg-type]
        self.stats.answers[(key, pre.rcode)] += 1
        resp = self._assemble(data, pre, question, edns, tcp)
        if resp[2] & 0x02:
            events["truncated"] += 1
        return resp

    def _assemble(self, data: bytes, pre: Prebuilt | Ring, question: bytes, edns: tuple[int, bool] | None,
                  tcp: bool) -> bytes:
        """Response for a query whose question and EDNS were parsed by the slow path."""
        rd = data[2] & 1
        choice = pre.pick()
        opt = b"" if edns is None else OPT_RR_DO if edns[1] else OPT_RR
        if tcp and pre.need > TCP_LIMIT:
            cut = pre.cut_at(choice, len(question), TCP_LIMIT, opt, tc=False)
            self._note_tcp_trim(pre.answer_count(choice), cut, question)
            return data[:2] + cut[rd] + question + cut[2]
        if edns is None:
            if tcp:
                v = pre.full_at(choice)
                return data[:2] + v[rd] + question + v[4]
            v2 = pre.plain_at(choice)
            return data[:2] + v2[rd] + question + v2[2]
        if tcp or edns[0] >= pre.need:
            v = pre.full_at(choice)
            return data[:2] + v[2 + rd] + question + v[4] + opt
        cut = pre.cut_at(choice, len(question), edns[0], opt)
        return data[:2] + cut[rd] + question + cut[2]

    def _note_tcp_trim(self, total: int, cut: tuple[bytes, bytes, bytes], question: bytes) -> None:
        """Log (once per name and type) an answer trimmed to fit a TCP message.

        No TC bit: over TCP the client has nowhere else to ask, and several resolvers (dnspython,
        Go before 1.23) discard a TCP answer with TC; Consul trims the same way.
        """
        self.stats.events["tcp_trimmed"] += 1
        kept = cut[0][4] << 8 | cut[0][5]
        if kept == total:
            return  # only glue in the additional section was left out (RFC 2181 9)
        qtype = question[-4] << 8 | question[-3]
        key = (question[:-4].lower(), qtype)
        if key in self._trim_warned:
            return
        if len(self._trim_warned) > 4096:
            self._trim_warned.clear()
        self._trim_warned.add(key)
        hint = " (--a-record-limit caps A/AAAA answers)" if qtype in (A, AAAA, ANY) else ""
        log.warning("dns tcp: the type %s answer for %s has %d records, more than one DNS message holds "
                    "(65,535 bytes); each answer carries a random %d of them%s", QTYPE.get(qtype, qtype),
                    _text_name(question[:-4]), total, kept, hint)

    def _formerr(self, data: bytes, edns: tuple[int, bool] | None = None) -> bytes:
        self.stats.events["formerr"] += 1
        self.stats.answers[(b"", FORMERR)] += 1
        return _error(data, FORMERR, edns=edns, ra=self._ra)

    def answer_now(self, data: bytes, client: str, tcp: bool) -> bytes | _Recurse | None:
        """Fast path, then slow path; never raises (an internal error answers SERVFAIL)."""
        try:
            resp = self.fast(data, tcp)
            return resp if resp is not None else self.slow(data, client, tcp)
        except Exception:
            return self.internal_error(data, client)

    def answer_slow(self, data: bytes, client: str, tcp: bool) -> bytes | _Recurse | None:
        """The slow path for a query the fast path declined; never raises (internal error: SERVFAIL)."""
        try:
            return self.slow(data, client, tcp)
        except Exception:
            return self.internal_error(data, client)

    def internal_error(self, data: bytes, client: str) -> bytes | None:
        """Log the exception being handled; SERVFAIL for a query, nothing for anything else."""
        log.exception("dns: failed to answer a %d-byte query from %s", len(data), client)
        self.stats.events["internal_error"] += 1
        if len(data) >= 12 and not data[2] & 0x80:
            return _error(data, SERVFAIL, ra=self._ra)
        return None

    def recurse(self, data: bytes, client: str, tcp: bool, job: _Recurse, send) -> None:  # type: ignore[no-untyped-def]
        """Answer a name outside the domain: forward it (allowed clients) or REFUSED. A CNAME to
        chase gets its target's addresses for allowed clients, and is answered alone otherwise."""
        if job.chase is not None:
            self._chase_or_not(data, client, tcp, job, send)
            return
        if not self.recursor.enabled or not self.recursor.allowed(client):
            self.stats.events["recursion_refused"] += 1
            self.stats.answers[(job.key, REFUSED)] += 1
            send(_error(data, REFUSED, job.question, job.edns, ra=False))
            return
        if len(self._tasks) >= MAX_RECURSIONS:
            self.stats.events["recursion_overload"] += 1
            send(_error(data, SERVFAIL, job.question, job.edns, ra=True))
            return
        task = asyncio.get_running_loop().create_task(self._recurse(data, tcp, job, send))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _chase_or_not(self, data: bytes, client: str, tcp: bool, job: _Recurse, send) -> None:  # type: ignore[no-untyped-def]
        if not self.recursor.allowed(client) or len(self._tasks) >= MAX_RECURSIONS:
            send(self._cname_answer(data, tcp, job, ()))
            return
        task = asyncio.get_running_loop().create_task(self._chase(data, tcp, job, send))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _chase(self, data: bytes, tcp: bool, job: _Recurse, send) -> None:  # type: ignore[no-untyped-def]
        """Ask the recursors for the CNAME target's addresses (A for A and ANY queries, as Consul)."""
        pre, i = job.chase  # type: ignore[misc]
        qtype = AAAA if job.question[-4:-2] == b"\x00\x1c" else A
        query = struct.pack("!HHHHHH", random.getrandbits(16), 0x0100, 1, 0, 0, 0) + pre.target(i) \
            + struct.pack("!HH", qtype, 1)
        answer = await self.recursor.forward(query, tcp)
        more = followed_records(answer, pre.ttl(i)) if answer is not None else []
        self.stats.events["cname_chased" if more else "cname_chase_failed"] += 1
        with contextlib.suppress(Exception):
            send(self._cname_answer(data, tcp, job, more))

    def _cname_answer(self, data: bytes, tcp: bool, job: _Recurse, more: Sequence[bytes]) -> bytes:
        """The CNAME answer of ``job`` with ``more`` records after it, cut to the client's size."""
        pre, i = job.chase  # type: ignore[misc]
        edns = job.edns
        opt = b"" if edns is None else OPT_RR_DO if edns[1] else OPT_RR
        limit = TCP_LIMIT if tcp else edns[0] if edns else PLAIN_LIMIT
        cut = pre.extended(i, more, len(job.question), limit, opt, tc=not tcp)
        self.stats.answers[(job.key, pre.rcode)] += 1
        return data[:2] + cut[data[2] & 1] + job.question + cut[2]

    async def _recurse(self, data: bytes, tcp: bool, job: _Recurse, send) -> None:  # type: ignore[no-untyped-def]
        answer = await self.recursor.forward(data, tcp)
        if answer is None:  # every upstream failed: our own SERVFAIL, never an upstream's REFUSED
            self.stats.events["recursion_failed"] += 1
            self.stats.answers[(job.key, SERVFAIL)] += 1
            answer = _error(data, SERVFAIL, job.question, job.edns, ra=True)
        else:
            self.stats.events["recursion_forwarded"] += 1
            self.stats.answers[(job.key, answer[3] & 0x0F)] += 1
        with contextlib.suppress(Exception):
            send(answer)


def _text_name(wire: bytes) -> str:
    """A wire name as text, for log messages."""
    labels, pos = [], 0
    while pos < len(wire) and wire[pos]:
        labels.append(wire[pos + 1:pos + 1 + wire[pos]].decode("ascii", "replace"))
        pos += wire[pos] + 1
    return ".".join(labels) + "."


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.fast = server.fast
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        try:
            resp = self.fast(data)
        except Exception:
            resp = self.server.internal_error(data, addr[0])
            if resp is not None:
                self.transport.sendto(resp, addr)  # type: ignore[union-attr]
            return
        if resp is not None:
            self.transport.sendto(resp, addr)  # type: ignore[union-attr]
            return
        result = self.server.answer_slow(data, addr[0], False)
        if result is None:
            return
        if isinstance(result, _Recurse):
            transport = self.transport
            self.server.recurse(data, addr[0], False, result, lambda b: transport.sendto(b, addr))
        else:
            self.transport.sendto(result, addr)  # type: ignore[union-attr]

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a client that went away: nothing to do
        log.debug("dns udp: %r", exc)


class _TcpProtocol(asyncio.Protocol):
    """Length-prefixed queries, pipelined; answers may come back out of order (RFC 7766)."""

    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.client = ""
        self._idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.client = peer[0] if peer else ""
        self._arm()

    def _arm(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._idle = asyncio.get_running_loop().call_later(TCP_IDLE, self._timeout)

    def _timeout(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self.transport = None

    def _send(self, answer: bytes) -> None:
        if len(answer) > TCP_LIMIT:  # answers are cut to fit before this; never leave the client waiting
            log.error("dns tcp: a %d-byte answer does not fit a TCP message; sent SERVFAIL instead", len(answer))
            answer = _error(answer, SERVFAIL)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(struct.pack("!H", len(answer)) + answer)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._arm()
        while len(self.buffer) >= 2:
            length = self.buffer[0] << 8 | self.buffer[1]
            if len(self.buffer) < 2 + length:
                break
            message = bytes(self.buffer[2:2 + length])
            del self.buffer[:2 + length]
            result = self.server.answer_now(message, self.client, True)
            if result is None:
                if length < 12:  # no header: nothing sensible can follow on this stream
                    self._timeout()
                    return
                continue
            if isinstance(result, _Recurse):
                self.server.recurse(message, self.client, True, result, self._send)
            else:
                self._send(result)
