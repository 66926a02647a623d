"""recvmmsg/sendmmsg batching: every query in a burst gets its own answer, sent to its own client."""

from __future__ import annotations

import asyncio
import socket
import time

import dns.flags
import dns.message
import dns.rcode
import pytest

from tests.dns.helpers import ask, inst, records, start_dns
from waypost.dns import CatalogView
from waypost.dns.batch import BATCH, BatchSocket, parse_sockaddr


def view_of(n: int) -> CatalogView:
    view = CatalogView()
    for s in range(n):
        view.apply(f"svc{s}", [inst(f"svc{s}-1", f"svc{s}", f"10.9.{s // 250}.{s % 250 + 1}")])
    return view


def test_batching_is_available_on_this_platform() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        assert BatchSocket.create(sock) is not None, "recvmmsg/sendmmsg via libc should load on Linux"


def test_parse_sockaddr_ipv4_and_ipv6() -> None:
    v4 = (socket.AF_INET).to_bytes(2, "little") + (5353).to_bytes(2, "big") + socket.inet_aton("10.1.2.3") + bytes(8)
    assert parse_sockaddr(v4) == ("10.1.2.3", 5353)
    v6 = ((socket.AF_INET6).to_bytes(2, "little") + (53).to_bytes(2, "big") + bytes(4)
          + socket.inet_pton(socket.AF_INET6, "fd00::7") + (0).to_bytes(4, "little"))
    assert parse_sockaddr(v6) == ("fd00::7", 53, 0, 0)


async def burst(port: int, clients: int, per_client: int, services: int) -> dict[tuple[int, int], dns.message.Message]:
    """Send every query before reading any answer, from several sockets; collect the answers.

    The sends happen on the event loop thread, so the server (same loop) reads only once the whole
    burst is queued; the answers are read in a thread while the loop serves.
    """
    socks = []
    answers: dict[tuple[int, int], dns.message.Message] = {}

    def collect() -> None:
        deadline = time.monotonic() + 5
        for c, s in enumerate(socks):
            s.settimeout(0.5)
            while len([key for key in answers if key[0] == c]) < per_client and time.monotonic() < deadline:
                try:
                    msg = dns.message.from_wire(s.recv(4096))
                except TimeoutError:
                    break
                answers[(c, msg.id)] = msg

    try:
        for _ in range(clients):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            s.connect(("127.0.0.1", port))
            socks.append(s)
        for c, s in enumerate(socks):
            for k in range(per_client):
                q = dns.message.make_query(f"svc{(c * per_client + k) % services}.service.consul", "A")
                q.id = c * per_client + k
                s.send(q.to_wire())
        await asyncio.to_thread(collect)
    finally:
        for s in socks:
            s.close()
    return answers


@pytest.mark.parametrize("batch_udp", [True, False], ids=["batched", "datagram"])
async def test_a_burst_larger_than_one_batch_is_answered_query_by_query(batch_udp: bool) -> None:
    services = 50
    server = await start_dns(view_of(services), batch_udp=batch_udp)
    try:
        clients, per_client = 5, 3 * BATCH // 5 + 7  # more than two full batches in all, from 5 sources
        # the burst is sent synchronously, so the server only reads once all of it is queued
        answers = await burst(server.port, clients, per_client, services)
        assert len(answers) == clients * per_client, "every query answered once, to the socket that sent it"
        for (_client, qid), msg in answers.items():
            s = qid % services
            assert msg.rcode() == dns.rcode.NOERROR
            assert msg.question[0].name.to_text() == f"svc{s}.service.consul."
            assert records(msg) == [f"10.9.{s // 250}.{s % 250 + 1}"]
    finally:
        await server.stop()


async def test_slow_path_answers_reach_an_ipv6_client() -> None:
    """Slow-path answers (here REFUSED for recursion) go back to the client's parsed address."""
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback on this machine (enable it: sysctl net.ipv6.conf.lo.disable_ipv6=0)")
    server = await start_dns(view_of(1), listen=("::1", 0))
    try:
        def exchange(name: str, rdtype: str) -> dns.message.Message:
            with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
                s.settimeout(3)
                s.connect(("::1", server.port))
                s.send(dns.message.make_query(name, rdtype).to_wire())
                return dns.message.from_wire(s.recv(4096))

        refused = await asyncio.to_thread(exchange, "example.org", "A")
        nodata = await asyncio.to_thread(exchange, "svc0.service.consul", "TXT")
        assert refused.rcode() == dns.rcode.REFUSED
        assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    finally:
        await server.stop()


async def test_an_answer_bigger_than_the_batch_buffer_still_goes_out_whole() -> None:
    """EDNS lets a client take up to 64 KB over UDP; answers beyond the 4 KB batch slots are sent alone."""
    view = CatalogView()
    view.apply("huge", [inst(f"h-{i}", "huge", f"10.8.{i // 250}.{i % 250 + 1}", node=f"n{i}") for i in range(600)])
    server = await start_dns(view)
    try:
        msg = await ask(server, "huge.service.consul", use_edns=0, payload=65000)
        assert len(msg.to_wire()) > 4096
        assert len(records(msg)) == 600 and not msg.flags & dns.flags.TC
    finally:
        await server.stop()
