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
    assert len(records(msg, "SRV")) == 8  # the SRV records fit in 512 bytes, all their glue doesn't
    assert not msg.flags & dns.flags.TC and len(msg.to_wire()) <= 512
    # the glue that fits is kept: for the first SRV targets, in answer order
    targets = [r.target.to_text() for rrset in msg.answer for r in rrset]
    glue = [rrset.name.to_text() for rrset in msg.additional]
    assert 0 < len(glue) < 8 and glue == targets[:len(glue)]
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


def vast_view() -> CatalogView:
    """5,000 instances (80 KB of A records) and 1,200 whose SRV records fit 64 KB but their glue doesn't."""
    view = CatalogView()
    view.apply("vast", [inst(f"v-{i}", "vast", f"10.{100 + i // 50000}.{i // 200 % 250}.{i % 200 + 1}", node="")
                        for i in range(5000)])
    view.apply("wide", [inst(f"w-{i}", "wide", f"10.90.{i // 200}.{i % 200 + 1}", node=f"n{i}",
                             node_address="10.91.0.1") for i in range(1200)])
    return view


async def test_tcp_answers_over_64k_are_trimmed_not_dropped(make_dns, caplog) -> None:
    server = await make_dns(vast_view())
    for rdtype, use_edns in (("A", False), ("A", 0), ("ANY", 0), ("SRV", False)):
        msg = await ask(server, "vast.service.consul", rdtype, tcp=True, use_edns=use_edns)
        got = len(msg.answer[0])
        assert msg.rcode() == dns.rcode.NOERROR and 1000 < got < 5000, (rdtype, got)
        assert len(msg.to_wire()) <= 65535
        # no TC over TCP: the client has nowhere bigger to ask, and some resolvers drop such answers
        assert not msg.flags & dns.flags.TC
    # the warning names the knob only where it helps: --a-record-limit caps A/AAAA, not SRV
    warnings = [r.getMessage() for r in caplog.records if "dns tcp" in r.getMessage()]
    a_warning = next(w for w in warnings if "type A " in w)
    srv_warning = next(w for w in warnings if "type SRV " in w)
    assert "--a-record-limit" in a_warning and "--a-record-limit" not in srv_warning
    # a huge EDNS buffer over UDP still gets a datagram that can be sent (<= 65,507 bytes), with TC
    udp = await ask(server, "vast.service.consul", use_edns=0, payload=65535)
    assert udp.flags & dns.flags.TC and len(udp.to_wire()) <= 65507


async def test_tcp_keeps_every_srv_record_and_drops_glue_first(make_dns) -> None:
    server = await make_dns(vast_view())
    msg = await ask(server, "wide.service.consul", "SRV", tcp=True)
    assert len(msg.answer[0]) == 1200 and not msg.flags & dns.flags.TC
    targets = [r.target.to_text() for r in msg.answer[0]]
    glue = [rrset.name.to_text() for rrset in msg.additional]
    assert 0 < len(glue) < 1200 and glue == targets[:len(glue)]
    assert len(msg.to_wire()) <= 65535


async def test_dig_gets_a_big_srv_answer_over_tcp(make_dns) -> None:
    dig = require_tool("dig", "dnsutils")
    server = await make_dns(vast_view())
    proc = await asyncio.create_subprocess_exec(
        dig, "+time=3", "+tries=1", "@127.0.0.1", "-p", str(server.port), "vast.service.consul", "SRV",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out = (await asyncio.wait_for(proc.communicate(), 20))[0].decode()
    assert "Truncated, retrying in TCP mode" in out and "status: NOERROR" in out, out[-2000:]
    assert "timed out" not in out


def with_opt(packet: bytes, do: bool = False) -> bytes:
    """``packet`` with one EDNS(0) OPT record appended (ARCOUNT set to 1)."""
    opt = b"\x00" + struct.pack("!HHBBHH", 41, 1232, 0, 0, 0x8000 if do else 0, 0)
    return packet[:10] + b"\x00\x01" + packet[12:] + opt


async def test_errors_to_edns_queries_carry_an_opt_record(make_dns) -> None:
    server = await make_dns(big_view())
    cases = {
        "opcode NOTIFY": (header(flags=0x2000) + QUESTION, dns.rcode.NOTIMP),
        "opcode UPDATE": (header(flags=0x2800) + QUESTION, dns.rcode.NOTIMP),
        "two questions": (header(qd=2) + QUESTION + QUESTION, dns.rcode.FORMERR),
        "no question": (header(qd=0), dns.rcode.FORMERR),
    }
    for label, (packet, rcode) in cases.items():
        for do in (False, True):
            msg = dns.message.from_wire(await udp_exchange(server.port, with_opt(packet, do)))
            assert msg.rcode() == rcode, label
            assert msg.edns == 0, label  # RFC 6891 7: an OPT in the request means one in the response
            assert bool(msg.ednsflags & dns.flags.DO) == do, label
        plain = dns.message.from_wire(await udp_exchange(server.port, packet))
        assert plain.rcode() == rcode and plain.edns == -1, label
