"""DNS wire format: the protocol constants, names and records encoded with ``struct``, and message
heads cut to a size limit.

Record data is encoded here with ``struct`` rather than dnslib: dnslib compresses names inside
rdata against its own buffer, which is only correct for a whole message it packs itself (dnslib
only parses the upstream answers that complete a CNAME, :func:`followed_records`).
"""

from __future__ import annotations

import functools
import ipaddress
import struct
from collections.abc import Sequence

from dnslib import DNSRecord

from waypost.dns.config import LABEL_RE

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

Sections = tuple[tuple[bytes, ...], tuple[bytes, ...], tuple[bytes, ...]]  # answer, authority, additional
Full = tuple[bytes, bytes, bytes, bytes, bytes]
Cut = tuple[bytes, bytes, bytes]


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


def valid_name(name: str) -> bool:
    """Whether every dot-separated part of ``name`` is a valid label (none empty)."""
    return all(map(valid_label, name.split(".")))


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


def _full(sections: Sections, flags: int, rcode: int) -> Full:
    """(head RD=0, head RD=1, EDNS head RD=0, EDNS head RD=1, body) of the whole answer."""
    an, ns, ar = sections
    counts = (len(an), len(ns), len(ar))
    ecounts = (len(an), len(ns), len(ar) + 1)
    return (_head(flags, rcode, 0, counts), _head(flags, rcode, 1, counts),
            _head(flags, rcode, 0, ecounts), _head(flags, rcode, 1, ecounts), b"".join((*an, *ns, *ar)))


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
