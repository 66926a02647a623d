"""Prebuilt wire-format answers, rebuilt when the catalog view changes (never on the query path).

Every name DNS serves maps (lower-cased, in wire form) to a dict from the query's 4 type+class
bytes to a :class:`Prebuilt`. A prebuilt answer is everything after the question, plus the header
flags and counts, for several shuffled orderings of its records. Answer owners are compression
pointers to the question at offset 12, so a response is simply::

    query ID + head (flags with RD copied, counts) + the question bytes as asked + body [+ OPT]

which keeps the question's case (0x20 randomisation) without re-encoding anything.
Record data is encoded here with ``struct`` rather than dnslib: dnslib compresses names inside
rdata against its own buffer, which is only correct for a whole message it packs itself.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import random
import struct
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from waypost.catalog import Instance
from waypost.dns.config import LABEL_RE, DnsConfig

log = logging.getLogger("waypost.dns.answers")

A, NS, CNAME, SOA, PTR, TXT, AAAA, SRV, OPT, ANY = 1, 2, 5, 6, 12, 16, 28, 33, 41, 255
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
CLASS_IN = b"\x00\x01"
UDP_PAYLOAD = 1232  # what we advertise in our OPT record (DNS flag day 2020 size)
PLAIN_LIMIT = 512
OPT_RR = b"\x00" + struct.pack("!HHBBHH", OPT, UDP_PAYLOAD, 0, 0, 0, 0)
OPT_RR_DO = b"\x00" + struct.pack("!HHBBHH", OPT, UDP_PAYLOAD, 0, 0, 0x8000, 0)
QPTR = b"\xc0\x0c"  # the question's name, always at offset 12


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


@dataclass(slots=True)
class Prebuilt:
    """One (name, type) answer in every shuffled ordering.

    ``plain[i]`` = (head with RD=0, head with RD=1, body) already cut to 512 bytes for clients
    without EDNS; ``full[i]`` = (head RD=0, head RD=1, EDNS head RD=0, EDNS head RD=1, body) for
    TCP and EDNS. ``need`` is the largest EDNS response size, to compare with the client's buffer.
    ``sections[i]`` keeps record boundaries for cutting to other sizes.
    """

    rcode: int
    plain: tuple[tuple[bytes, bytes, bytes], ...]
    full: tuple[tuple[bytes, bytes, bytes, bytes, bytes], ...]
    need: int
    sections: tuple[tuple[tuple[bytes, ...], tuple[bytes, ...], tuple[bytes, ...]], ...]
    flags: int

    def truncated(self, i: int, qlen: int, limit: int, opt: bytes) -> tuple[bytes, bytes, bytes]:
        """(head RD=0, head RD=1, body) of ordering ``i`` cut to fit ``limit`` bytes."""
        return _cut(self.sections[i], self.flags, self.rcode, qlen, limit, opt)


def _head(flags: int, rcode: int, rd: int, counts: Sequence[int], tc: bool = False) -> bytes:
    b2 = 0x80 | (flags & 0x04) | (0x02 if tc else 0) | rd
    b3 = (flags & 0x80) | rcode
    return bytes((b2, b3)) + struct.pack("!HHHH", 1, *counts)


def _cut(sections, flags: int, rcode: int, qlen: int, limit: int, opt: bytes) -> tuple[bytes, bytes, bytes]:
    an, ns, ar = sections
    room = limit - 12 - qlen - len(opt)
    extra = 1 if opt else 0
    full = sum(map(len, an)) + sum(map(len, ns)) + sum(map(len, ar))
    if full <= room:
        counts, body, tc = (len(an), len(ns), len(ar) + extra), b"".join((*an, *ns, *ar)), False
    elif sum(map(len, an)) + sum(map(len, ns)) <= room:
        # The additional section is optional: dropping it needs no TC (RFC 2181 9).
        counts, body, tc = (len(an), len(ns), extra), b"".join((*an, *ns)), False
    else:
        kept: list[bytes] = []
        used = 0
        for record in an:
            if used + len(record) > room:
                break
            kept.append(record)
            used += len(record)
        counts, body, tc = (len(kept), 0, extra), b"".join(kept), True
    return (_head(flags, rcode, 0, counts, tc), _head(flags, rcode, 1, counts, tc), body + opt)


def prebuild(
    qname_len: int,
    orderings: Sequence[tuple[Sequence[bytes], Sequence[bytes], Sequence[bytes]]],
    rcode: int = NOERROR,
    ra: bool = False,
    aa: bool = True,
) -> Prebuilt:
    """Assemble a :class:`Prebuilt` from (answer, authority, additional) record lists."""
    flags = (0x04 if aa else 0) | (0x80 if ra else 0)
    qlen = qname_len + 4
    plain, full, sections = [], [], []
    need = 0
    for an, ns, ar in orderings:
        sec = (tuple(an), tuple(ns), tuple(ar))
        sections.append(sec)
        counts = (len(an), len(ns), len(ar))
        ecounts = (len(an), len(ns), len(ar) + 1)
        body = b"".join((*an, *ns, *ar))
        full.append((
            _head(flags, rcode, 0, counts), _head(flags, rcode, 1, counts),
            _head(flags, rcode, 0, ecounts), _head(flags, rcode, 1, ecounts), body,
        ))
        plain.append(_cut(sec, flags, rcode, qlen, PLAIN_LIMIT, b""))
        need = max(need, 12 + qlen + len(body) + len(OPT_RR))
    return Prebuilt(rcode, tuple(plain), tuple(full), need, tuple(sections), flags)


def shuffled_orderings(items: Sequence, count: int) -> list[tuple]:
    """Up to ``count`` different orderings: every permutation when there are few, else shuffles."""
    n = len(items)
    if n <= 1 or count <= 1:
        return [tuple(items)]
    if n <= 4 and count >= 24 or n <= 3:
        perms = list(itertools.permutations(items))
        if len(perms) <= count:
            return perms
    out: list[tuple] = []
    seen: set[tuple[int, ...]] = set()
    indexes = list(range(n))
    for _ in range(count * 4):
        random.shuffle(indexes)
        key = tuple(indexes)
        if key not in seen:
            seen.add(key)
            out.append(tuple(items[i] for i in indexes))
        if len(out) == count:
            break
    return out


class AnswerTable:
    """All prebuilt answers for one :class:`DnsConfig`, updated one service at a time.

    ``names`` is what the query path reads: ``{name wire (lower-case): {type+class: Prebuilt,
    None: NODATA}}``. Records shared by several services (nodes, PTRs, ``.addr`` names, empty
    non-terminals) are reference-counted "facts" so a service change only rebuilds what it touched.
    """

    def __init__(self, config: DnsConfig, recursion_available: bool = False, ns_address: str = "127.0.0.1") -> None:
        self.config = config
        self.ra = recursion_available
        self.domain = config.domain
        self.dc = config.datacenter.lower()
        self.domain_wire = encode_name(self.domain)
        self.serial = int(time.time()) & 0xFFFFFFFF
        self.ns_address = ns_address
        self.names: dict[bytes, dict[bytes | None, Prebuilt]] = {}
        self._own: dict[str, set[bytes]] = {}  # names each service owns outright
        self._owner: dict[bytes, str] = {}
        self._facts: Counter[tuple] = Counter()
        self._service_facts: dict[str, set[tuple]] = {}
        self._node_addrs: dict[str, set[str]] = {}
        self._ptr_targets: dict[str, set[str]] = {}
        self._derived: set[bytes] = set()
        self._static: set[bytes] = set()
        self._synth: dict[bytes, dict[bytes | None, Prebuilt]] = {}
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
        self._nx_entry: dict[bytes | None, Prebuilt] = {None: self.nxdomain}
        self.addr_suffixes = (encode_name(f"addr.{self.domain}"), encode_name(f"addr.{self.dc}.{self.domain}"))
        self._build_static()

    # ---- building blocks ----------------------------------------------------------------------

    def _negative(self, rcode: int) -> Prebuilt:
        return prebuild(0, [((), (self.soa_rr,), ())], rcode=rcode, ra=self.ra)

    def _entry(self, name: str | int, typed: dict[int, list[tuple]] | None) -> dict[bytes | None, Prebuilt]:
        """Prebuilt answers for one name (or its wire length): ``typed`` maps qtype → orderings of
        (answer, authority, additional); every other type gets NODATA."""
        qlen = name if isinstance(name, int) else len(encode_name(name))
        entry: dict[bytes | None, Prebuilt] = {}
        for qtype, orderings in (typed or {}).items():
            if orderings and orderings[0][0]:
                entry[tc_key(qtype)] = prebuild(qlen, orderings, ra=self.ra)
        entry[None] = self.nodata  # small enough to fit 512 bytes whatever the name's length
        return entry

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    def _build_static(self) -> None:
        d, dc = self.domain, self.dc
        ns_rr = rr(QPTR, NS, self.config.node_ttl, encode_name(f"ns.{d}"))
        glue = addr_rr(encode_name(f"ns.{d}"), self.ns_address, self.config.node_ttl)
        apex = {
            SOA: [((rr(QPTR, SOA, self.config.soa_min_ttl, self.soa_rdata),), (), ())],
            NS: [((ns_rr,), (), (glue,) if glue else ())],
        }
        self._put_static(d, apex)
        ns_a = addr_rr(QPTR, self.ns_address, self.config.node_ttl)
        if ns_a is not None:
            qtype = A if ip_version(self.ns_address) == 4 else AAAA
            self._put_static(f"ns.{d}", {qtype: [((ns_a,), (), ())], ANY: [((ns_a,), (), ())]})
        for ent in (f"{dc}.{d}", f"service.{d}", f"service.{dc}.{d}", f"node.{d}", f"node.{dc}.{d}",
                    f"addr.{d}", f"addr.{dc}.{d}"):
            self._put_static(ent, None)

    def _put_static(self, name: str, typed: dict[int, list[tuple]] | None) -> None:
        wire = encode_name(name)
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
        cfg = self.config
        ttl = cfg.ttl_for(svc)
        d, dc = self.domain, self.dc
        a_rrs: dict[str, bytes] = {}
        srv_rrs: dict[str, tuple[bytes, bytes | None]] = {}
        for inst in healthy:
            address = inst.address or inst.node_address
            record = addr_rr(QPTR, address, ttl)
            if record is not None:
                a_rrs[inst.id] = record
                facts.add(("ptr", address, f"{svc}.service.{d}"))
            else:
                self._warn_once(f"addr:{inst.id}", "dns: instance %s of %s has address %r, not an IP; "
                                "it is left out of A/AAAA answers", inst.id, svc, address)
            target, target_ttl = self._srv_target(inst, address, ttl, facts)
            try:
                target_wire = encode_name(target)
            except (ValueError, UnicodeError):
                continue
            srv = rr(QPTR, SRV, ttl, struct.pack("!HHH", 1, 1, inst.port) + target_wire)
            srv_rrs[inst.id] = (srv, addr_rr(target_wire, address, target_ttl))
        groups: dict[str, list[Instance]] = {"": list(healthy)}
        for inst in healthy:
            for tag in {t.lower() for t in inst.tags}:
                if valid_label(tag):
                    groups.setdefault(tag, []).append(inst)
        names: dict[bytes, dict] = {}
        for tag, members in groups.items():
            typed = self._service_answers(members, a_rrs, srv_rrs)
            bases = [f"{svc}.service"] if not tag else [f"{tag}.{svc}.service", f"_{svc}._{tag}.service"]
            if not tag:
                bases += [f"_{svc}._tcp.service", f"_{svc}._udp.service"]
            for base in bases:
                for name in (f"{base}.{d}", f"{base}.{dc}.{d}"):
                    try:
                        wire = encode_name(name)
                    except ValueError:
                        continue
                    names[wire] = self._entry(len(wire), typed)
                    parent = name.split(".", 1)[1]
                    if parent.startswith("_"):  # _tag.service.consul is an empty non-terminal
                        facts.add(("ent", parent))
        return names

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

    def _service_answers(self, members: Sequence[Instance], a_rrs: dict[str, bytes],
                         srv_rrs: dict[str, tuple[bytes, bytes | None]]) -> dict[int, list[tuple]]:
        limit = self.config.a_record_limit
        by_a: list[tuple] = []
        by_aaaa: list[tuple] = []
        by_any: list[tuple] = []
        by_srv: list[tuple] = []
        for order in shuffled_orderings(list(members), self.config.orderings):
            seen: set[bytes] = set()  # one record per address, like Consul
            v4: list[bytes] = []
            v6: list[bytes] = []
            for inst in order:
                record = a_rrs.get(inst.id)
                if record is None or record in seen:
                    continue
                seen.add(record)
                (v4 if record[3] == A else v6).append(record)
            if limit:
                v4, v6 = v4[:limit], v6[:limit]
                both = (v4 + v6)[:limit]
            else:
                both = v4 + v6
            by_a.append((v4, (), ()))
            by_aaaa.append((v6, (), ()))
            by_any.append((both, (), ()))
            srv: list[bytes] = []
            extra: list[bytes] = []
            for inst in order:
                pair = srv_rrs.get(inst.id)
                if pair is None:
                    continue
                srv.append(pair[0])
                if pair[1] is not None and pair[1] not in extra:
                    extra.append(pair[1])
            by_srv.append((srv, (), extra))
        return {A: by_a, AAAA: by_aaaa, ANY: by_any, SRV: by_srv}

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

    def _put_derived(self, name: str, typed: dict[int, list[tuple]] | None, present: bool) -> None:
        try:
            wire = encode_name(name)
        except ValueError:
            return
        if wire in self._owner or wire in self._static:
            return
        if present:
            self.names[wire] = self._entry(name, typed)
            self._derived.add(wire)
        elif wire in self._derived:
            self._derived.discard(wire)
            self.names.pop(wire, None)

    def _rebuild_shared(self, kind: str, key: str) -> None:
        d, dc, node_ttl = self.domain, self.dc, self.config.node_ttl
        if kind == "node":
            addrs = sorted(self._node_addrs.get(key, ()))
            if not addrs:
                self._node_addrs.pop(key, None)
            records = [r for r in (addr_rr(QPTR, a, node_ttl) for a in addrs) if r is not None]
            typed = self._address_answers(records)
            for name in (f"{key}.node.{d}", f"{key}.node.{dc}.{d}"):
                self._put_derived(name, typed, bool(records))
        elif kind == "ptr":
            targets = sorted(self._ptr_targets.get(key, ()))
            if not targets:
                self._ptr_targets.pop(key, None)
            name = reverse_name(key)
            if name is None:
                return
            records = [rr(QPTR, PTR, node_ttl, encode_name(t)) for t in targets]
            self._put_derived(name, {PTR: [(records, (), ())], ANY: [(records, (), ())]}, bool(records))
        elif kind == "addr":
            hexed, address = key.split("|", 1)
            present = ("addr", hexed, address) in self._facts
            typed = self._address_answers([r for r in [addr_rr(QPTR, address, self.config.service_ttl)] if r])
            for name in (f"{hexed}.addr.{d}", f"{hexed}.addr.{dc}.{d}"):
                self._put_derived(name, typed, present)
        else:
            self._put_derived(key, None, ("ent", key) in self._facts)

    def _address_answers(self, records: list[bytes]) -> dict[int, list[tuple]]:
        v4 = [r for r in records if r[3] == A]
        v6 = [r for r in records if r[3] == AAAA]
        out: dict[int, list[tuple]] = {ANY: [(v4 + v6, (), ())]}
        if v4:
            out[A] = [(list(o), (), ()) for o in shuffled_orderings(v4, self.config.orderings)]
        if v6:
            out[AAAA] = [(list(o), (), ()) for o in shuffled_orderings(v6, self.config.orderings)]
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

    def miss(self, wire: bytes) -> dict[bytes | None, Prebuilt] | None:
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
        """``<hex>.addr[.<dc>].<domain>`` for any address, registered or not (cached)."""
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
