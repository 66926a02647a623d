"""Fuzzing: random and mutated packets over real UDP/TCP, then the server must still answer right.

Hypothesis drives a synchronous test; the server runs in a private event loop the test steps.
Every packet that has a query header (12+ bytes, QR clear) must get a well-formed reply with the
same ID; anything else must be dropped; no packet may raise inside the server.
"""

from __future__ import annotations

import asyncio
import socket
import struct

import dns.message
import dns.rcode
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.dns.helpers import ask, inst, records, start_dns
from waypost.dns import CatalogView


def seeds() -> list[bytes]:
    out = []
    for name, rdtype, edns in [("web.service.consul", "A", False), ("web.service.consul", "SRV", True),
                               ("_web._tcp.service.consul", "SRV", False), ("nope.service.consul", "AAAA", True),
                               ("0a000001.addr.consul", "A", False), ("example.org", "A", False)]:
        q = dns.message.make_query(name, rdtype, use_edns=0 if edns else False)
        out.append(q.to_wire())
    return out


SEEDS = seeds()


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "truncate", "extend", "counts"]))
        if kind == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[draw(st.integers(0, len(data))):]
        elif kind == "extend":
            data += draw(st.binary(max_size=40))
        elif kind == "counts" and len(data) >= 12:
            i = draw(st.sampled_from([4, 6, 8, 10]))
            data[i:i + 2] = struct.pack("!H", draw(st.sampled_from([0, 1, 2, 255, 65535])))
    return bytes(data)


packets = st.one_of(st.binary(max_size=600), mutated(), mutated())


@pytest.fixture(scope="module")
def fuzz_target():
    """A server in its own event loop, plus a UDP socket to hit it with."""
    loop = asyncio.new_event_loop()
    view = CatalogView()
    view.apply("web", [inst(f"web-{i}", "web", f"10.0.0.{i}", 80 + i, node=f"n{i}") for i in range(1, 4)])
    server = loop.run_until_complete(start_dns(view=view))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.connect(("127.0.0.1", server.port))
    yield loop, server, sock
    sock.close()
    loop.run_until_complete(server.stop())
    loop.close()


async def _exchange(loop: asyncio.AbstractEventLoop, sock: socket.socket, packet: bytes, wait: float) -> bytes | None:
    while True:  # drain a late reply to an earlier packet
        try:
            sock.recv(65535)
        except BlockingIOError:
            break
    await loop.sock_sendall(sock, packet)
    try:
        return await asyncio.wait_for(loop.sock_recv(sock, 65535), wait)
    except TimeoutError:
        return None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                    HealthCheck.too_slow])
@given(packet=packets)
def test_fuzzed_packets_are_answered_or_dropped(fuzz_target, packet: bytes) -> None:
    loop, server, sock = fuzz_target
    expect_reply = len(packet) >= 12 and not packet[2] & 0x80
    if not packet:
        return  # a zero-length datagram can't be told apart from nothing
    reply = loop.run_until_complete(_exchange(loop, sock, packet, 2.0 if expect_reply else 0.05))
    assert server.stats.events["internal_error"] == 0
    if not expect_reply:
        assert reply is None
        return
    assert reply is not None, packet
    assert reply[:2] == packet[:2] and reply[2] & 0x80
    msg = dns.message.from_wire(reply, ignore_trailing=False)  # every reply is well-formed
    assert msg.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.FORMERR, dns.rcode.NOTIMP,
                           dns.rcode.REFUSED, dns.rcode.BADVERS)


def test_server_answers_correctly_after_fuzzing(fuzz_target) -> None:
    loop, server, _sock = fuzz_target

    async def check() -> None:
        # TCP garbage too: random streams on fresh connections, then a real query
        for blob in (b"\xff" * 70000, b"\x00\x00", b"\x00\x0c" + b"\x01" * 12, bytes(range(256)) * 3):
            _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(blob)
            await writer.drain()
            writer.close()
        for tcp in (False, True):
            msg = await ask(server, "web.service.consul", tcp=tcp)
            assert records(msg) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
            srv = await ask(server, "web.service.consul", "SRV", tcp=tcp, use_edns=0)
            assert len(records(srv, "SRV")) == 3

    loop.run_until_complete(check())
    assert server.stats.events["internal_error"] == 0
    # random query types must not turn into unbounded metric labels
    from waypost.dns.metrics import KNOWN_TYPES

    types = {qtype for qtype, _rcode in server.stats.by_type_rcode()}
    assert len(types) <= len(KNOWN_TYPES) + 2
