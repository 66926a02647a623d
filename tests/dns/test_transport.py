"""UDP size limits, TC → TCP, and bad packets (answered per RFC 1035 or dropped, never fatal)."""

from __future__ import annotations

import asyncio
import socket
import struct

import dns.asyncquery
import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass

from tests.dns.helpers import ask, inst, records
from tests.tooling import require_tool
from waypost.dns import CatalogView


def big_view(n: int = 40) -> CatalogView:
    view = CatalogView()
    view.apply("big", [inst(f"big-{i}", "big", f"10.5.{i // 200}.{i % 200 + 1}", node=f"n{i}") for i in range(n)])
    view.apply("small", [inst("s-1", "small", "10.6.0.1")])
    return view


def query_bytes(name: str = "small.service.consul", rdtype: str = "A", qid: int = 0x4242) -> bytes:
    q = dns.message.make_query(name, rdtype)
    q.id = qid
    return q.to_wire()


async def udp_exchange(port: int, payload: bytes, timeout: float = 0.5) -> bytes | None:
    """Send one datagram and return the reply, or None when nothing comes back in time."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect(("127.0.0.1", port))
        await loop.sock_sendall(sock, payload)
        try:
            return await asyncio.wait_for(loop.sock_recv(sock, 65535), timeout)
        except TimeoutError:
            return None


async def test_udp_without_edns_is_cut_to_512_with_tc(make_dns) -> None:
    server = await make_dns(big_view())
    msg = await ask(server, "big.service.consul")
    assert msg.flags & dns.flags.TC
    assert msg.question[0].name.to_text() == "big.service.consul."  # question kept
    wire = await udp_exchange(server.port, query_bytes("big.service.consul"))
    assert wire is not None and len(wire) <= 512
    full = await ask(server, "big.service.consul", tcp=True)
    assert not full.flags & dns.flags.TC and len(records(full)) == 40


async def test_edns_buffer_size_is_honoured(make_dns) -> None:
    server = await make_dns(big_view())
    roomy = await ask(server, "big.service.consul", use_edns=0, payload=4096)
    assert not roomy.flags & dns.flags.TC and len(records(roomy)) == 40
    tight = await ask(server, "big.service.consul", use_edns=0, payload=600)
    assert tight.flags & dns.flags.TC and 0 < len(records(tight)) < 40
    assert len(tight.to_wire()) <= 600 and tight.edns == 0


async def test_srv_drops_additional_before_truncating(make_dns) -> None:
    view = CatalogView()
    view.apply("mid", [inst(f"mid-{i}", "mid", f"10.7.0.{i + 1}", node=f"node{i}") for i in range(8)])
    server = await make_dns(view)
    msg = await ask(server, "mid.service.consul", "SRV")
    assert len(records(msg, "SRV")) == 8  # the SRV records fit in 512 bytes, their glue doesn't
    assert not msg.flags & dns.flags.TC and not msg.additional
    full = await ask(server, "mid.service.consul", "SRV", tcp=True)
    assert len(records(full, "A", "additional")) == 8


async def test_dig_retries_over_tcp_after_tc(make_dns) -> None:
    dig = require_tool("dig", "dnsutils")
    server = await make_dns(big_view())
    proc = await asyncio.create_subprocess_exec(
        dig, "+noedns", "+time=3", "+tries=1", "@127.0.0.1", "-p", str(server.port), "big.service.consul", "A",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out = (await asyncio.wait_for(proc.communicate(), 20))[0].decode()
    assert "Truncated, retrying in TCP mode" in out, out
    answers = [line for line in out.splitlines() if "\tIN\tA\t" in line and line.startswith("big.")]
    assert len(answers) == 40, out


async def test_tcp_pipelined_queries_on_one_connection(make_dns) -> None:
    server = await make_dns(big_view())
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        for qid in range(1, 6):
            wire = query_bytes("small.service.consul", qid=qid)
            writer.write(struct.pack("!H", len(wire)) + wire)
        await writer.drain()
        ids = []
        for _ in range(5):
            (length,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 3))
            msg = dns.message.from_wire(await reader.readexactly(length))
            ids.append(msg.id)
            assert records(msg) == ["10.6.0.1"]
        assert sorted(ids) == [1, 2, 3, 4, 5]
    finally:
        writer.close()


def header(qid: int = 0x5151, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


QUESTION = b"\x05small\x07service\x06consul\x00\x00\x01\x00\x01"


async def test_bad_packets_get_the_right_rcode(make_dns) -> None:
    server = await make_dns(big_view())
    port = server.port
    cases = {
        "truncated question": (header() + QUESTION[:9], dns.rcode.FORMERR),
        "two questions": (header(qd=2) + QUESTION + QUESTION, dns.rcode.FORMERR),
        "no question": (header(qd=0), dns.rcode.FORMERR),
        "claims an answer it lacks": (header(an=1) + QUESTION, dns.rcode.FORMERR),
        "label over 63 bytes": (header() + b"\x50" + b"a" * 80 + b"\x00\x00\x01\x00\x01", dns.rcode.FORMERR),
        "opcode STATUS": (header(flags=0x1000) + QUESTION, dns.rcode.NOTIMP),
        "opcode NOTIFY": (header(flags=0x2000) + QUESTION, dns.rcode.NOTIMP),
        "opcode UPDATE": (header(flags=0x2800) + QUESTION, dns.rcode.NOTIMP),
        "class CHAOS": (header() + QUESTION[:-2] + b"\x00\x03", dns.rcode.REFUSED),
        "class 77": (header() + QUESTION[:-2] + b"\x00\x4d", dns.rcode.REFUSED),
        "zone transfer": (header() + QUESTION[:-4] + b"\x00\xfc\x00\x01", dns.rcode.REFUSED),
    }
    for label, (packet, rcode) in cases.items():
        wire = await udp_exchange(port, packet)
        assert wire is not None, label
        assert wire[:2] == b"\x51\x51" and wire[2] & 0x80, label  # ID echoed, QR set
        assert wire[3] & 0x0F == rcode, (label, wire[3] & 0x0F)
        assert (wire[2] >> 3) & 0x0F == (packet[2] >> 3) & 0x0F, label  # opcode echoed
    # header-less garbage and responses are dropped silently
    for packet in (b"", b"\x00", b"0123456789a", header(flags=0x8180) + QUESTION):
        assert await udp_exchange(port, packet, timeout=0.2) is None
    # and the server still answers normally, on UDP and TCP
    assert records(await ask(server, "small.service.consul")) == ["10.6.0.1"]
    assert records(await ask(server, "small.service.consul", tcp=True)) == ["10.6.0.1"]


async def test_edns_version_1_gets_badvers(make_dns) -> None:
    server = await make_dns(big_view())
    q = dns.message.make_query("small.service.consul", "A", use_edns=1)
    wire = await udp_exchange(server.port, q.to_wire())
    msg = dns.message.from_wire(wire)
    assert msg.rcode() == dns.rcode.BADVERS


async def test_edns_options_are_ignored_not_rejected(make_dns) -> None:
    server = await make_dns(big_view())
    q = dns.message.make_query("small.service.consul", "A", use_edns=0,
                               options=[dns.edns.GenericOption(10, b"\x01\x02\x03\x04\x05\x06\x07\x08")])
    msg = await dns.asyncquery.udp(q, "127.0.0.1", port=server.port, timeout=3)
    assert records(msg) == ["10.6.0.1"]


async def test_tcp_garbage_closes_only_that_connection(make_dns) -> None:
    server = await make_dns(big_view())
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"\x00\x03abc")  # a 3-byte "message": no header
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 3) == b""  # closed
    writer.close()
    # a query split across writes is reassembled
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    wire = query_bytes()
    framed = struct.pack("!H", len(wire)) + wire
    for i in range(0, len(framed), 5):
        writer.write(framed[i:i + 5])
        await writer.drain()
        await asyncio.sleep(0.01)
    (length,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 3))
    assert records(dns.message.from_wire(await reader.readexactly(length))) == ["10.6.0.1"]
    writer.close()


async def test_class_any_question_is_answered(make_dns) -> None:
    server = await make_dns(big_view())
    q = dns.message.make_query("small.service.consul", "A", rdclass=dns.rdataclass.ANY)
    msg = await dns.asyncquery.udp(q, "127.0.0.1", port=server.port, timeout=3)
    assert msg.rcode() == dns.rcode.NOERROR and records(msg) == ["10.6.0.1"]
    assert server.stats.by_type_rcode()[("A", "NOERROR")] >= 1
