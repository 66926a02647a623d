"""Names outside the domain: forwarded to fake upstreams on loopback, refused for other clients."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
import time

import dns.flags
import dns.rcode
import dns.rdatatype
from dnslib import RR, DNSRecord

from tests.dns.helpers import ask, inst, records
from waypost.dns import CatalogView
from waypost.dns.config import parse_cidrs, resolv_conf_nameservers


class FakeUpstream(asyncio.DatagramProtocol):
    """A tiny resolver on 127.0.0.x answering every A question with one fixed address (or, with
    ``rcode``, answering every question with that RCODE and no records)."""

    def __init__(self, address: str, rcode: int = 0) -> None:
        self.address = address
        self.rcode = rcode
        self.queries: list[DNSRecord] = []
        self.transport: asyncio.DatagramTransport | None = None

    def reply(self, data: bytes) -> bytes:
        query = DNSRecord.parse(data)
        self.queries.append(query)
        answer = query.reply()
        if self.rcode:
            answer.header.rcode = self.rcode
        else:
            answer.add_answer(*RR.fromZone(f"{query.q.qname} 60 IN A {self.address}"))
        return answer.pack()

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[no-untyped-def]
        self.transport.sendto(self.reply(data), addr)  # type: ignore[union-attr]


async def start_upstream(host: str, address: str, rcode: int = 0) -> tuple[FakeUpstream, int, list]:
    """UDP and TCP listeners on (host, same port) answering with `address` (or `rcode`)."""
    loop = asyncio.get_running_loop()
    proto = FakeUpstream(address, rcode)
    transport, _ = await loop.create_datagram_endpoint(lambda: proto, local_addr=(host, 0))
    port = transport.get_extra_info("sockname")[1]

    async def on_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
        answer = proto.reply(await reader.readexactly(length))
        writer.write(struct.pack("!H", len(answer)) + answer)
        await writer.drain()
        writer.close()

    tcp = await asyncio.start_server(on_tcp, host, port)
    return proto, port, [transport, tcp]


def dead_udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def view() -> CatalogView:
    v = CatalogView()
    v.apply("web", [inst("web-1", "web", "10.0.0.1")])
    return v


async def test_outside_names_are_forwarded_and_local_names_are_not(make_dns) -> None:
    upstream, port, closers = await start_upstream("127.0.0.2", "192.0.2.10")
    try:
        server = await make_dns(view(), recursors=(("127.0.0.2", port),))
        msg = await ask(server, "www.example.org")
        assert records(msg) == ["192.0.2.10"] and msg.flags & dns.flags.RA
        tcp = await ask(server, "tcp.example.org", tcp=True)
        assert records(tcp) == ["192.0.2.10"]
        # the service domain is never forwarded
        assert records(await ask(server, "web.service.consul")) == ["10.0.0.1"]
        assert (await ask(server, "nope.service.consul")).rcode() == dns.rcode.NXDOMAIN
        assert sorted(str(q.q.qname) for q in upstream.queries) == ["tcp.example.org.", "www.example.org."]
    finally:
        for c in closers:
            c.close()


async def test_next_upstream_is_tried_and_servfail_when_all_fail(make_dns) -> None:
    _, good_port, closers = await start_upstream("127.0.0.3", "192.0.2.20")
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.4", 0))  # bound but never answers: a timeout
    try:
        refused = ("127.0.0.4", dead_udp_port("127.0.0.4"))  # nothing bound: ICMP port unreachable
        silent_up = ("127.0.0.4", silent.getsockname()[1])
        server = await make_dns(view(), recursors=(refused, silent_up, ("127.0.0.3", good_port)),
                                recursor_timeout=0.3)
        msg = await ask(server, "fallback.example.org")
        assert records(msg) == ["192.0.2.20"]

        broken = await make_dns(view(), recursors=(refused, silent_up), recursor_timeout=0.3)
        t0 = time.monotonic()
        fail = await ask(broken, "down.example.org")
        assert fail.rcode() == dns.rcode.SERVFAIL
        assert fail.question[0].name.to_text() == "down.example.org."
        assert time.monotonic() - t0 < 2.0
        assert broken.stats.events["recursion_failed"] == 1
    finally:
        silent.close()
        for c in closers:
            c.close()


async def test_servfail_and_refused_upstreams_move_on_to_the_next(make_dns) -> None:
    lame, lame_port, c1 = await start_upstream("127.0.0.6", "", rcode=dns.rcode.SERVFAIL)
    refusing, refusing_port, c2 = await start_upstream("127.0.0.7", "", rcode=dns.rcode.REFUSED)
    good, good_port, c3 = await start_upstream("127.0.0.8", "192.0.2.40")
    nx, nx_port, c4 = await start_upstream("127.0.0.9", "", rcode=dns.rcode.NXDOMAIN)
    lame_up, refusing_up = ("127.0.0.6", lame_port), ("127.0.0.7", refusing_port)
    try:
        server = await make_dns(view(), recursors=(lame_up, refusing_up, ("127.0.0.8", good_port)))
        for tcp in (False, True):
            msg = await ask(server, f"tcp{tcp}.example.org", tcp=tcp)
            assert msg.rcode() == dns.rcode.NOERROR and records(msg) == ["192.0.2.40"], tcp
        assert len(lame.queries) == len(refusing.queries) == len(good.queries) == 2
        # NXDOMAIN is an answer, as in Consul: the next upstream is not asked
        nx_first = await make_dns(view(), recursors=(("127.0.0.9", nx_port), ("127.0.0.8", good_port)))
        assert (await ask(nx_first, "gone.example.org")).rcode() == dns.rcode.NXDOMAIN
        assert len(good.queries) == 2
    finally:
        for c in c1 + c2 + c3 + c4:
            c.close()


async def test_every_upstream_failing_is_our_own_servfail(make_dns) -> None:
    """Consul's handleRecurse: no upstream's failing RCODE reaches the client, it gets SERVFAIL with
    RA (an upstream's REFUSED passed on would read as Waypost refusing the client)."""
    refusing, refusing_port, c1 = await start_upstream("127.0.0.12", "", rcode=dns.rcode.REFUSED)
    lame, lame_port, c2 = await start_upstream("127.0.0.13", "", rcode=dns.rcode.SERVFAIL)
    notimp, notimp_port, c3 = await start_upstream("127.0.0.14", "", rcode=dns.rcode.NOTIMP)
    refusing_up, lame_up, notimp_up = ("127.0.0.12", refusing_port), ("127.0.0.13", lame_port), ("127.0.0.14", notimp_port)
    silent = ("127.0.0.12", dead_udp_port("127.0.0.12"))
    try:
        orders = ((refusing_up,), (lame_up, refusing_up), (refusing_up, notimp_up), (notimp_up,), (silent, refusing_up),
                  (refusing_up, silent))
        for order in orders:
            failing = await make_dns(view(), recursors=order, recursor_timeout=0.3)
            for i, kwargs in enumerate(({}, {"tcp": True}, {"use_edns": 0})):
                msg = await ask(failing, f"nowhere{i}.example.org", **kwargs)
                assert msg.rcode() == dns.rcode.SERVFAIL, (order, kwargs)
                assert msg.flags & dns.flags.RA and not msg.flags & dns.flags.AA, (order, kwargs)
                assert msg.question[0].name.to_text() == f"nowhere{i}.example.org.", (order, kwargs)
                assert not msg.answer and not msg.authority, (order, kwargs)
                assert msg.edns == kwargs.get("use_edns", -1), (order, kwargs)
            assert failing.stats.events["recursion_failed"] == 3, order
            assert not failing.stats.events["recursion_forwarded"], order
        assert refusing.queries and lame.queries and notimp.queries
    finally:
        for c in c1 + c2 + c3:
            c.close()


async def test_unknown_reverse_names_are_forwarded_when_recursion_is_on(make_dns) -> None:
    upstream, port, closers = await start_upstream("127.0.0.15", "192.0.2.60")
    try:
        server = await make_dns(view(), recursors=(("127.0.0.15", port),),
                                allow_recursion_from=parse_cidrs(["127.0.0.1/32"]))
        msg = await ask(server, "9.9.9.10.in-addr.arpa", "A")  # the fake upstream answers A questions
        assert records(msg) == ["192.0.2.60"] and msg.flags & dns.flags.RA
        assert [str(q.q.qname) for q in upstream.queries] == ["9.9.9.10.in-addr.arpa."]
        # a registered address's reverse name is ours, and a client that may not recurse is refused
        assert records(await ask(server, "1.0.0.10.in-addr.arpa", "PTR"), "PTR") == ["node1.node.dc1.consul."]
        other = await ask(server, "9.9.9.10.in-addr.arpa", "PTR", source="127.0.0.16")
        assert other.rcode() == dns.rcode.REFUSED and len(upstream.queries) == 1
    finally:
        for c in closers:
            c.close()


async def test_host_name_service_cname_is_completed_through_the_recursors(make_dns) -> None:
    upstream, port, closers = await start_upstream("127.0.0.10", "192.0.2.50")
    v = view()
    v.apply("hostsvc", [inst("h-1", "hostsvc", "db.example.com", 5432, node="")])
    try:
        server = await make_dns(v, recursors=(("127.0.0.10", port),), service_ttl=9,
                                allow_recursion_from=parse_cidrs(["127.0.0.1/32"]))
        for kwargs in ({}, {"tcp": True}, {"use_edns": 0}):
            msg = await ask(server, "hostsvc.service.consul", **kwargs)
            assert msg.rcode() == dns.rcode.NOERROR and msg.flags & dns.flags.AA, kwargs
            assert records(msg, "CNAME") == ["db.example.com."] and records(msg) == ["192.0.2.50"], kwargs
            address = next(rrset for rrset in msg.answer if rrset.rdtype == dns.rdatatype.A)
            assert address.name.to_text() == "db.example.com." and address.ttl == 9, kwargs
        assert [str(q.q.qname) for q in upstream.queries] == ["db.example.com."] * 3
        # a client not allowed to recurse still gets the CNAME, alone
        other = await ask(server, "hostsvc.service.consul", source="127.0.0.11")
        assert records(other, "CNAME") == ["db.example.com."] and not records(other)
        assert len(upstream.queries) == 3
    finally:
        for c in closers:
            c.close()
    # upstream gone: the CNAME alone, after the recursor timeout
    gone = await make_dns(v, recursors=(("127.0.0.10", dead_udp_port("127.0.0.10")),), recursor_timeout=0.3)
    msg = await ask(gone, "hostsvc.service.consul")
    assert msg.rcode() == dns.rcode.NOERROR and records(msg, "CNAME") == ["db.example.com."] and not records(msg)


async def test_not_an_open_resolver(make_dns) -> None:
    upstream, port, closers = await start_upstream("127.0.0.5", "192.0.2.30")
    try:
        # only 127.0.0.9 may recurse: a query from 127.0.0.1 is refused, local names still answered
        server = await make_dns(view(), recursors=(("127.0.0.5", port),),
                                allow_recursion_from=parse_cidrs(["127.0.0.9/32"]))
        refused = await ask(server, "www.example.org")
        assert refused.rcode() == dns.rcode.REFUSED and not upstream.queries
        assert records(await ask(server, "web.service.consul")) == ["10.0.0.1"]
        allowed = await ask(server, "www.example.org", source="127.0.0.9")
        assert records(allowed) == ["192.0.2.30"]
        # without any recursor, outside names are refused for everyone
        plain = await make_dns(view())
        msg = await ask(plain, "www.example.org")
        assert msg.rcode() == dns.rcode.REFUSED and not msg.flags & dns.flags.RA
    finally:
        for c in closers:
            c.close()


def test_default_acl_is_loopback_and_docker_private_range() -> None:
    from waypost.dns.config import DnsConfig
    from waypost.dns.recursor import Recursor

    r = Recursor([("127.0.0.1", 53)], allow_from=DnsConfig().allow_recursion_from)
    assert r.allowed("127.0.0.1") and r.allowed("::1") and r.allowed("172.17.0.5")
    assert r.allowed("::ffff:172.18.0.2")
    assert not r.allowed("8.8.8.8") and not r.allowed("192.168.1.1") and not r.allowed("bogus")
    assert ipaddress.ip_network("172.16.0.0/12") in DnsConfig().allow_recursion_from


def test_resolv_conf_nameservers(tmp_path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nsearch example\nnameserver 10.0.0.53\nnameserver fe80::1%eth0\n"
                    "nameserver not-an-ip\noptions ndots:2\n")
    assert resolv_conf_nameservers(str(conf)) == (("10.0.0.53", 53), ("fe80::1", 53))
    assert resolv_conf_nameservers(str(tmp_path / "missing")) == ()
