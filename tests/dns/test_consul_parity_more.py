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

from tests.dns.helpers import ask, inst, records
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
