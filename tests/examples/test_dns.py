"""examples/dns: containers resolve catalog names through Waypost's DNS (`dns:` + `dns_search:`)."""

from __future__ import annotations

import json

import dns.message
import dns.query
import dns.rdatatype

from tests.examples.compose import instances, status, wait_for
from tests.ports import free_port


def a_records(port: int, name: str) -> set[str]:
    """A records for `name` from the DNS port the example publishes on the host's loopback."""
    answer = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=2)
    return {rr.address for rrset in answer.answer for rr in rrset if rr.rdtype == dns.rdatatype.A}


def fetch(stack, count: int) -> dict[str, int]:
    """Run the example's `client` (fetch.py → http://web:8000/): hits per web instance."""
    out = stack("run", "--rm", "client", "python3", "/app/fetch.py", "http://web:8000/", str(count))
    return json.loads(out.strip().splitlines()[-1])["instances"]


def ips(stack, service: str) -> set[str]:
    return {stack.exec(c, "hostname", "-i").split()[0] for c in stack.containers(service)}


def test_names_resolve_through_waypost_dns_and_follow_scaling(example) -> None:
    http, dns_port = free_port(), free_port()
    stack = example("dns", WAYPOST_HTTP_PORT=str(http), WAYPOST_DNS_PORT=str(dns_port))
    stack("up", "-d", "--scale", "webapp=2")
    waypost = f"http://127.0.0.1:{http}"
    wait_for(lambda: a_records(dns_port, "web.service.consul"), lambda a: a == ips(stack, "webapp"),
             what="web.service.consul = the 2 webapp containers")
    assert a_records(dns_port, "redis.service.consul") == ips(stack, "cache")

    # inside the containers, the short names go: Docker's resolver → Waypost (search service.consul)
    [first, _] = stack.containers("webapp")
    resolv = stack.exec(first, "cat", "/etc/resolv.conf")
    assert "search service.consul" in resolv
    lookup = "import socket;print(sorted({a[4][0] for a in socket.getaddrinfo('redis', 6379)}))"
    assert json.loads(stack.exec(first, "python3", "-c", lookup).replace("'", '"')) == sorted(ips(stack, "cache"))

    # the app reaches redis by name; DNS answers are shuffled so a client's requests spread
    seen = wait_for(lambda: fetch(stack, 16), lambda s: len(s) == 2, what="hits on both webapp replicas")
    assert sum(seen.values()) == 16

    # scaling up adds A records, and the new replica gets traffic
    stack("up", "-d", "--no-recreate", "--scale", "webapp=3")
    wait_for(lambda: a_records(dns_port, "web.service.consul"), lambda a: len(a) == 3 and a == ips(stack, "webapp"),
             what="three A records after --scale webapp=3")
    wait_for(lambda: fetch(stack, 20), lambda s: len(s) == 3, what="hits on all 3 replicas")

    # scaling down removes them again
    stack("up", "-d", "--no-recreate", "--scale", "webapp=1")
    wait_for(lambda: a_records(dns_port, "web.service.consul"), lambda a: a == ips(stack, "webapp"),
             what="one A record after --scale webapp=1")
    assert len(instances(status(waypost), "web")) == 1
    assert status(waypost)["dns"]["queries"] > 0
