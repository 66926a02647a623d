"""Prebuilt wire-format answers, rebuilt when the catalog view changes (never on the query path).

Every name DNS serves maps (lower-cased, in wire form) to a dict from the query's 4 type+class
bytes to a :class:`Prebuilt` (or :class:`Ring`). A prebuilt answer is everything after the question, plus the header
flags and counts, for several shuffled orderings of its records. Answer owners are compression
pointers to the question at offset 12, so a response is simply::

    query ID + head (flags with RD copied, counts) + the question bytes as asked + body [+ OPT]

which keeps the question's case (0x20 randomisation) without re-encoding anything.
Record data is encoded here with ``struct`` rather than dnslib: dnslib compresses names inside
rdata against its own buffer, which is only correct for a whole message it packs itself (dnslib
only parses the upstream answers that complete a CNAME, :func:`followed_records`).

Shuffling (Consul shuffles every answer): a record set of up to 4 records has every ordering
prebuilt (4! = 24), so picking one at random per query *is* a fresh shuffle. A larger set keeps a
pool of random orderings that turns over as it is used (one is replaced by a fresh shuffle every
few queries), and its A/AAAA answers are a :class:`Ring`: a window of consecutive records, at a
random start, in a random pooled ordering, which is one bytes slice since those records all have
the same size. Every answer is then a uniformly random ordering (under ``--a-record-limit`` or a
size cut, a uniformly random subset), and an A/AAAA answer's first record is drawn afresh for each
query, so every instance is the first address about equally often even over a few hundred queries.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import logging
import random
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from dnslib import DNSRecord

from waypost.catalog import Instance
from waypost.dns.config import LABEL_RE, DnsConfig

log = logging.getLogger("waypost.dns.answers")

A, NS, CNAME, SOA, PTR, TXT, AAAA, SRV, OPT, ANY = 1, 2, 5, 6, 12, 16, 28, 33, 41, 255
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
CLASS_IN = b"\x00\x01"
UDP_PAYLOAD = 1232  # what we advertise in our OPT record (DNS flag day 2020 size)
PLAIN_LIMIT = 512
TCP_LIMIT = 0xFFFF  # a DNS message over TCP has a 16-bit length prefix (RFC 1035 4.2.2)
UDP_MAX = 65507  # the largest UDP payload over IPv4
OVERSIZE = TCP_LIMIT + 1  # ``need`` of answers too big for one datagram: never sent whole by the fast path
OPT_RR = b"\x00" + struct.pack("!HHBBHH", OPT, UDP_PAYLOAD, 0, 0, 0, 0)
OPT_RR_DO = b"\x00" + struct.pack("!HHBBHH", OPT, UDP_PAYLOAD, 0, 0, 0x8000, 0)
QPTR = b"\xc0\x0c"  # the question's name, always at offset 12
ALL_ORDERINGS_UP_TO = 4  # record sets this small get every ordering prebuilt (at most 24)
POOL_MAX = 32  # orderings a pool grows to as it is used
POOL_BYTES = 1 << 20  # ... or fewer, so that one pool holds about this many bytes at most
REFRESH_EVERY = 16  # queries between two fresh shuffles of a pool (more for big record sets)

Sections = tuple[tuple[bytes, ...], tuple[bytes, ...], tuple[bytes, ...]]  # answer, authority, additional
Full = tuple[bytes, bytes, bytes, bytes, bytes]
Cut = tuple[bytes, bytes, bytes]
_random = random.random


def tc_key(qtype: int) -> bytes:
    """The 4 bytes after a question's name: type, class IN."""
    return struct.pack("!H", qtype) + CLASS_IN


def encode_name(name: str) -> bytes:
    """A lower-case domain name in uncompressed wire form (``a.b`` → ``\\x01a\\x01b\\x00``)."""
    out = bytearray()
    for label in name.strip(".").lower().split("."):
        if label:
            raw = label.encode("ascii")
            if len(raw) > 63:
                raise ValueError(f"label {label!r} is longer than 63 bytes")
            out.append(len(raw))
            out += raw
    out.append(0)
    if len(out) > 255:
        raise ValueError(f"name {name!r} is longer than 255 bytes")
    return bytes(out)


def try_encode(name: str) -> bytes | None:
    """:func:`encode_name`, or None for a name DNS can't carry (too long, not ASCII)."""
    try:
        return encode_name(name)
    except ValueError:  # UnicodeError is a ValueError too
        return None


def rr(owner: bytes, rtype: int, ttl: int, rdata: bytes) -> bytes:
    """One resource record in wire form (class IN)."""
    return owner + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata


def addr_rr(owner: bytes, address: str, ttl: int) -> bytes | None:
    """An A or AAAA record for an IP address (None for anything else)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    return rr(owner, A if ip.version == 4 else AAAA, ttl, ip.packed)


def ip_version(address: str) -> int:
    try:
        return ipaddress.ip_address(address).version
    except ValueError:
        return 0


def hex_addr(address: str) -> str | None:
    """Consul's ``<hex>.addr`` label for an IP: 8 hex digits for IPv4, 32 for IPv6."""
    try:
        return ipaddress.ip_address(address).packed.hex()
    except ValueError:
        return None


def reverse_name(address: str) -> str | None:
    try:
        return ipaddress.ip_address(address).reverse_pointer
    except ValueError:
        return None


def valid_label(label: str) -> bool:
    return bool(LABEL_RE.match(label))


@functools.lru_cache(maxsize=4096)
def _head(flags: int, rcode: int, rd: int, counts: tuple[int, int, int], tc: bool = False) -> bytes:
    b2 = 0x80 | (flags & 0x04) | (0x02 if tc else 0) | rd
    b3 = (flags & 0x80) | rcode
    return bytes((b2, b3)) + struct.pack("!HHHH", 1, *counts)


def _leading(records: Sequence[bytes], room: int) -> tuple[bytes, ...]:
    """The leading records that fit in ``room`` bytes."""
    used = 0
    for i, record in enumerate(records):
        used += len(record)
        if used > room:
            return tuple(records[:i])
    return tuple(records)


def _cut(sections: Sections, flags: int, rcode: int, qlen: int, limit: int, opt: bytes,
         tc: bool = True) -> Cut:
    """(head RD=0, head RD=1, body + opt) cut to ``limit`` bytes. Additional records go first (no TC:
    RFC 2181 9), then answers; TC is set (when ``tc``) only when an answer record was left out."""
    an, ns, ar = sections
    room = limit - 12 - qlen - len(opt)
    extra = 1 if opt else 0
    used = sum(map(len, an)) + sum(map(len, ns))
    if used <= room:
        kept_ar = _leading(ar, room - used)
        counts, body, trimmed = (len(an), len(ns), len(kept_ar) + extra), b"".join((*an, *ns, *kept_ar)), False
    else:
        kept = _leading(an, room)
        counts, body, trimmed = (len(kept), 0, extra), b"".join(kept), True
    flag = tc and trimmed
    return (_head(flags, rcode, 0, counts, flag), _head(flags, rcode, 1, counts, flag), body + opt)


def random_order(items: Sequence) -> list:
    """``items`` in a uniformly random order (sorting by random keys: twice as fast as random.sample)."""
    return sorted(items, key=_random_key)


def _random_key(_: object) -> float:
    return _random()


def _turn_over(pool: Any, held: int, size: int) -> None:
    """Add one fresh shuffle to `pool` (holding `held` orderings of `size` bytes), or once it holds
    as many as :func:`_pool_cap` allows, replace its oldest one."""
    cap = _pool_cap(size)
    if held < cap:
        pool.add(pool.fresh())
    else:
        pool.slot %= cap
        pool.add(pool.fresh(), at=pool.slot)
        pool.slot += 1


def _pool_cap(answer_bytes: int) -> int:
    """How many orderings a pool of answers of this size grows to."""
    return min(POOL_MAX, max(2, POOL_BYTES // max(1, answer_bytes)))


def _refresh_every(records: int) -> int:
    """Queries between two fresh shuffles of ``records`` records: a shuffle costs up to ~0.5 µs a
    record, so this keeps its share of each query's time under ~2 µs."""
    return max(REFRESH_EVERY, records // 4)


def _full(sections: Sections, flags: int, rcode: int) -> Full:
    """(head RD=0, head RD=1, EDNS head RD=0, EDNS head RD=1, body) of the whole answer."""
    an, ns, ar = sections
    counts = (len(an), len(ns), len(ar))
    ecounts = (len(an), len(ns), len(ar) + 1)
    return (_head(flags, rcode, 0, counts), _head(flags, rcode, 1, counts),
            _head(flags, rcode, 0, ecounts), _head(flags, rcode, 1, ecounts), b"".join((*an, *ns, *ar)))


@dataclass(slots=True, eq=False)
class Answers:
    """The record sections of one (name, type) answer in one or more orderings.

    ``fresh`` makes another random ordering when there are too many to prebuild them all; the
    prebuilt answers then keep a pool that turns over as it is used.
    """

    orderings: list[Sections]
    fresh: Callable[[], Sections] | None = None
    chase: bool = False  # CNAMEs to external names: resolve their targets when recursion is available
    _built: dict[int, list[Full]] = field(default_factory=dict)

    def prebuild(self, qname_len: int, ra: bool) -> Prebuilt:
        """A :class:`Prebuilt` (NOERROR, authoritative) for a question name of ``qname_len`` wire bytes."""
        return prebuild(qname_len, self, ra=ra, kind=Chase if self.chase and ra else Prebuilt)

    def built(self, flags: int, rcode: int) -> list[Full]:
        """Each ordering's :func:`_full` (shared by every name answering with these records)."""
        key = flags << 8 | rcode
        out = self._built.get(key)
        if out is None:
            out = self._built[key] = [_full(s, flags, rcode) for s in self.orderings]
        return out


def fixed(an: Iterable[bytes], ns: Iterable[bytes] = (), ar: Iterable[bytes] = ()) -> Answers:
    """Answers with a single ordering."""
    return Answers([(tuple(an), tuple(ns), tuple(ar))])


@dataclass(slots=True, eq=False)
class Prebuilt:
    """One (name, type) answer in several orderings, picked at random per query.

    ``plain[i]`` = (head with RD=0, head with RD=1, body) already cut to 512 bytes for clients
    without EDNS; ``full[i]`` = (head RD=0, head RD=1, EDNS head RD=0, EDNS head RD=1, body) for
    TCP and EDNS. ``need`` is the largest EDNS response size, to compare with the client's buffer
    (:data:`OVERSIZE` when the answer can't go whole in one datagram or TCP message).
    ``sections[i]`` keeps record boundaries for cutting to other sizes. With ``fresh`` set the
    orderings are a pool: :meth:`refresh` adds or replaces one every ``every`` picks.
    """

    custom: ClassVar[bool] = False  # True: the fast path answers through respond() instead
    chase: ClassVar[bool] = False  # True: a CNAME whose target the server resolves upstream
    rcode: int
    flags: int
    qlen: int
    plain: list[Cut]
    full: list[Full]
    sections: list[Sections]
    need: int = 0
    fresh: Callable[[], Sections] | None = None
    every: int = REFRESH_EVERY
    left: int = REFRESH_EVERY
    slot: int = 0

    def add(self, sections: Sections, full: Full | None = None, at: int | None = None) -> None:
        """Add one ordering (or replace the one at ``at``)."""
        if full is None:
            full = _full(sections, self.flags, self.rcode)
        size = 12 + self.qlen + len(full[4])
        if size <= PLAIN_LIMIT:
            plain = (full[0], full[1], full[4])
        else:
            plain = _cut(sections, self.flags, self.rcode, self.qlen, PLAIN_LIMIT, b"")
        need = size + len(OPT_RR)
        self.need = max(self.need, need if need <= UDP_MAX else OVERSIZE)
        if at is None:
            self.plain.append(plain)
            self.full.append(full)
            self.sections.append(sections)
        else:
            self.plain[at], self.full[at], self.sections[at] = plain, full, sections

    def pick(self) -> int:
        """A random ordering's index (the fast path inlines the same steps)."""
        n = len(self.full)
        if n == 1:
            return 0
        i = int(_random() * n)
        if self.fresh is not None:
            self.left -= 1
            if self.left <= 0:
                self.refresh()
        return i

    def refresh(self) -> None:
        """Grow the pool by one fresh shuffle, or replace its oldest ordering once it is full."""
        self.left = self.every
        if self.fresh is not None:
            _turn_over(self, len(self.full), len(self.full[0][4]))

    def truncated(self, i: int, qlen: int, limit: int, opt: bytes, tc: bool = True) -> Cut:
        """(head RD=0, head RD=1, body) of ordering ``i`` cut to fit ``limit`` bytes."""
        return _cut(self.sections[i], self.flags, self.rcode, qlen, limit, opt, tc)

    # the interface the slow path shares with Ring: a choice from pick(), then its answer
    def full_at(self, i: int) -> Full:
        return self.full[i]

    def plain_at(self, i: int) -> Cut:
        return self.plain[i]

    def cut_at(self, i: int, qlen: int, limit: int, opt: bytes, tc: bool = True) -> Cut:
        return self.truncated(i, qlen, limit, opt, tc)

    def answer_count(self, i: int) -> int:
        """Answer records of choice ``i`` before any cut."""
        return len(self.sections[i][0])

    def extended(self, i: int, more: Sequence[bytes], qlen: int, limit: int, opt: bytes, tc: bool = True) -> Cut:
        """Choice ``i`` with ``more`` answer records after its own, cut to fit ``limit`` bytes."""
        an, ns, ar = self.sections[i]
        return _cut((an + tuple(more), ns, ar), self.flags, self.rcode, qlen, limit, opt, tc)


@dataclass(slots=True, eq=False)
class Chase(Prebuilt):
    """A CNAME answer (a service registered with a host name) to complete with the target's
    addresses from the recursors, as Consul does: the fast path leaves it to the slow path."""

    custom: ClassVar[bool] = True
    chase: ClassVar[bool] = True

    def respond(self, qid: bytes, question: bytes, rd: int, opt: bytes | None, tcp: bool) -> None:
        return None

    def target(self, i: int) -> bytes:
        """The wire name choice ``i``'s CNAME points at."""
        return self.sections[i][0][0][12:]

    def ttl(self, i: int) -> int:
        """The TTL of choice ``i``'s CNAME record."""
        return int.from_bytes(self.sections[i][0][0][6:10], "big")


@dataclass(slots=True, eq=False)
class Ring:
    """An answer of more same-size records (A or AAAA) than :data:`ALL_ORDERINGS_UP_TO`.

    Each answer is the ``span`` bytes (``plain_span`` for a 512-byte answer) starting at a random
    record of a random ordering in ``rings``: each ring is an ordering followed by its first records
    again, so any window is one slice. The orderings are a pool turned over as :class:`Prebuilt`'s.
    """

    custom: ClassVar[bool] = True
    chase: ClassVar[bool] = False
    rcode: int
    flags: int
    qlen: int
    size: int  # bytes per record
    count: int  # records per ordering
    take: int  # records per whole answer
    span: int
    plain_span: int
    heads: tuple[bytes, bytes, bytes, bytes]  # RD=0, RD=1, EDNS RD=0, EDNS RD=1 for ``take`` records
    plain_heads: tuple[bytes, bytes]
    need: int
    fresh: Callable[[], bytes]
    rings: list[bytes] = field(default_factory=list)
    every: int = REFRESH_EVERY
    left: int = REFRESH_EVERY
    slot: int = 0

    def add(self, ordering: bytes, at: int | None = None) -> None:
        """Add one ordering (joined records), or replace the one at ``at``."""
        ring = ordering + ordering[:self.span - self.size]
        if at is None:
            self.rings.append(ring)
        else:
            self.rings[at] = ring

    def pick(self) -> tuple[bytes, int]:
        """A random ordering and a random record in it to start from (turning the pool over)."""
        rings = self.rings
        ring = rings[int(_random() * len(rings))]
        start = int(_random() * self.count) * self.size
        self.left -= 1
        if self.left <= 0:
            self.refresh()
        return ring, start

    def refresh(self) -> None:
        """Grow the pool by one fresh shuffle, or replace its oldest ordering once it is full."""
        self.left = self.every
        _turn_over(self, len(self.rings), len(self.rings[0]))

    def respond(self, qid: bytes, question: bytes, rd: int, opt: bytes | None, tcp: bool) -> bytes:
        """The fast path's response: whole for TCP and EDNS (``opt``), else cut to 512 bytes."""
        rings = self.rings  # pick(), inlined: this is the query path
        ring = rings[int(_random() * len(rings))]
        start = int(_random() * self.count) * self.size
        self.left -= 1
        if self.left <= 0:
            self.refresh()
        if opt is not None:
            return b"".join((qid, self.heads[2 + rd], question, ring[start:start + self.span], opt))
        if tcp:
            return b"".join((qid, self.heads[rd], question, ring[start:start + self.span]))
        return b"".join((qid, self.plain_heads[rd], question, ring[start:start + self.plain_span]))

    def full_at(self, choice: tuple[bytes, int]) -> Full:
        ring, start = choice
        return (*self.heads, ring[start:start + self.span])  # type: ignore[return-value]

    def plain_at(self, choice: tuple[bytes, int]) -> Cut:
        ring, start = choice
        return (*self.plain_heads, ring[start:start + self.plain_span])  # type: ignore[return-value]

    def cut_at(self, choice: tuple[bytes, int], qlen: int, limit: int, opt: bytes, tc: bool = True) -> Cut:
        """The leading records of this choice's window that fit ``limit`` bytes (TC when cut, if ``tc``)."""
        ring, start = choice
        fit = min(self.take, max(0, (limit - 12 - qlen - len(opt)) // self.size))
        counts = (fit, 0, 1 if opt else 0)
        flag = tc and fit < self.take
        body = ring[start:start + fit * self.size]
        return (_head(self.flags, self.rcode, 0, counts, flag), _head(self.flags, self.rcode, 1, counts, flag),
                body + opt)

    def answer_count(self, choice: tuple[bytes, int]) -> int:
        return self.take


@dataclass(slots=True, eq=False)
class RingAnswers:
    """The records of a :class:`Ring` answer: ``records`` (all the same size), at most ``take`` per answer."""

    records: list[bytes]
    take: int
    pool: int
    _orderings: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._orderings = [self.fresh() for _ in range(max(2, self.pool))]

    def fresh(self) -> bytes:
        """The records joined in a new random order."""
        return b"".join(random_order(self.records))

    def prebuild(self, qname_len: int, ra: bool) -> Ring:
        """A :class:`Ring` for a question name of ``qname_len`` wire bytes."""
        flags = 0x04 | (0x80 if ra else 0)
        qlen = qname_len + 4
        size = len(self.records[0])
        plain_take = min(self.take, (PLAIN_LIMIT - 12 - qlen) // size)
        counts, ecounts, pcounts = (self.take, 0, 0), (self.take, 0, 1), (plain_take, 0, 0)
        tc = plain_take < self.take
        need = 12 + qlen + self.take * size + len(OPT_RR)
        ring = Ring(NOERROR, flags, qlen, size, len(self.records), self.take, self.take * size, plain_take * size,
                    (_head(flags, NOERROR, 0, counts), _head(flags, NOERROR, 1, counts),
                     _head(flags, NOERROR, 0, ecounts), _head(flags, NOERROR, 1, ecounts)),
                    (_head(flags, NOERROR, 0, pcounts, tc), _head(flags, NOERROR, 1, pcounts, tc)),
                    need if need <= UDP_MAX else OVERSIZE, self.fresh)
        ring.every = ring.left = _refresh_every(len(self.records))
        for ordering in self._orderings:
            ring.add(ordering)
        return ring


def prebuild(qname_len: int, answers: Answers, rcode: int = NOERROR, ra: bool = False, aa: bool = True,
             kind: type[Prebuilt] = Prebuilt) -> Prebuilt:
    """A :class:`Prebuilt` (or subclass ``kind``) for a question name of ``qname_len`` wire bytes."""
    flags = (0x04 if aa else 0) | (0x80 if ra else 0)
    pre = kind(rcode, flags, qname_len + 4, [], [], [], fresh=answers.fresh)
    pre.every = pre.left = _refresh_every(len(answers.orderings[0][0]))
    for sections, full in zip(answers.orderings, answers.built(flags, rcode), strict=True):
        pre.add(sections, full)
    return pre


def shuffled(units: Sequence, make: Callable[[Sequence], Sections], pool: int, take: int | None = None) -> Answers:
    """Answers over random orderings of ``units`` (``make`` turns one ordering into sections): every
    ordering when there are at most :data:`ALL_ORDERINGS_UP_TO`, else ``pool`` random ones plus a
    maker of more. ``take`` is how many units ``make`` uses (all when None)."""
    if len(units) <= ALL_ORDERINGS_UP_TO:
        return Answers([make(order) for order in itertools.permutations(units)])
    count = min(len(units), take or len(units))

    def fresh() -> Sections:
        return make(random_order(units)[:count])

    return Answers([fresh() for _ in range(max(2, pool))], fresh)


def addresses(records: list[bytes], take: int | None, pool: int) -> Answers | RingAnswers:
    """A/AAAA answers over ``records`` (all of one type), at most ``take`` per answer."""
    if len(records) <= ALL_ORDERINGS_UP_TO:
        return Answers([(tuple(order[:take]), (), ()) for order in itertools.permutations(records)])
    return RingAnswers(records, min(take or len(records), len(records)), pool)


Typed = dict[int, "Answers | RingAnswers"]
Entry = dict[bytes | None, "Prebuilt | Ring"]


def unique(records: Iterable[bytes | None]) -> list[bytes]:
    """The records in first-seen order, without None and without repeats."""
    return list(dict.fromkeys(r for r in records if r is not None))


def followed_records(answer: bytes, ttl: int) -> list[bytes]:
    """The CNAME, A and AAAA answer records of an upstream's NOERROR answer, re-encoded without
    name compression and with ``ttl`` (Consul gives them the service's TTL)."""
    try:
        message = DNSRecord.parse(answer)
    except Exception:  # dnslib raises several kinds on garbage
        return []
    if message.header.rcode != NOERROR:
        return []
    out: list[bytes] = []
    for found in message.rr:
        owner = try_encode(str(found.rname))
        try:
            if found.rtype in (A, AAAA):
                rdata: bytes | None = ipaddress.ip_address(str(found.rdata)).packed
            elif found.rtype == CNAME:
                rdata = try_encode(str(found.rdata.label))
            else:
                continue
        except (ValueError, AttributeError):
            continue
        if owner is not None and rdata is not None:
            out.append(rr(owner, found.rtype, ttl, rdata))
    return out


@dataclass(frozen=True, slots=True)
class InstanceRecords:
    """What one instance contributes to its service's answers (records owned by the question)."""

    address: bytes | None  # its A or AAAA record (None: the address is not an IP)
    cname: bytes | None  # a CNAME to its address when that is a host name (Consul's external services)
    srv: bytes | None
    glue: bytes | None  # the SRV target's address record, for the additional section


class AnswerTable:
    """All prebuilt answers for one :class:`DnsConfig`, updated one service at a time.

    ``names`` is what the query path reads: ``{name wire (lower-case): {type+class: Prebuilt,
    None: NODATA (NXDOMAIN for the SRV-only RFC 2782 names)}}``. Records shared by several services (nodes, PTRs, ``.addr`` names, empty
    non-terminals) are reference-counted "facts" so a service change only rebuilds what it touched.
    Every name exists as ``<name>.<domain>`` and, in our datacenter, ``<name>.<dc>.<domain>`` and
    ``<name>.<dc>.dc.<domain>``; the two datacenter forms share one prebuilt entry.
    """

    def __init__(self, config: DnsConfig, recursion_available: bool = False, ns_address: str = "127.0.0.1") -> None:
        self.config = config
        self.ra = recursion_available
        self.domain = config.domain
        self.dc = config.datacenter.lower()
        self.domain_wire = encode_name(self.domain)
        self.serial = int(time.time()) & 0xFFFFFFFF
        self.ns_address = ns_address
        self.names: dict[bytes, Entry] = {}
        self._own: dict[str, set[bytes]] = {}  # names each service owns outright
        self._owner: dict[bytes, str] = {}
        self._facts: Counter[tuple] = Counter()
        self._service_facts: dict[str, set[tuple]] = {}
        self._node_addrs: dict[str, set[str]] = {}
        self._ptr_targets: dict[str, set[str]] = {}
        self._derived: set[bytes] = set()
        self._static: set[bytes] = set()
        self._synth: dict[bytes, Entry] = {}
        self._warned: set[str] = set()
        soa_rdata = (
            encode_name(f"ns.{self.domain}") + encode_name(f"hostmaster.{self.domain}")
            + struct.pack("!IIIII", self.serial, 3600, 600, 86400, config.soa_min_ttl)
        )
        self.soa_rdata = soa_rdata
        self.soa_rr = rr(self.domain_wire, SOA, config.soa_min_ttl, soa_rdata)
        # NXDOMAIN's body doesn't depend on the name asked: the SOA owner is written out in full.
        self.nxdomain = self._negative(NXDOMAIN)
        self.nodata = self._negative(NOERROR)
        self._nx_entry: Entry = {None: self.nxdomain}
        self.addr_suffixes = tuple(
            w for w in (try_encode(f"addr.{self.domain}"), try_encode(f"addr.{self.dc}.{self.domain}"),
                        try_encode(f"addr.{self.dc}.dc.{self.domain}")) if w
        )
        self._build_static()

    # ---- building blocks ----------------------------------------------------------------------

    def _negative(self, rcode: int) -> Prebuilt:
        return prebuild(0, fixed((), (self.soa_rr,)), rcode=rcode, ra=self.ra)

    def _entry(self, name: str | int, typed: Typed | None) -> Entry:
        """Prebuilt answers for one name (or its wire length): ``typed`` maps qtype → its answers;
        every other type gets NODATA."""
        qlen = name if isinstance(name, int) else len(encode_name(name))
        entry: Entry = {}
        for qtype, answers in (typed or {}).items():
            if isinstance(answers, RingAnswers) or answers.orderings and answers.orderings[0][0]:
                entry[tc_key(qtype)] = answers.prebuild(qlen, self.ra)
        entry[None] = self.nodata  # small enough to fit 512 bytes whatever the name's length
        return entry

    def _srv_only(self, entry: Entry) -> Entry | None:
        """An entry answering only SRV, with ``entry``'s SRV answer (None when it has none); every
        other type is NXDOMAIN, as in Consul, which reads ``_<svc>._<tag>.<domain>`` as a service
        lookup only for SRV questions (``dispatch`` in its agent/dns.go)."""
        srv = entry.get(tc_key(SRV))
        return None if srv is None else {tc_key(SRV): srv, None: self.nxdomain}

    def _forms(self, base: str) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
        """``base`` in the domain as (name, wire) pairs: ``[<base>.<domain>]`` and its forms in our
        datacenter, ``[<base>.<dc>.<domain>, <base>.<dc>.dc.<domain>]``; names too long are left out."""
        d, dc = self.domain, self.dc
        short = [(n, w) for n in (f"{base}.{d}",) if (w := try_encode(n))]
        in_dc = [(n, w) for n in (f"{base}.{dc}.{d}", f"{base}.{dc}.dc.{d}") if (w := try_encode(n))]
        return short, in_dc

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    def _build_static(self) -> None:
        d, dc = self.domain, self.dc
        ns_rr = rr(QPTR, NS, self.config.node_ttl, encode_name(f"ns.{d}"))
        glue = addr_rr(encode_name(f"ns.{d}"), self.ns_address, self.config.node_ttl)
        apex = {
            SOA: fixed((rr(QPTR, SOA, self.config.soa_min_ttl, self.soa_rdata),)),
            NS: fixed((ns_rr,), (), (glue,) if glue else ()),
        }
        self._put_static(d, apex)
        ns_a = addr_rr(QPTR, self.ns_address, self.config.node_ttl)
        if ns_a is not None:
            qtype = A if ip_version(self.ns_address) == 4 else AAAA
            self._put_static(f"ns.{d}", {qtype: fixed((ns_a,)), ANY: fixed((ns_a,))})
        for ent in (f"{dc}.{d}", f"dc.{d}", f"{dc}.dc.{d}"):
            self._put_static(ent, None)
        for kind in ("service", "node", "addr"):
            for _, wire in itertools.chain(*self._forms(kind)):
                self.names[wire] = self._entry(len(wire), None)
                self._static.add(wire)

    def _put_static(self, name: str, typed: Typed | None) -> None:
        wire = try_encode(name)
        if wire is not None:
            self.names[wire] = self._entry(name, typed)
            self._static.add(wire)

    # ---- services -----------------------------------------------------------------------------

    def update_service(self, service: str, healthy: Sequence[Instance], everything: Sequence[Instance] = ()) -> None:
        """Rebuild the answers of one service (``healthy`` empty → its names go NXDOMAIN)."""
        key = service.lower()
        own: dict[bytes, dict] = {}
        facts: set[tuple] = set()
        if healthy and valid_label(key):
            own = self._service_names(key, healthy, facts)
        elif healthy:
            self._warn_once(f"svc:{service}", "dns: service %r is not a valid DNS label; it gets no DNS names "
                            "(use letters, digits and '-')", service)
        for inst in everything or healthy:
            node = inst.node.lower()
            if node and valid_label(node) and inst.node_address:
                facts.add(("node", node, inst.node_address))
                facts.add(("ptr", inst.node_address, f"{node}.node.{self.dc}.{self.domain}"))
        for old in self._own.pop(service, set()) - set(own):
            if self._owner.get(old) == service:
                del self._owner[old]
                self.names.pop(old, None)
        for wire, entry in own.items():
            self.names[wire] = entry
            self._owner[wire] = service
            self._derived.discard(wire)
        if own:
            self._own[service] = set(own)
        self._apply_facts(service, facts)

    def _service_names(self, svc: str, healthy: Sequence[Instance], facts: set[tuple]) -> dict[bytes, dict]:
        ttl = self.config.ttl_for(svc)
        records = {inst.id: self._instance_records(svc, inst, ttl, facts) for inst in healthy}
        groups: dict[str, list[Instance]] = {"": list(healthy)}
        for inst in healthy:
            for tag in {t.lower() for t in inst.tags}:
                if valid_label(tag):
                    groups.setdefault(tag, []).append(inst)
        names: dict[bytes, dict] = {}
        for tag, members in groups.items():
            typed = self._service_answers([records[m.id] for m in members])
            for base, srv_alias in self._bases(svc, tag):
                self._add_names(names, base, srv_alias, typed, facts)
        return names

    @staticmethod
    def _bases(svc: str, tag: str) -> list[tuple[str, str | None]]:
        """The names (below the domain) of one tag group, each with its SRV-only alias.

        As in Consul: ``_<svc>._tcp`` means every instance and any other ``_<svc>._<tag>`` filters
        on the tag (so ``_<svc>._udp`` is the instances tagged ``udp``); RFC 2782 names also work
        without the ``service`` label, for SRV only (other types: NXDOMAIN, see :meth:`_srv_only`).
        """
        if not tag:
            return [(f"{svc}.service", None), (f"_{svc}._tcp.service", f"_{svc}._tcp")]
        if tag == "tcp":
            return [(f"tcp.{svc}.service", None)]
        return [(f"{tag}.{svc}.service", None), (f"_{svc}._{tag}.service", f"_{svc}._{tag}")]

    def _add_names(self, names: dict[bytes, dict], base: str, srv_alias: str | None,
                   typed: Typed, facts: set[tuple]) -> None:
        """Put ``base``'s entries (and its SRV-only alias's) in ``names``, and note empty non-terminals."""
        alias_forms = self._forms(srv_alias) if srv_alias else ([], [])
        for forms, aliases in zip(self._forms(base), alias_forms, strict=True):
            if not forms:
                continue
            entry = self._entry(max(len(w) for _, w in forms), typed)
            srv_entry = self._srv_only(entry) if aliases else None
            for name, wire in forms:
                names[wire] = entry
                self._note_ent(name, facts)
            for name, wire in aliases if srv_entry else ():
                names[wire] = srv_entry
                self._note_ent(name, facts)

    @staticmethod
    def _note_ent(name: str, facts: set[tuple]) -> None:
        if name.startswith("_"):  # _tag.service.consul, _tag.consul: empty non-terminals
            facts.add(("ent", name.split(".", 1)[1]))

    def _instance_records(self, svc: str, inst: Instance, ttl: int, facts: set[tuple]) -> InstanceRecords:
        address = inst.address or inst.node_address
        record = addr_rr(QPTR, address, ttl)
        cname = None
        if record is not None:  # Consul's PTR target for a service address names the datacenter
            facts.add(("ptr", address, f"{svc}.service.{self.dc}.{self.domain}"))
        elif address and (target := try_encode(address)) is not None and len(target) > 1:
            cname = rr(QPTR, CNAME, ttl, target)
        target_name, target_ttl = self._srv_target(inst, address, ttl, facts)
        target_wire = try_encode(target_name)
        if target_wire is None:
            return InstanceRecords(record, cname, None, None)
        srv = rr(QPTR, SRV, ttl, struct.pack("!HHH", 1, inst.weight, inst.port) + target_wire)
        return InstanceRecords(record, cname, srv, addr_rr(target_wire, address, target_ttl))

    def _srv_target(self, inst: Instance, address: str, ttl: int, facts: set[tuple]) -> tuple[str, int]:
        """Consul's SRV target: the node name when the service uses the node's address, else
        ``<hex>.addr.<dc>.<domain>``; a hostname address is used as the target itself."""
        node = inst.node.lower()
        if node and valid_label(node) and (not inst.address or inst.address == inst.node_address):
            return f"{node}.node.{self.dc}.{self.domain}", self.config.node_ttl
        hexed = hex_addr(address)
        if hexed is None:
            return address, ttl
        facts.add(("addr", hexed, address))
        return f"{hexed}.addr.{self.dc}.{self.domain}", ttl

    def _service_answers(self, members: Sequence[InstanceRecords]) -> Typed:
        """Answers by query type for one group of instances.

        A/AAAA/ANY have one record per distinct address, at most ``a_record_limit`` per answer.
        When a type has no address record but some instance's address is a host name, it is
        answered with a CNAME to one of those names (Consul's external services).
        """
        limit = self.config.a_record_limit or None
        pool = self.config.orderings
        both = unique(m.address for m in members)
        v4 = [r for r in both if r[3] == A]
        v6 = [r for r in both if r[3] == AAAA]
        cnames = unique(m.cname for m in members)
        out: Typed = {}
        for qtype, found in ((A, v4), (AAAA, v6), (ANY, both)):
            if found and qtype == ANY:
                out[qtype] = shuffled(found, lambda order: (tuple(order[:limit]), (), ()), pool, limit)
            elif found:
                out[qtype] = addresses(found, limit, pool)
            elif cnames:
                out[qtype] = Answers([((c,), (), ()) for c in cnames], chase=self._external(cnames))
        if cnames:
            out[CNAME] = Answers([((c,), (), ()) for c in cnames])
        srv = list({m.srv: (m.srv, m.glue) for m in members if m.srv is not None}.values())
        if srv:
            out[SRV] = shuffled(srv, _srv_sections, pool)
        return out

    def _external(self, cnames: Sequence[bytes]) -> bool:
        """Whether these CNAMEs point outside the domain (where the recursors can resolve them)."""
        return not any(self.in_domain(c[12:]) for c in cnames)

    # ---- shared facts: nodes, PTRs, .addr names, empty non-terminals ---------------------------

    def _apply_facts(self, service: str, facts: set[tuple]) -> None:
        old = self._service_facts.pop(service, set())
        if facts:
            self._service_facts[service] = facts
        dirty: set[tuple[str, str]] = set()
        for fact in old - facts:
            self._facts[fact] -= 1
            if self._facts[fact] <= 0:
                del self._facts[fact]
                dirty.add(self._fact_changed(fact, present=False))
        for fact in facts - old:
            self._facts[fact] += 1
            if self._facts[fact] == 1:
                dirty.add(self._fact_changed(fact, present=True))
        for kind, key in dirty:
            self._rebuild_shared(kind, key)

    def _fact_changed(self, fact: tuple, present: bool) -> tuple[str, str]:
        kind = fact[0]
        if kind == "node":
            addrs = self._node_addrs.setdefault(fact[1], set())
            (addrs.add if present else addrs.discard)(fact[2])
            return "node", fact[1]
        if kind == "ptr":
            targets = self._ptr_targets.setdefault(fact[1], set())
            (targets.add if present else targets.discard)(fact[2])
            return "ptr", fact[1]
        if kind == "addr":
            return "addr", fact[1] + "|" + fact[2]
        return "ent", fact[1]

    def _put_derived(self, wire: bytes, entry: Entry | None) -> None:
        """Set (``entry``) or drop (None) a shared name, unless a service or the zone owns it."""
        if wire in self._owner or wire in self._static:
            return
        if entry is not None:
            self.names[wire] = entry
            self._derived.add(wire)
        elif wire in self._derived:
            self._derived.discard(wire)
            self.names.pop(wire, None)

    def _put_derived_forms(self, base: str, typed: Typed | None, present: bool) -> None:
        """:meth:`_put_derived` for every form of ``base`` (see :meth:`_forms`)."""
        for forms in self._forms(base):
            if forms:
                entry = self._entry(max(len(w) for _, w in forms), typed) if present else None
                for _, wire in forms:
                    self._put_derived(wire, entry)

    def _put_derived_name(self, name: str, typed: Typed | None, present: bool) -> None:
        wire = try_encode(name)
        if wire is not None:
            self._put_derived(wire, self._entry(len(wire), typed) if present else None)

    def _rebuild_shared(self, kind: str, key: str) -> None:
        node_ttl = self.config.node_ttl
        if kind == "node":
            addrs = sorted(self._node_addrs.get(key, ()))
            if not addrs:
                self._node_addrs.pop(key, None)
            records = [r for r in (addr_rr(QPTR, a, node_ttl) for a in addrs) if r is not None]
            self._put_derived_forms(f"{key}.node", self._address_answers(records), bool(records))
        elif kind == "ptr":
            targets = sorted(self._ptr_targets.get(key, ()))
            if not targets:
                self._ptr_targets.pop(key, None)
            name = reverse_name(key)
            if name is None:
                return
            records = [rr(QPTR, PTR, node_ttl, encode_name(t)) for t in targets]
            self._put_derived_name(name, {PTR: fixed(records), ANY: fixed(records)}, bool(records))
        elif kind == "addr":
            hexed, address = key.split("|", 1)
            present = ("addr", hexed, address) in self._facts
            typed = self._address_answers([r for r in [addr_rr(QPTR, address, self.config.service_ttl)] if r])
            self._put_derived_forms(f"{hexed}.addr", typed, present)
        else:
            self._put_derived_name(key, None, ("ent", key) in self._facts)

    def _address_answers(self, records: list[bytes]) -> Typed:
        v4 = [r for r in records if r[3] == A]
        v6 = [r for r in records if r[3] == AAAA]
        out: Typed = {ANY: fixed(v4 + v6)}
        pool = self.config.orderings
        if v4:
            out[A] = addresses(v4, None, pool)
        if v6:
            out[AAAA] = addresses(v6, None, pool)
        return out

    # ---- lookups off the fast path --------------------------------------------------------------

    def in_domain(self, wire: bytes) -> bool:
        """Whether a lower-case wire name is the domain or below it."""
        dw = self.domain_wire
        if not wire.endswith(dw):
            return False
        stop = len(wire) - len(dw)
        if stop == 0:
            return True
        # the suffix must start at a label boundary: walk the labels to be sure
        pos = 0
        while pos < stop:
            if wire[pos] > 63:
                return False
            pos += wire[pos] + 1
        return pos == stop

    def miss(self, wire: bytes) -> Entry | None:
        """The entry for a lower-case wire name not in ``names``: a synthesised ``.addr`` answer,
        NXDOMAIN for other names in the domain, None outside it."""
        if not self.in_domain(wire):
            return None
        return self._synth_addr(wire) or self._nx_entry

    def lookup(self, wire: bytes, qtype: int) -> Prebuilt | None:
        """The answer for a lower-case wire name, or None when the name is outside the domain
        (and not a registered address's PTR name)."""
        key = tc_key(qtype)
        entry = self.names.get(wire)
        if entry is None and self.in_domain(wire):
            entry = self._synth_addr(wire)
            if entry is None:
                return self.nxdomain
        if entry is None:
            return None
        return entry.get(key) or entry[None]

    def _synth_addr(self, wire: bytes) -> dict | None:
        """``<hex>.addr[.<dc>[.dc]].<domain>`` for any address, registered or not (cached)."""
        cached = self._synth.get(wire)
        if cached is not None:
            return cached
        for suffix in self.addr_suffixes:
            if wire.endswith(suffix) and wire[0] + 1 + len(suffix) == len(wire):
                label = wire[1 : 1 + wire[0]].decode("ascii", "replace")
                if len(label) not in (8, 32):
                    return None
                try:
                    packed = bytes.fromhex(label)
                    address = str(ipaddress.ip_address(packed))
                except ValueError:
                    return None
                records = [r for r in [addr_rr(QPTR, address, self.config.service_ttl)] if r]
                entry = self._entry(len(wire), self._address_answers(records))
                if len(self._synth) > 4096:
                    self._synth.clear()
                self._synth[wire] = entry
                return entry
        return None

    def service_names(self) -> Iterable[bytes]:
        return self._owner.keys()


def _srv_sections(order: Sequence[tuple[bytes, bytes | None]]) -> Sections:
    """SRV records in this order, with their targets' address records (once each) as glue."""
    return tuple(srv for srv, _ in order), (), tuple(unique(glue for _, glue in order))
