"""Consul's name rules, asked over real UDP: RFC 2782 protocol labels, the optional ``service``
label, ``<dc>.dc`` datacenter labels and CNAMEs for services registered with a host name."""

from __future__ import annotations

import dns.rcode

from tests.dns.helpers import ask, inst, records
from waypost.dns import CatalogView


def tagged_view() -> CatalogView:
    view = CatalogView()
    view.apply("web", [inst("web-1", "web", "10.0.0.1", 8080, node="node1", tags=("v1",)),
                       inst("web-2", "web", "10.0.0.2", 8081, node="node2")])
    view.apply("tagged", [inst("t-1", "tagged", "10.4.0.1", node="n1", tags=("tcp",)),
                          inst("t-2", "tagged", "10.4.0.2", node="n2", tags=("udp",)),
                          inst("t-3", "tagged", "10.4.0.3", node="n3")])
    return view


def ports(msg) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(r.to_text().split()[3] for rrset in msg.answer for r in rrset)


async def test_rfc2782_tcp_means_every_instance_and_udp_is_a_tag(make_dns) -> None:
    server = await make_dns(tagged_view())
    # Consul: `if tag == "tcp" { tag = "" }` — even though one instance carries the tag "tcp"
    every = await ask(server, "_tagged._tcp.service.consul", "SRV")
    assert sorted(r.split()[3] for r in records(every, "SRV")) == ["n1.node.dc1.consul.", "n2.node.dc1.consul.",
                                                                   "n3.node.dc1.consul."]
    # _udp filters on the tag "udp", which the registrator gives UDP ports
    udp = await ask(server, "_tagged._udp.service.consul", "SRV")
    assert [r.split()[3] for r in records(udp, "SRV")] == ["n2.node.dc1.consul."]
    assert (await ask(server, "_web._udp.service.consul", "SRV")).rcode() == dns.rcode.NXDOMAIN
    # the tag form keeps filtering on "tcp"
    assert records(await ask(server, "tcp.tagged.service.consul")) == ["10.4.0.1"]


async def test_srv_names_without_the_service_label(make_dns) -> None:
    server = await make_dns(tagged_view())
    full = records(await ask(server, "_web._tcp.service.consul", "SRV"), "SRV")
    assert len(full) == 2
    for name in ("_web._tcp.consul", "_web._tcp.dc1.consul", "_web._tcp.dc1.dc.consul", "_WEB._TCP.Consul"):
        msg = await ask(server, name, "SRV")
        assert records(msg, "SRV") == full, name
        assert msg.answer[0].name.to_text() == name + "."
    assert records(await ask(server, "_web._v1.consul", "SRV"), "SRV") == ["1 1 8080 node1.node.dc1.consul."]
    # only SRV, as in Consul: for any other type the name does not exist
    other = await ask(server, "_web._tcp.consul", "A")
    assert other.rcode() == dns.rcode.NXDOMAIN and not other.answer
    assert (await ask(server, "_nope._tcp.consul", "SRV")).rcode() == dns.rcode.NXDOMAIN
    assert (await ask(server, "_web._tcp.dc2.consul", "SRV")).rcode() == dns.rcode.NXDOMAIN


async def test_datacenter_labels(make_dns) -> None:
    server = await make_dns(tagged_view())
    assert records(await ask(server, "web.service.dc1.dc.consul")) == ["10.0.0.1", "10.0.0.2"]
    assert records(await ask(server, "v1.web.service.dc1.dc.consul")) == ["10.0.0.1"]
    assert len(records(await ask(server, "_web._tcp.service.dc1.dc.consul", "SRV"), "SRV")) == 2
    assert records(await ask(server, "node1.node.dc1.dc.consul")) == ["10.0.0.1"]
    assert records(await ask(server, "0a000002.addr.dc1.dc.consul")) == ["10.0.0.2"]
    # other datacenters: no WAN to ask, so no such name (as Consul without a path to the DC)
    for name in ("web.service.dc2.dc.consul", "node1.node.dc2.dc.consul", "web.service.dc1.peer.consul"):
        assert (await ask(server, name)).rcode() == dns.rcode.NXDOMAIN, name
    for ent in ("dc.consul", "dc1.dc.consul", "service.dc1.dc.consul", "_tcp.consul", "_tcp.dc1.dc.consul"):
        msg = await ask(server, ent)
        assert msg.rcode() == dns.rcode.NOERROR and not msg.answer, ent


async def test_host_name_address_gets_a_cname(make_dns) -> None:
    view = CatalogView()
    view.apply("hostsvc", [inst("h-1", "hostsvc", "db.example.com", 5432, node="")])
    view.apply("mixed", [inst("m-1", "mixed", "db.example.com", node=""), inst("m-2", "mixed", "10.8.0.2", node="")])
    view.apply("twohosts", [inst("x-1", "twohosts", "a.example.com", node=""),
                            inst("x-2", "twohosts", "b.example.com", node="")])
    server = await make_dns(view, service_ttl=7)
    for rdtype in ("A", "AAAA", "ANY", "CNAME"):
        msg = await ask(server, "hostsvc.service.consul", rdtype)
        assert msg.rcode() == dns.rcode.NOERROR, rdtype
        assert records(msg, "CNAME") == ["db.example.com."] and msg.answer[0].ttl == 7, rdtype
    assert records(await ask(server, "hostsvc.service.consul", "SRV"), "SRV") == ["1 1 5432 db.example.com."]
    # as Consul: a CNAME only when no instance has an address of the type asked
    mixed = await ask(server, "mixed.service.consul")
    assert records(mixed) == ["10.8.0.2"] and not records(mixed, "CNAME")
    assert records(await ask(server, "mixed.service.consul", "AAAA"), "CNAME") == ["db.example.com."]
    # one CNAME per answer (a name has at most one), either host name
    seen = set()
    for _ in range(60):
        (target,) = records(await ask(server, "twohosts.service.consul"), "CNAME")
        seen.add(target)
    assert seen == {"a.example.com.", "b.example.com."}
