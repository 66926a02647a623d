"""Helpers for the DNS tests: instances, servers on free ports, dnspython queries."""

from __future__ import annotations

import dns.asyncquery
import dns.message
import dns.rdatatype

from waypost.catalog import PASSING, Instance
from waypost.dns import CatalogView, DnsConfig, DnsServer


def inst(iid: str, service: str, address: str, port: int = 80, node: str = "node1", node_address: str = "",
         tags: tuple[str, ...] = (), status: str = PASSING) -> Instance:
    """An instance as the catalog would report it (node address defaults to the service address)."""
    return Instance(id=iid, service=service, address=address, port=port, node=node,
                    node_address=node_address or address, tags=tags, status=status)


async def start_dns(view: CatalogView | None = None, batch_udp: bool = True, **fields) -> DnsServer:
    """A started DnsServer on 127.0.0.1 with a free port; ``fields`` override DnsConfig.

    ``batch_udp=False`` serves UDP through the asyncio DatagramProtocol fallback instead of
    recvmmsg/sendmmsg batches.
    """
    fields.setdefault("listen", ("127.0.0.1", 0))
    view = view if view is not None else CatalogView()
    server = DnsServer(DnsConfig(**fields), view, batch_udp=batch_udp)
    await view.start()
    await server.start()
    return server


async def ask(server: DnsServer, name: str, rdtype: str = "A", tcp: bool = False, use_edns: int | bool = False,
              payload: int = 1232, source: str | None = None, want_dnssec: bool = False) -> dns.message.Message:
    """One query to the server with dnspython (UDP unless ``tcp``)."""
    q = dns.message.make_query(name, rdtype, use_edns=use_edns, payload=payload, want_dnssec=want_dnssec)
    if tcp:
        return await dns.asyncquery.tcp(q, "127.0.0.1", port=server.port, timeout=3, source=source)
    return await dns.asyncquery.udp(q, "127.0.0.1", port=server.port, timeout=3, source=source)


def records(msg: dns.message.Message, rdtype: str = "A", section: str = "answer") -> list[str]:
    """The rdata texts of one type in one section, sorted."""
    out = []
    for rrset in getattr(msg, section):
        if rrset.rdtype == dns.rdatatype.from_text(rdtype):
            out += [r.to_text() for r in rrset]
    return sorted(out)


def ttls(msg: dns.message.Message, section: str = "answer") -> set[int]:
    return {rrset.ttl for rrset in getattr(msg, section)}
