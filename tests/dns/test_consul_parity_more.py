"""More Consul DNS parity, asked over real UDP: PTR targets carry the datacenter label, and RFC 2782
names without the ``service`` label exist for SRV only (any other type is NXDOMAIN).

Consul's behaviour is from hashicorp/consul ``agent/dns.go`` (``handlePtr``, ``dispatch``) and
``agent/dns_ce.go`` (``serviceCanonicalDNSName``, ``nodeCanonicalDNSName``).
"""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from tests.dns.helpers import ask, inst, records, ttls
from waypost.catalog import Instance
from waypost.dns import CatalogView


def split_view() -> CatalogView:
    """Services whose addresses are not their nodes' addresses (so a PTR name is one or the other)."""
    view = CatalogView()
    view.apply("api", [inst("api-1", "api", "10.5.0.7", 9000, node="host1", node_address="10.9.0.1", tags=("v1",))])
    view.apply("db", [inst("db-1", "db", "fd00::7", 5432, node="host2", node_address="10.9.0.2")])
    return view


def soa_owners(msg: dns.message.Message) -> list[str]:
    """Owner names of the SOA records in the authority section."""
    return [rrset.name.to_text() for rrset in msg.authority if rrset.rdtype == dns.rdatatype.SOA]


async def test_ptr_targets_carry_the_datacenter(make_dns) -> None:
    server = await make_dns(split_view())
    # a service's own address: <service>.service.<dc>.<domain> (Consul's serviceCanonicalDNSName)
    msg = await ask(server, "7.0.5.10.in-addr.arpa", "PTR")
    assert msg.rcode() == dns.rcode.NOERROR and msg.flags & dns.flags.AA
    assert records(msg, "PTR") == ["api.service.dc1.consul."]
    assert [rrset.name.to_text() for rrset in msg.answer] == ["7.0.5.10.in-addr.arpa."]
    assert not msg.authority
    v6 = await ask(server, "7.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa", "PTR")
    assert records(v6, "PTR") == ["db.service.dc1.consul."]
    # a node's address: <node>.node.<dc>.<domain> (Consul's nodeCanonicalDNSName)
    assert records(await ask(server, "1.0.9.10.in-addr.arpa", "PTR"), "PTR") == ["host1.node.dc1.consul."]
    assert records(await ask(server, "1.0.9.10.in-addr.arpa", "ANY"), "PTR") == ["host1.node.dc1.consul."]


async def test_ptr_targets_use_the_configured_datacenter_and_domain(make_dns) -> None:
    server = await make_dns(split_view(), datacenter="east-1", domain="waypost.test")
    assert records(await ask(server, "7.0.5.10.in-addr.arpa", "PTR"), "PTR") == ["api.service.east-1.waypost.test."]
    assert records(await ask(server, "2.0.9.10.in-addr.arpa", "PTR"), "PTR") == ["host2.node.east-1.waypost.test."]


async def test_rfc2782_name_without_service_label_is_nxdomain_for_other_types(make_dns) -> None:
    server = await make_dns(split_view())
    names = ("_api._tcp.consul", "_api._tcp.dc1.consul", "_api._tcp.dc1.dc.consul", "_API._TCP.Consul",
             "_api._v1.consul")
    for name in names:
        # Consul only reads "_x" labels as a service lookup for SRV questions: the name still answers SRV
        srv = await ask(server, name, "SRV")
        assert srv.rcode() == dns.rcode.NOERROR, name
        assert records(srv, "SRV") == ["1 1 9000 0a050007.addr.dc1.consul."], name
        for rdtype in ("A", "AAAA", "ANY", "TXT"):
            msg = await ask(server, name, rdtype)
            assert msg.rcode() == dns.rcode.NXDOMAIN, (name, rdtype)
            assert msg.flags & dns.flags.AA, (name, rdtype)
            assert not msg.answer, (name, rdtype)
            assert soa_owners(msg) == ["consul."], (name, rdtype)
    # with the service label it is an ordinary service lookup for every type, as in Consul
    full = await ask(server, "_api._tcp.service.consul", "A")
    assert full.rcode() == dns.rcode.NOERROR and records(full) == ["10.5.0.7"]
    assert records(await ask(server, "_api._v1.service.dc1.consul", "A")) == ["10.5.0.7"]
    nodata = await ask(server, "_api._tcp.service.consul", "AAAA")  # Consul's errNoData: NOERROR + SOA
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert soa_owners(nodata) == ["consul."]


# ---- PTR: the node first, else one service (Consul's handlePtr) -------------------------------

def crowded_view() -> CatalogView:
    """Node ``zz-host`` (10.6.0.1) runs 20 services on its own address; ``aaa`` and ``bbb`` have
    the explicit address 10.6.0.8 on other nodes, and ``aab`` has 10.6.0.9, which node ``zz-node``
    has too (every service name sorts before the node names, so a PTR sorted by name alone fails)."""
    view = CatalogView()
    for i in range(20):
        svc = f"service-with-a-rather-long-name-{i:02d}"
        view.apply(svc, [inst(f"{svc}-1", svc, "10.6.0.1", 8000 + i, node="zz-host")])
    view.apply("aaa", [inst("aaa-1", "aaa", "10.6.0.8", node="n8", node_address="10.6.1.8")])
    view.apply("bbb", [inst("bbb-1", "bbb", "10.6.0.8", node="n9", node_address="10.6.1.9")])
    view.apply("aab", [inst("aab-1", "aab", "10.6.0.9", node="n1", node_address="10.6.1.1"),
                       inst("aab-2", "aab", "10.6.0.7", node="zz-node", node_address="10.6.0.9")])
    return view


async def test_ptr_of_a_node_address_is_the_node_alone(make_dns) -> None:
    server = await make_dns(crowded_view())
    for kwargs in ({}, {"tcp": True}, {"use_edns": 0}):
        msg = await ask(server, "1.0.6.10.in-addr.arpa", "PTR", **kwargs)
        assert msg.rcode() == dns.rcode.NOERROR and not msg.flags & dns.flags.TC, kwargs
        assert [r.to_text() for rrset in msg.answer for r in rrset] == ["zz-host.node.dc1.consul."], kwargs
    # the node wins over a service with that explicit address, whatever their names' order
    assert records(await ask(server, "9.0.6.10.in-addr.arpa", "PTR"), "PTR") == ["zz-node.node.dc1.consul."]
    assert records(await ask(server, "9.0.6.10.in-addr.arpa", "ANY"), "PTR") == ["zz-node.node.dc1.consul."]


async def test_ptr_of_a_service_address_is_one_service(make_dns) -> None:
    view = crowded_view()
    server = await make_dns(view)
    for _ in range(5):  # always the same one: the first by name
        msg = await ask(server, "8.0.6.10.in-addr.arpa", "PTR")
        assert [r.to_text() for rrset in msg.answer for r in rrset] == ["aaa.service.dc1.consul."]
    view.apply("aaa", [])
    assert records(await ask(server, "8.0.6.10.in-addr.arpa", "PTR"), "PTR") == ["bbb.service.dc1.consul."]
    # the node that had 10.6.0.9 goes: the service registered with that address answers
    view.apply("aab", [inst("aab-1", "aab", "10.6.0.9", node="n1", node_address="10.6.1.1")])
    assert records(await ask(server, "9.0.6.10.in-addr.arpa", "PTR"), "PTR") == ["aab.service.dc1.consul."]


async def test_ptr_ignores_a_service_without_its_own_address(make_dns) -> None:
    # Consul matches services on their ServiceAddress: one using its node's address is not a match
    view = CatalogView()
    view.apply("bare", [Instance(id="b-1", service="bare", address="", port=80, node="", node_address="10.6.2.1")])
    server = await make_dns(view)
    assert records(await ask(server, "bare.service.consul")) == ["10.6.2.1"]
    msg = await ask(server, "1.2.6.10.in-addr.arpa", "PTR")
    assert msg.rcode() == dns.rcode.NXDOMAIN and not msg.answer


# ---- reverse names nobody registered: NXDOMAIN without recursors (Consul's handlePtr) ----------

async def test_unknown_reverse_name_is_nxdomain_without_recursors(make_dns) -> None:
    server = await make_dns(split_view())
    # Consul's handlePtr serves everything under "arpa."
    names = ("9.9.9.10.in-addr.arpa", "10.in-addr.arpa", "in-addr.arpa", "IN-ADDR.ARPA",
             "8.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa", "ip6.arpa", "arpa",
             "foo.arpa")
    for name in names:
        for rdtype, kwargs in (("PTR", {}), ("PTR", {"tcp": True}), ("PTR", {"use_edns": 0}), ("A", {})):
            msg = await ask(server, name, rdtype, **kwargs)
            assert msg.rcode() == dns.rcode.NXDOMAIN, (name, rdtype, kwargs)
            assert msg.flags & dns.flags.AA and not msg.flags & dns.flags.RA, (name, kwargs)
            assert not msg.answer and soa_owners(msg) == ["consul."], (name, kwargs)
            assert msg.question[0].name.to_text() == name + ".", (name, kwargs)
    # a registered address's reverse name still answers; other names outside the domain are refused
    assert records(await ask(server, "7.0.5.10.in-addr.arpa", "PTR"), "PTR") == ["api.service.dc1.consul."]
    for name in ("www.example.org", "in-addr.arpa.example.org", "arpa.example.org", "xarpa"):
        msg = await ask(server, name, "PTR")
        assert msg.rcode() == dns.rcode.REFUSED and not msg.flags & dns.flags.AA, name


# ---- TTLs: SRV glue carries the service TTL, .addr names the node TTL --------------------------

def ttl_by_name(msg: dns.message.Message, section: str) -> dict[str, int]:
    return {rrset.name.to_text(): rrset.ttl for rrset in getattr(msg, section)}


async def test_srv_glue_has_the_service_ttl_and_addr_names_the_node_ttl(make_dns) -> None:
    view = split_view()
    view.apply("web", [inst("web-1", "web", "10.5.1.1", 80, node="host3"),
                       inst("web-2", "web", "10.5.1.2", 81, node="host4", node_address="10.9.0.4")])
    server = await make_dns(view, service_ttl=30, service_ttls=(("api", 9),), node_ttl=7)
    for kwargs in ({}, {"tcp": True}, {"use_edns": 0}):
        srv = await ask(server, "web.service.consul", "SRV", **kwargs)
        assert {rrset.ttl for rrset in srv.answer} == {30}, kwargs
        # Consul's makeRecordFromServiceNode / makeRecordFromIP give the glue the service's TTL
        assert ttl_by_name(srv, "additional") == {"host3.node.dc1.consul.": 30, "0a050102.addr.dc1.consul.": 30}, kwargs
    assert ttl_by_name(await ask(server, "api.service.consul", "SRV"), "additional") == {"0a050007.addr.dc1.consul.": 9}
    # the node's own name keeps the node TTL
    assert ttl_by_name(await ask(server, "host3.node.consul"), "answer") == {"host3.node.consul.": 7}
    # <hex>.addr names, registered SRV targets or not, have the node TTL (Consul's dispatch "addr")
    for name, rdtype in (("0a050102.addr.dc1.consul", "A"), ("0a050102.addr.consul", "ANY"),
                         ("0a050007.addr.dc1.dc.consul", "A"), ("7f000001.addr.consul", "A"),
                         ("fd000000000000000000000000000007.addr.consul", "AAAA"),
                         ("fd000000000000000000000000000099.addr.dc1.consul", "AAAA")):
        msg = await ask(server, name, rdtype)
        assert msg.answer and {rrset.ttl for rrset in msg.answer} == {7}, name


# ---- dots in tags and node names (Consul joins the labels) ---------------------------------------

def dotted_view() -> CatalogView:
    view = CatalogView()
    view.apply("api", [inst("api-1", "api", "10.7.0.1", 9000, node="host.example.com", tags=("1.4.2", "v1")),
                       inst("api-2", "api", "10.7.0.2", 9001, node="plain", tags=("1.4",))])
    long_node = ".".join(["n" * 60] * 4)  # 243 characters: <node>.node.dc1.consul would not fit 255
    view.apply("odd", [inst("odd-1", "odd", "10.7.0.3", 80, node="bad..node", tags=("a..b", ".x", "y.", "-z.w")),
                       inst("odd-2", "odd", "10.7.0.4", 81, node=long_node)])
    return view


async def test_dotted_tags_are_served(make_dns) -> None:
    server = await make_dns(dotted_view())
    for name in ("1.4.2.api.service.consul", "1.4.2.API.service.dc1.consul", "1.4.2.api.service.dc1.dc.consul"):
        msg = await ask(server, name)
        assert msg.rcode() == dns.rcode.NOERROR and records(msg) == ["10.7.0.1"], name
    assert records(await ask(server, "1.4.api.service.consul")) == ["10.7.0.2"]
    srv = await ask(server, "1.4.2.api.service.consul", "SRV")
    assert records(srv, "SRV") == ["1 1 9000 host.example.com.node.dc1.consul."]
    # no RFC 2782 form for a tag of several labels (Consul reads _api._1.4.2.service as tag "_api._1.4" of "2")
    for name in ("_api._1.4.2.service.consul", "_api._1.4.2.consul", "4.2.api.service.consul"):
        assert (await ask(server, name, "SRV")).rcode() == dns.rcode.NXDOMAIN, name
    assert records(await ask(server, "_api._v1.service.consul", "SRV"), "SRV") == [
        "1 1 9000 host.example.com.node.dc1.consul."]
    # tags with an empty or invalid part are still left out
    for tag in ("b", "x", "y", "-z.w", "z.w"):  # from "a..b", ".x", "y." and "-z.w"
        assert (await ask(server, f"{tag}.odd.service.consul")).rcode() == dns.rcode.NXDOMAIN, tag


async def test_dotted_node_names_are_served(make_dns) -> None:
    server = await make_dns(dotted_view(), node_ttl=5)
    for name in ("host.example.com.node.consul", "HOST.example.com.node.dc1.consul", "host.example.com.node.dc1.dc.consul"):
        msg = await ask(server, name)
        assert records(msg) == ["10.7.0.1"] and ttls(msg) == {5}, name
    assert (await ask(server, "example.com.node.consul")).rcode() == dns.rcode.NXDOMAIN
    srv = await ask(server, "api.service.consul", "SRV")
    assert records(srv, "SRV") == ["1 1 9000 host.example.com.node.dc1.consul.", "1 1 9001 plain.node.dc1.consul."]
    assert records(srv, "A", "additional") == ["10.7.0.1", "10.7.0.2"]
    ptr = await ask(server, "1.0.7.10.in-addr.arpa", "PTR")
    assert [r.to_text() for rrset in ptr.answer for r in rrset] == ["host.example.com.node.dc1.consul."]
    # a node name with an empty label, or too long to name, is not served: SRV targets its address
    odd = await ask(server, "odd.service.consul", "SRV")
    assert records(odd, "SRV") == ["1 1 80 0a070003.addr.dc1.consul.", "1 1 81 0a070004.addr.dc1.consul."]
