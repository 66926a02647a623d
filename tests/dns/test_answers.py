"""Names and answers, asked with dnspython over real UDP/TCP sockets (view fed through apply)."""

from __future__ import annotations

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode

from tests.dns.helpers import ask, inst, records, ttls
from waypost.catalog import CRITICAL, WARNING
from waypost.dns import CatalogView


def web_view(only_passing: bool = False) -> CatalogView:
    view = CatalogView(only_passing=only_passing)
    view.apply("web", [
        inst("web-1", "web", "10.0.0.1", 8080, node="node1", tags=("primary", "v1")),
        inst("web-2", "web", "10.0.0.2", 8081, node="node2", node_address="10.9.0.2", tags=("v1",)),
        inst("web-3", "web", "10.0.0.3", 8082, node="node3", status=WARNING),
        inst("web-4", "web", "10.0.0.4", 8083, node="node4", status=CRITICAL),
    ])
    view.apply("db", [inst("db-1", "db", "fd00::5", 5432, node="node5")])
    return view


async def test_service_a_records_are_the_healthy_instances(make_dns) -> None:
    server = await make_dns(web_view())
    msg = await ask(server, "web.service.consul")
    assert msg.rcode() == dns.rcode.NOERROR
    assert msg.flags & dns.flags.AA
    assert records(msg) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]  # critical web-4 left out
    assert ttls(msg) == {0}  # Consul's default service TTL


async def test_only_passing_drops_warning_too(make_dns) -> None:
    server = await make_dns(web_view(only_passing=True), only_passing=True)
    assert records(await ask(server, "web.service.consul")) == ["10.0.0.1", "10.0.0.2"]


async def test_datacenter_and_case_insensitive_with_question_echoed(make_dns) -> None:
    server = await make_dns(web_view())
    for name in ("web.service.dc1.consul", "WeB.SeRvIcE.CoNsUl", "WEB.SERVICE.DC1.CONSUL."):
        msg = await ask(server, name)
        assert records(msg) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"], name
        # 0x20: the question comes back with the exact case it was asked with
        assert msg.question[0].name.to_text() == name.rstrip(".") + "."
        assert msg.answer[0].name.to_text() == name.rstrip(".") + "."
    assert (await ask(server, "web.service.dc2.consul")).rcode() == dns.rcode.NXDOMAIN


async def test_tag_lookup_and_rfc2782_srv(make_dns) -> None:
    server = await make_dns(web_view())
    assert records(await ask(server, "primary.web.service.consul")) == ["10.0.0.1"]
    assert records(await ask(server, "V1.web.service.consul")) == ["10.0.0.1", "10.0.0.2"]
    srv = await ask(server, "_web._v1.service.consul", "SRV")
    assert records(srv, "SRV") == ["1 1 8080 node1.node.dc1.consul.", "1 1 8081 0a000002.addr.dc1.consul."]
    anytag = await ask(server, "_web._tcp.service.consul", "SRV")  # _tcp means "any tag" (Consul)
    assert len(records(anytag, "SRV")) == 3
    # _udp is an ordinary tag: no instance of web carries it
    assert (await ask(server, "_web._udp.service.consul", "SRV")).rcode() == dns.rcode.NXDOMAIN
    assert (await ask(server, "nosuchtag.web.service.consul")).rcode() == dns.rcode.NXDOMAIN
    assert (await ask(server, "_web._nosuchtag.service.consul", "SRV")).rcode() == dns.rcode.NXDOMAIN


async def test_srv_targets_resolve_in_the_additional_section(make_dns) -> None:
    server = await make_dns(web_view())
    msg = await ask(server, "web.service.consul", "SRV")
    assert records(msg, "SRV") == [
        "1 1 8080 node1.node.dc1.consul.",  # service on its node's address → node name
        "1 1 8081 0a000002.addr.dc1.consul.",  # service address differs from node → hex addr name
        "1 1 8082 node3.node.dc1.consul.",
    ]
    extra = {rrset.name.to_text(): [r.to_text() for r in rrset] for rrset in msg.additional}
    assert extra == {"node1.node.dc1.consul.": ["10.0.0.1"], "0a000002.addr.dc1.consul.": ["10.0.0.2"],
                     "node3.node.dc1.consul.": ["10.0.0.3"]}
    # and the targets themselves resolve
    assert records(await ask(server, "0a000002.addr.dc1.consul")) == ["10.0.0.2"]
    assert records(await ask(server, "node1.node.dc1.consul")) == ["10.0.0.1"]


async def test_ipv6_service_gets_aaaa_and_nodata_for_a(make_dns) -> None:
    server = await make_dns(web_view())
    assert records(await ask(server, "db.service.consul", "AAAA"), "AAAA") == ["fd00::5"]
    nodata = await ask(server, "db.service.consul", "A")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert records(nodata, "SOA", "authority")
    srv = await ask(server, "db.service.consul", "SRV")
    assert records(srv, "AAAA", "additional") == ["fd00::5"]


async def test_node_lookup_and_unknown_node(make_dns) -> None:
    server = await make_dns(web_view(), node_ttl=7)
    msg = await ask(server, "node2.node.consul")
    assert records(msg) == ["10.9.0.2"] and ttls(msg) == {7}
    # a node only running a critical instance still exists as a node
    assert records(await ask(server, "node4.node.consul")) == ["10.0.0.4"]
    assert (await ask(server, "ghost.node.consul")).rcode() == dns.rcode.NXDOMAIN


async def test_addr_lookup_for_any_address(make_dns) -> None:
    server = await make_dns(web_view())
    assert records(await ask(server, "7f000001.addr.consul")) == ["127.0.0.1"]
    v6 = await ask(server, "fd000000000000000000000000000005.addr.dc1.consul", "AAAA")
    assert records(v6, "AAAA") == ["fd00::5"]
    assert (await ask(server, "nothex.addr.consul")).rcode() == dns.rcode.NXDOMAIN


async def test_ptr_for_registered_addresses(make_dns) -> None:
    server = await make_dns(web_view())
    # the node that has the address, alone (Consul's handlePtr stops at the node)
    msg = await ask(server, "1.0.0.10.in-addr.arpa", "PTR")
    assert records(msg, "PTR") == ["node1.node.dc1.consul."]
    v6 = await ask(server, "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa", "PTR")
    assert records(v6, "PTR") == ["node5.node.dc1.consul."]
    # web-2's own address is no node's: the service
    assert records(await ask(server, "2.0.0.10.in-addr.arpa", "PTR"), "PTR") == ["web.service.dc1.consul."]


async def test_soa_ns_and_negative_answers_carry_the_soa(make_dns) -> None:
    server = await make_dns(web_view(), soa_min_ttl=30)
    soa = await ask(server, "consul", "SOA")
    (rdata,) = records(soa, "SOA")
    assert rdata.startswith("ns.consul. hostmaster.consul.") and rdata.endswith(" 30")
    ns = await ask(server, "consul", "NS")
    assert records(ns, "NS") == ["ns.consul."] and records(ns, "A", "additional") == ["127.0.0.1"]
    nx = await ask(server, "nope.service.consul")
    assert nx.rcode() == dns.rcode.NXDOMAIN and nx.flags & dns.flags.AA
    assert records(nx, "SOA", "authority") == [rdata] and ttls(nx, "authority") == {30}
    nodata = await ask(server, "web.service.consul", "TXT")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert ttls(nodata, "authority") == {30}
    # empty non-terminals are NODATA, not NXDOMAIN (RFC 8020 resolvers would prune the subtree)
    for ent in ("service.consul", "_v1.service.consul", "node.consul", "dc1.consul"):
        msg = await ask(server, ent)
        assert msg.rcode() == dns.rcode.NOERROR and not msg.answer, ent


async def test_service_ttl_default_and_overrides(make_dns) -> None:
    view = web_view()
    view.apply("api", [inst("api-1", "api", "10.1.0.1")])
    view.apply("apigw", [inst("apigw-1", "apigw", "10.1.0.2")])
    server = await make_dns(view, service_ttl=30, service_ttls=(("web", 5), ("api*", 9)))
    assert ttls(await ask(server, "web.service.consul")) == {5}
    assert ttls(await ask(server, "apigw.service.consul")) == {9}
    assert ttls(await ask(server, "db.service.consul", "AAAA")) == {30}


async def test_answers_are_shuffled_and_limited(make_dns) -> None:
    view = CatalogView()
    view.apply("many", [inst(f"m-{i}", "many", f"10.2.0.{i}", node=f"n{i}") for i in range(1, 7)])
    server = await make_dns(view, a_record_limit=3)
    orders, seen = set(), set()
    for _ in range(40):
        msg = await ask(server, "many.service.consul")
        rrs = [r.to_text() for rrset in msg.answer for r in rrset]
        assert len(rrs) == 3
        orders.add(tuple(rrs))
        seen.update(rrs)
    assert len(orders) > 3  # different orders (and subsets) on different queries
    assert len(seen) == 6  # every instance gets its turn
    srv = await ask(server, "many.service.consul", "SRV")
    assert len(records(srv, "SRV")) == 6  # the A-record limit doesn't cut SRV


async def test_any_and_unhealthy_only_service(make_dns) -> None:
    view = web_view()
    view.apply("down", [inst("down-1", "down", "10.3.0.1", status=CRITICAL)])
    server = await make_dns(view)
    msg = await ask(server, "web.service.consul", "ANY")
    assert records(msg) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert (await ask(server, "down.service.consul")).rcode() == dns.rcode.NXDOMAIN


async def test_apply_changes_answers_at_once(make_dns) -> None:
    view = web_view()
    server = await make_dns(view)
    view.apply("web", [inst("web-9", "web", "10.0.0.9")])
    assert records(await ask(server, "web.service.consul")) == ["10.0.0.9"]
    assert (await ask(server, "primary.web.service.consul")).rcode() == dns.rcode.NXDOMAIN
    view.apply("web", [])
    assert (await ask(server, "web.service.consul")).rcode() == dns.rcode.NXDOMAIN
    # PTR and node records go with the last instance that carried them
    assert (await ask(server, "9.0.0.10.in-addr.arpa", "PTR")).rcode() != dns.rcode.NOERROR
    assert (await ask(server, "node1.node.consul")).rcode() == dns.rcode.NXDOMAIN


async def test_tcp_and_edns_give_the_same_answers(make_dns) -> None:
    server = await make_dns(web_view())
    plain = await ask(server, "web.service.consul", "SRV")
    for kwargs in ({"tcp": True}, {"use_edns": 0}, {"use_edns": 0, "tcp": True}, {"use_edns": 0, "want_dnssec": True}):
        msg = await ask(server, "web.service.consul", "SRV", **kwargs)
        assert records(msg, "SRV") == records(plain, "SRV"), kwargs
        assert records(msg, "A", "additional") == records(plain, "A", "additional"), kwargs
        if kwargs.get("use_edns") == 0:
            assert msg.edns == 0
            assert bool(msg.ednsflags & dns.flags.DO) == bool(kwargs.get("want_dnssec"))


async def test_invalid_service_names_are_skipped_not_fatal(make_dns, caplog) -> None:
    view = web_view()
    view.apply("bad.name", [inst("b-1", "bad.name", "10.4.0.1")])
    view.apply("x" * 70, [inst("b-2", "x" * 70, "10.4.0.2")])
    view.apply("hosty", [inst("h-1", "hosty", "db.example.com", node="")])
    server = await make_dns(view)
    assert records(await ask(server, "web.service.consul")) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert "not a valid DNS label" in caplog.text
    hosty = await ask(server, "hosty.service.consul", "SRV")
    assert records(hosty, "SRV") == ["1 1 80 db.example.com."]


async def test_rd_bit_copied_and_ra_only_with_recursors(make_dns) -> None:
    server = await make_dns(web_view())
    q = dns.message.make_query("web.service.consul", "A")
    q.flags &= ~dns.flags.RD
    msg = await dns.asyncquery.udp(q, "127.0.0.1", port=server.port, timeout=3)
    assert not msg.flags & dns.flags.RD and not msg.flags & dns.flags.RA
    msg = await ask(server, "web.service.consul")
    assert msg.flags & dns.flags.RD and not msg.flags & dns.flags.RA
