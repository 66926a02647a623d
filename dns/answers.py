"""The answer table: every name DNS serves with its prebuilt answers, rebuilt when the catalog
view changes (never on the query path).

Every name DNS serves maps (lower-cased, in wire form) to a dict from the query's 4 type+class
bytes to a :class:`Prebuilt` (or :class:`Ring`), see :mod:`waypost.dns.pools`.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import struct
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from waypost.catalog import Instance
from waypost.dns.config import DnsConfig
from waypost.dns.pools import Answers, Prebuilt, Ring, RingAnswers, addresses, fixed, prebuild, shuffled
from waypost.dns.wire import (
    AAAA,
    ANY,
    CNAME,
    NOERROR,
    NS,
    NXDOMAIN,
    PTR,
    QPTR,
    SOA,
    SRV,
    A,
    Sections,
    addr_rr,
    encode_name,
    hex_addr,
    ip_version,
    reverse_name,
    rr,
    tc_key,
    try_encode,
    valid_label,
    valid_name,
)

log = logging.getLogger("waypost.dns.answers")

Typed = dict[int, "Answers | RingAnswers"]
Entry = dict[bytes | None, "Prebuilt | Ring"]

ARPA = encode_name("arpa")
NODE_PTR, SERVICE_PTR = 0, 1  # a PTR target's precedence: any node's name before any service's


def unique(records: Iterable[bytes | None]) -> list[bytes]:
    """The records in first-seen order, without None and without repeats."""
    return list(dict.fromkeys(r for r in records if r is not None))


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
        self._ptr_targets: dict[str, set[tuple[int, str]]] = {}  # address → {(precedence, target)}
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
            target = self._node_target(node)
            if target and inst.node_address:
                facts.add(("node", node, inst.node_address))
                facts.add(("ptr", inst.node_address, NODE_PTR, target))
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

    def _node_target(self, node: str) -> str | None:
        """``<node>.node.<dc>.<domain>`` (the name SRV and PTR records give a node), or None when
        ``node`` can't be named: empty, a part not a valid label, or the name too long. Node names
        may have dots (``host.example.com``): Consul joins the labels before ``node``."""
        if not node or not valid_name(node):
            return None
        target = f"{node}.node.{self.dc}.{self.domain}"
        return target if try_encode(target) is not None else None

    def _service_names(self, svc: str, healthy: Sequence[Instance], facts: set[tuple]) -> dict[bytes, dict]:
        ttl = self.config.ttl_for(svc)
        records = {inst.id: self._instance_records(svc, inst, ttl, facts) for inst in healthy}
        groups: dict[str, list[Instance]] = {"": list(healthy)}
        for inst in healthy:
            for tag in {t.lower() for t in inst.tags}:
                if valid_name(tag):  # dots allowed: Consul joins the labels before the service's
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
        A tag with dots (``1.4.2``) has no RFC 2782 name: Consul reads those only with one label
        each side.
        """
        if not tag:
            return [(f"{svc}.service", None), (f"_{svc}._tcp.service", f"_{svc}._tcp")]
        if tag == "tcp" or "." in tag:
            return [(f"{tag}.{svc}.service", None)]
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
        if record is not None and inst.address:
            # Consul's handlePtr matches a service on its own address (not its node's), and names
            # it with the datacenter
            facts.add(("ptr", address, SERVICE_PTR, f"{svc}.service.{self.dc}.{self.domain}"))
        elif record is None and address and (target := try_encode(address)) is not None and len(target) > 1:
            cname = rr(QPTR, CNAME, ttl, target)
        target_wire = try_encode(self._srv_target(inst, address, facts))
        if target_wire is None:
            return InstanceRecords(record, cname, None, None)
        srv = rr(QPTR, SRV, ttl, struct.pack("!HHH", 1, inst.weight, inst.port) + target_wire)
        # the glue has the service's TTL whatever the target, as Consul's makeRecordFromServiceNode
        return InstanceRecords(record, cname, srv, addr_rr(target_wire, address, ttl))

    def _srv_target(self, inst: Instance, address: str, facts: set[tuple]) -> str:
        """Consul's SRV target: the node name when the service uses the node's address, else
        ``<hex>.addr.<dc>.<domain>``; a hostname address is used as the target itself."""
        node_target = self._node_target(inst.node.lower())
        if node_target and (not inst.address or inst.address == inst.node_address):
            return node_target
        hexed = hex_addr(address)
        if hexed is None:
            return address
        facts.add(("addr", hexed, address))
        return f"{hexed}.addr.{self.dc}.{self.domain}"

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
            (targets.add if present else targets.discard)((fact[2], fact[3]))
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
            self._rebuild_ptr(key)
        elif kind == "addr":
            hexed, address = key.split("|", 1)
            present = ("addr", hexed, address) in self._facts
            typed = self._address_answers([r for r in [addr_rr(QPTR, address, node_ttl)] if r])
            self._put_derived_forms(f"{hexed}.addr", typed, present)
        else:
            self._put_derived_name(key, None, ("ent", key) in self._facts)

    def _rebuild_ptr(self, address: str) -> None:
        """One PTR for an address, as Consul's handlePtr: a node's name when a node has the address,
        else a service registered with it (the first by name, so the answer doesn't change from one
        query to the next, and stays one record whatever the number of services)."""
        targets = self._ptr_targets.get(address)
        if not targets:
            self._ptr_targets.pop(address, None)
        name = reverse_name(address)
        if name is None:
            return
        wire = next((w for _, t in sorted(targets or ()) if (w := try_encode(t)) is not None), None)
        records = [rr(QPTR, PTR, self.config.node_ttl, wire)] if wire else []
        self._put_derived_name(name, {PTR: fixed(records), ANY: fixed(records)}, bool(records))

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
        return below(wire, self.domain_wire)

    def miss(self, wire: bytes) -> Entry | None:
        """The entry for a lower-case wire name not in ``names``: a synthesised ``.addr`` answer,
        NXDOMAIN for other names in the domain and (without recursion) for reverse names, None for
        the names to forward (or refuse)."""
        if self.in_domain(wire):
            return self._synth_addr(wire) or self._nx_entry
        if not self.ra and below(wire, ARPA):
            # Consul's handlePtr: an address it doesn't know is NXDOMAIN (with the SOA) when it has
            # no recursor to ask; refusing would tell the client it may not ask at all
            return self._nx_entry
        return None

    def lookup(self, wire: bytes, qtype: int) -> Prebuilt | None:
        """The answer for a lower-case wire name, or None when it is to be forwarded (or refused):
        outside the domain, and not a registered address's PTR name nor (without recursion) any
        other reverse name."""
        entry = self.names.get(wire)
        if entry is None:
            entry = self.miss(wire)
            if entry is None:
                return None
        return entry.get(tc_key(qtype)) or entry[None]

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
                records = [r for r in [addr_rr(QPTR, address, self.config.node_ttl)] if r]
                entry = self._entry(len(wire), self._address_answers(records))
                if len(self._synth) > 4096:
                    self._synth.clear()
                self._synth[wire] = entry
                return entry
        return None

    def service_names(self) -> Iterable[bytes]:
        return self._owner.keys()


def below(wire: bytes, suffix: bytes) -> bool:
    """Whether a lower-case wire name is ``suffix`` (a wire name) or a name below it."""
    if not wire.endswith(suffix):
        return False
    stop = len(wire) - len(suffix)
    if stop == 0:
        return True
    # the suffix must start at a label boundary: walk the labels to be sure
    pos = 0
    while pos < stop:
        if wire[pos] > 63:
            return False
        pos += wire[pos] + 1
    return pos == stop


def _srv_sections(order: Sequence[tuple[bytes, bytes | None]]) -> Sections:
    """SRV records in this order, with their targets' address records (once each) as glue."""
    return tuple(srv for srv, _ in order), (), tuple(unique(glue for _, glue in order))
