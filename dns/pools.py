"""Prebuilt answers: one (name, type) answer's records in shuffled orderings, pooled and turned over.

A prebuilt answer is everything after the question, plus the header flags and counts, for
several shuffled orderings of its records. Answer owners are compression pointers to the
question at offset 12, so a response is simply::

    query ID + head (flags with RD copied, counts) + the question bytes as asked + body [+ OPT]

which keeps the question's case (0x20 randomisation) without re-encoding anything.

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

import itertools
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from waypost.dns.wire import (
    NOERROR,
    OPT_RR,
    OVERSIZE,
    PLAIN_LIMIT,
    UDP_MAX,
    Cut,
    Full,
    Sections,
    _cut,
    _full,
    _head,
)

ALL_ORDERINGS_UP_TO = 4  # record sets this small get every ordering prebuilt (at most 24)
POOL_MAX = 32  # orderings a pool grows to as it is used
POOL_BYTES = 1 << 20  # ... or fewer, so that one pool holds about this many bytes at most
REFRESH_EVERY = 16  # queries between two fresh shuffles of a pool (more for big record sets)
_random = random.random


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
