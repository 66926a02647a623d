"""Malformed HTTP bodies, query strings, paths and methods to every endpoint of the embedded catalog.

A real ``waypost catalog`` process with a data dir; requests go over raw loopback sockets so the
bytes are exactly what the test says (bad percent-encoding, invalid UTF-8, junk request lines).
Endpoints are enumerated from the aiohttp router, so new endpoints are fuzzed automatically.

For every request: no 500 (except Consul's documented ``No path to datacenter``), every 4xx is a
plain-text body naming the problem (except Consul's bodiless KV 404 and the agent health endpoints'
JSON), the process keeps serving, and what was stored before the barrage (services, checks, a
foreign node, KV entries) is neither lost nor altered — also after a restart on the same data dir.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.ports import free_port
from waypost.server.app import CatalogServer

AGENT_NODE = "fz-agent-node-q7"
FUZZ = settings(max_examples=120, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


# ---- the routes, from the router itself ------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    method: str
    template: str  # "/v1/kv/{key}"; plain routes have no placeholder
    pattern: re.Pattern[str] | None = None  # what the router matches a (decoded) path with

    def matches(self, path: str) -> bool:
        return bool(self.pattern.fullmatch(path)) if self.pattern is not None else path == self.template

    @property
    def params(self) -> list[str]:
        return re.findall(r"\{(\w+)\}", self.template)

    def target(self, value: bytes) -> bytes:
        """The request path with every placeholder replaced by `value` (already encoded)."""
        out = self.template.encode()
        for name in self.params:
            out = out.replace(b"{" + name.encode() + b"}", value)
        return out


def discover_routes() -> list[Route]:
    routes = []
    for route in CatalogServer(port=0).app.router.routes():
        info = route.resource.get_info()
        routes.append(Route(route.method, info.get("formatter") or info["path"], info.get("pattern")))
    return routes


ROUTES = discover_routes()
WRITE_ROUTES = [r for r in ROUTES if r.method in ("PUT", "POST", "DELETE")]
assert len(ROUTES) >= 30 and WRITE_ROUTES, ROUTES


# ---- a raw HTTP/1.1 client -----------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2:]
    return out


def http(port: int, method: str, target: bytes, body: bytes = b"", headers: dict[str, str] | None = None,
         raw_head: bytes | None = None) -> Reply:
    """One request on its own connection (Connection: close); `raw_head` replaces the whole head."""
    if raw_head is None:
        lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close",
                 b"Content-Length: " + str(len(body)).encode()]
        lines += [f"{k}: {v}".encode() for k, v in (headers or {}).items()]
        raw_head = b"\r\n".join(lines) + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        try:
            sock.sendall(raw_head + body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered (e.g. 413) before the whole body was sent: read that answer
        data = b""
        while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
            data += chunk
        head, _, payload = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        assert status_line.startswith("HTTP/1."), f"not an HTTP answer: {data[:200]!r}"
        hdrs = {}
        for line in header_lines:
            key, _, value = line.partition(":")
            hdrs[key.strip().lower()] = value.strip()
        chunked = hdrs.get("transfer-encoding", "").lower() == "chunked"
        length = int(hdrs.get("content-length", "-1"))
        # read exactly one answer: the server may keep the connection open after it
        while not (0 <= length <= len(payload) or (chunked and payload.endswith(b"0\r\n\r\n"))):
            chunk = sock.recv(65536)
            if not chunk:
                break
            payload += chunk
    if chunked:
        payload = _dechunk(payload)
    elif length >= 0:
        payload = payload[:length]
    return Reply(int(status_line.split()[1]), hdrs, payload)


# ---- the catalog process ---------------------------------------------------------------------------

SEED_SERVICES = [
    {"ID": "seed-web-1", "Name": "seed-web", "Address": "10.1.2.3", "Port": 8080, "Tags": ["a", "b"],
     "Meta": {"team": "core"}, "Check": {"CheckID": "seed-check-1", "TTL": "1h", "Status": "passing"}},
    {"ID": "seed-db-1", "Name": "seed-db", "Address": "10.1.2.4", "Port": 5432},
]
SEED_NODE = {"Node": "seed-ext-node", "Address": "10.9.9.9", "NodeMeta": {"rack": "r1"},
             "Service": {"ID": "seed-ext-svc", "Service": "seed-ext", "Port": 6379}}
SEED_KV = {"seed/alpha": (b"one", 0), "seed/beta/gamma": (bytes(range(256)), 42)}


class Catalog:
    """`waypost catalog` in a subprocess on a free loopback port, seeded with known state."""

    def __init__(self, data_dir: str, log_path: str) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.snapshot: dict[str, Any] = {}

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WAYPOST_")}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "waypost", "catalog", "--listen", f"127.0.0.1:{self.port}",
                 "--data-dir", self.data_dir, "--node", AGENT_NODE],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"catalog exited: {self.log()}"
            try:
                if self.get("/v1/status/leader").status == 200:
                    return
            except OSError:
                time.sleep(0.05)
        pytest.fail(f"catalog did not answer within 30 s: {self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()[-4000:]

    def request(self, method: str, target: bytes | str, body: bytes = b"", **kw: Any) -> Reply:
        return http(self.port, method, target.encode() if isinstance(target, str) else target, body, **kw)

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def get_json(self, path: str) -> Any:
        reply = self.get(path)
        assert reply.status == 200, (path, reply)
        return json.loads(reply.body)

    def seed(self) -> None:
        for svc in SEED_SERVICES:
            assert self.request("PUT", "/v1/agent/service/register", json.dumps(svc).encode()).status == 200
        assert self.request("PUT", "/v1/catalog/register", json.dumps(SEED_NODE).encode()).status == 200
        for key, (value, flags) in SEED_KV.items():
            assert self.request("PUT", f"/v1/kv/{key}?flags={flags}", value).text == "true"
        self.snapshot = self.state()

    def state(self) -> dict[str, Any]:
        """The seeded records, as the API shows them (including their indexes)."""
        services = self.get_json("/v1/agent/services")
        checks = self.get_json("/v1/agent/checks")
        return {
            "services": {sid: services.get(sid) for sid in ("seed-web-1", "seed-db-1")},
            "checks": checks.get("seed-check-1"),
            "node": self.get_json("/v1/catalog/node/seed-ext-node"),
            "kv": self.get_json("/v1/kv/seed/?recurse"),
            "catalog": self.get_json("/v1/catalog/service/seed-web"),
        }

    def assert_intact(self) -> None:
        """Still running, still serving, and the seeded state is exactly as it was."""
        assert self.proc is not None and self.proc.poll() is None, f"the catalog died: {self.log()}"
        assert self.state() == self.snapshot
        assert "Traceback" not in self.log(), self.log()


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Catalog]:
    base = tmp_path_factory.mktemp("catalog-input")
    cat = Catalog(str(base / "data"), str(base / "catalog.log"))
    cat.start()
    try:
        cat.seed()
        yield cat
    finally:
        cat.stop()


# ---- what every answer must look like -------------------------------------------------------------


def check_reply(route: Route, reply: Reply, what: Any) -> None:
    if reply.status == 500:
        assert reply.text == "No path to datacenter", (route, what, reply)
        return
    assert reply.status < 500, (route, what, reply)
    if reply.status < 400:
        return
    if route.template.startswith("/v1/agent/health/service/"):
        return  # Consul answers these with the JSON health or a status word, on 404/429/503 too
    if route.template == "/v1/kv/{key}" and route.method == "GET" and reply.status == 404 and not reply.body:
        return  # Consul's "no such key" is a bodiless 404
    assert reply.headers.get("content-type", "").startswith("text/plain"), (route, what, reply)
    assert reply.text.strip(), (route, what, reply)


# ---- strategies ------------------------------------------------------------------------------------

HUGE = "h" * 300_000
NASTY_TEXT = ["", " ", "\x00", "\x1b[31m", "line\nbreak", "\ud800", "\udfff\ud800", "\u202e", "ü", "☕", "%",
              "%ZZ", "../../etc", "$(id)", "'", '"', "\\", "{{ template }}", HUGE]
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=2**63, max_value=2**80),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
                         st.sampled_from(NASTY_TEXT))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
durations = st.one_of(st.sampled_from(["10s", "0s", "-5s", "1ns", "99999999999999999999h", "1d", "", "١٠s",
                                       "2562047h47m16.854775807s", "2562048h"]), json_scalars)
# check targets stay on loopback or are unusable: the fuzzer must not make the catalog probe the world
check_fields = st.fixed_dictionaries({}, optional={
    "CheckID": json_scalars, "Name": json_scalars, "TTL": durations, "Interval": durations,
    "Timeout": durations, "Status": st.sampled_from(["passing", "warning", "critical", "bogus", "", 1]),
    "HTTP": st.sampled_from(["http://127.0.0.1:1/x", "not a url", "http://[::1", "http://127.0.0.1:1/\n", 5]),
    "TCP": st.sampled_from(["127.0.0.1:1", "nohostport", "[::1]:99999", ":1", "", None]),
    "Header": json_values, "DeregisterCriticalServiceAfter": durations, "ServiceID": json_scalars,
    "Args": st.sampled_from([["sh", "-c", "id"], "id"]), "Definition": json_values,
})
consul_objects = st.fixed_dictionaries({}, optional={
    "Name": json_scalars, "ID": json_scalars, "Service": st.one_of(json_scalars, json_values),
    "Port": st.one_of(json_scalars, st.sampled_from([-1, 65536, 2**64, 1.5])), "Address": json_scalars,
    "Tags": st.one_of(json_values, st.lists(st.sampled_from(NASTY_TEXT), max_size=3)), "Meta": json_values,
    "Weights": json_values, "TaggedAddresses": json_values, "Check": st.one_of(check_fields, json_values),
    "Checks": st.one_of(st.lists(check_fields, max_size=3), json_values), "Node": json_scalars,
    "Datacenter": st.sampled_from(["dc1", "elsewhere", "", 7]), "NodeMeta": json_values,
    "SkipNodeUpdate": json_scalars, "CheckID": json_scalars, "ServiceID": json_scalars,
    "Status": json_scalars, "Output": json_scalars, "Kind": st.sampled_from(["", "connect-proxy", 3]),
    "EnableTagOverride": json_scalars,
}).map(lambda d: {"ID": "fz-" + str(d.get("ID"))[:40], **d} if "Name" in d else d)

RAW_BODIES = [
    b"", b" ", b"\xff\xfe\xfd", b'{"Name": "\xff"}', b"[" * 5000 + b"]" * 5000, b'{"a":' * 3000 + b"1" + b"}" * 3000,
    b'{"Name":"x","Port":1e400}', b'{"Name":"x","Port":NaN}', b'{"Name":"x","Port":-Infinity}',
    b'{"Name":"x","Port":' + b"9" * 5000 + b"}", b'{"Name":"\\ud800","ID":"fz-sur"}', b'{"Name":"x"',
    b'{"Name":"x"}{"Name":"y"}', b"null", b"true", b"42", b'"string"', b"[]", b"{}", b"\x00" * 64,
    json.dumps({"Name": "fz-huge", "ID": "fz-huge", "Tags": ["t" * 1_000_000]}).encode(),
    json.dumps({"Node": "fz\u0000node", "Address": "10.0.0.1"}).encode(),
]
bodies = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(RAW_BODIES),
    json_values.map(lambda v: json.dumps(v).encode()),
    consul_objects.map(lambda v: json.dumps(v).encode()),
    st.text(max_size=50).map(lambda t: t.encode("utf-8", "surrogatepass")),
)

PARAM_VALUES = ["", "x", "a/b/c", "%", "%ZZ", "%00", "%ED%A0%80", "%FF%FE", "ü", "☕", "\u202e", "..%2F..%2F",
                "p" * 5000, "$(id)", "a b", "a?b", "a#b", "x;y", "any", "passing", "critical"]
param_texts = st.one_of(st.sampled_from(PARAM_VALUES), st.text(max_size=20))


@st.composite
def path_values(draw: st.DrawFn, destructive: bool) -> bytes:
    """A path parameter, always starting with "fz" so it can never name seeded state."""
    text = "fz" + draw(param_texts)
    if destructive:
        assume(".." not in text and "%2e" not in text.lower())  # no traversal out of the fz namespace
    encoding = draw(st.sampled_from(["quoted", "raw-percent", "utf8"]))
    if encoding == "quoted":
        return quote(text, safe="").encode()
    if encoding == "raw-percent":  # keeps broken %-escapes as they are
        return quote(text, safe="%/").encode("ascii")
    # raw UTF-8 (and lone surrogates) on the wire; only what would break the request line is escaped
    return "".join(quote(c, safe="", errors="surrogatepass") if ord(c) <= 0x20 or c in "?#\x7f" else c
                   for c in text).encode("utf-8", "surrogatepass")


QUERY_NAMES = ["index", "wait", "filter", "token", "dc", "recurse", "keys", "separator", "cas", "flags", "acquire",
               "release", "replace-existing-checks", "enable", "reason", "note", "passing", "tag", "node-meta",
               "pretty", "raw", "hash", "format", "near", "stale", "consistent", "cached", "ns", "partition"]
BAD_VALUES = {
    # no small valid index: a valid index at or below the catalog's would (correctly) block for minutes
    "index": ["-1", "abc", "1.5", "", "0x10", "1e3", " 1", "1_0", "٣", "18446744073709551616", "18446744073709551615",
              "99999999999", "0"],
    "wait": ["forever", "99999h", "-1s", "0", "", "1d", "1e9s", "9" * 400 + "h", "1ms", "5", "١s"],
    "filter": ["", "(", "((((" * 50, "Service ==", "Service == \"x\" and", "not not not", "Meta.x matches \"(\"",
               "Service in Tags", "\x00", "%", "ServiceName == \"seed-web\"", "Checks.Status == passing or"],
    "cas": ["-1", "abc", "0", "18446744073709551616"],
    "flags": ["-1", "abc", "18446744073709551616", "1.0"],
    "enable": ["", "maybe", "TRUE", "1", "0"],
    "dc": ["dc1", "elsewhere", "", "%"],
    "node-meta": ["nocolon", ":", "a:b:c", ""],
}
query_values = st.one_of(st.sampled_from(sum(BAD_VALUES.values(), [])), st.text(max_size=20))


@st.composite
def query_strings(draw: st.DrawFn) -> bytes:
    pairs = []
    for _ in range(draw(st.integers(1, 6))):
        name = draw(st.one_of(st.sampled_from(QUERY_NAMES), st.text(max_size=6)))
        if name in BAD_VALUES:
            value = draw(st.sampled_from(BAD_VALUES[name]))
        else:
            value = draw(query_values)
        if name == "index" or name == "hash":
            value = draw(st.sampled_from(BAD_VALUES["index"]))
        pairs.append((name, value, draw(st.booleans())))
    if draw(st.booleans()):
        pairs.append(pairs[0])  # repeated parameter
    parts = []
    for name, value, encoded in pairs:
        if encoded:
            parts.append(quote(name, safe="", errors="surrogatepass") + "=" + quote(value, safe="",
                                                                                   errors="surrogatepass"))
        else:  # broken %-escapes, raw UTF-8, bare names
            parts.append(name if value == "" and draw(st.booleans()) else f"{name}={value}")
    raw = "&".join(parts).replace(" ", "%20").replace("#", "%23")
    return raw.encode("utf-8", "surrogatepass").replace(b"\r", b"%0D").replace(b"\n", b"%0A")


KNOWN_QUERIES = [
    b"index=-1", b"index=abc", b"index=%20", b"index=1_0", b"index=%D9%A3", b"index=18446744073709551616",
    b"index=99999999999&wait=forever", b"index=99999999999&wait=99999h", b"index=99999999999&wait=" + b"9" * 400 + b"h",
    b"wait=-5s", b"wait=1e9s", b"filter=" + b"(" * 200, b"filter=%ZZ", b"filter=Service%20==", b"filter=%FF%FE",
    b"filter=\xff", b"dc=elsewhere", b"dc=%", b"recurse&recurse=false&recurse=maybe", b"passing=maybe",
    b"cas=-1", b"cas=abc", b"flags=99999999999999999999999", b"enable=maybe", b"enable", b"node-meta=nocolon",
    b"tag=%00&tag=\xc3\xbc", b"%", b"%%%", b"=&=&&", b"a=%G1", b"\xff\xfe=\xfd", b"pretty&pretty=1", b"token=%FF",
    b"keys&separator=%00", b"acquire=x&release=y", b"hash=abc&wait=1ms", b"replace-existing-checks=%FF",
]


# ---- the barrage -----------------------------------------------------------------------------------


@pytest.mark.parametrize("body", RAW_BODIES, ids=range(len(RAW_BODIES)))
def test_known_bad_bodies_to_every_write_endpoint(catalog: Catalog, body: bytes) -> None:
    for route in WRITE_ROUTES:
        target = route.target(b"fz-known") if route.params else route.target(b"")
        check_reply(route, catalog.request(route.method, target, body), body[:200])
    catalog.assert_intact()


@pytest.mark.parametrize("query", KNOWN_QUERIES, ids=range(len(KNOWN_QUERIES)))
def test_known_bad_query_strings_to_every_endpoint(catalog: Catalog, query: bytes) -> None:
    for route in ROUTES:
        target = route.target(b"fz-known") if route.params else route.target(b"")
        check_reply(route, catalog.request(route.method, target + b"?" + query), query)
    catalog.assert_intact()


@FUZZ
@given(route=st.sampled_from(WRITE_ROUTES), data=st.data(), body=bodies)
def test_malformed_bodies_to_every_write_endpoint(catalog: Catalog, route: Route, data: st.DataObject,
                                                  body: bytes) -> None:
    target = route.target(data.draw(path_values(destructive=True))) if route.params else route.target(b"")
    reply = catalog.request(route.method, target, body)
    check_reply(route, reply, body[:200])


@FUZZ
@given(route=st.sampled_from(ROUTES), data=st.data(), query=query_strings())
def test_malformed_query_strings_to_every_endpoint(catalog: Catalog, route: Route, data: st.DataObject,
                                                   query: bytes) -> None:
    destructive = route.method != "GET"
    target = route.target(data.draw(path_values(destructive))) if route.params else route.target(b"")
    reply = catalog.request(route.method, target + b"?" + query)
    check_reply(route, reply, query)


@FUZZ
@given(route=st.sampled_from([r for r in ROUTES if r.method == "GET"]), data=st.data(), body=bodies)
def test_bodies_sent_to_read_endpoints_are_ignored_or_refused(catalog: Catalog, route: Route, data: st.DataObject,
                                                             body: bytes) -> None:
    target = route.target(data.draw(path_values(False))) if route.params else route.target(b"")
    check_reply(route, catalog.request("GET", target, body), body[:200])


def test_every_wrong_method_gets_405_naming_the_allowed_ones(catalog: Catalog) -> None:
    for template in {route.template for route in ROUTES}:
        target = Route("GET", template).target(b"fz-method")
        # e.g. GET /v1/agent/service/register is the service "register", as in Consul
        methods = {r.method for r in ROUTES if r.matches(target.decode())}
        for method in {"GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"} - methods:
            reply = catalog.request(method, target, b"{}")
            assert reply.status == 405, (method, template, reply)
            assert reply.text == f"method {method} not allowed"
            assert method not in reply.headers["allow"] and reply.headers["allow"], reply.headers
    catalog.assert_intact()


RAW_REQUESTS = [
    b"GET /v1/kv/a%ZZ HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v1/kv/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v1/catalog/services?filter=\xff HTTP/1.1\r\nHost: x\r\n\r\n",
    b"PUT /v1/kv/fz-cl HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"PUT /v1/kv/fz-cl HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"PUT /v1/kv/fz-cl HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef",
    b"PUT /v1/kv/fz-te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    b"PUT /v1/agent/service/register HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    b"GET /v1/agent/self HTTP/1.1\r\nHost: x\r\nX-Consul-Token: \xff\xfe\r\n\r\n",
    b"GET /v1/agent/self HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n",
    b"GET /v1/agent/self HTTP/9.9\r\nHost: x\r\n\r\n",
    b"GET " + b"/v1/kv/" + b"k" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"BREW /v1/kv/x HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS ClientHello to the plain port
    b"GET /v1/agent/self\r\n\r\n",  # HTTP/0.9
]


@pytest.mark.parametrize("raw", RAW_REQUESTS, ids=range(len(RAW_REQUESTS)))
def test_malformed_requests_are_refused_not_crashed(catalog: Catalog, raw: bytes) -> None:
    try:
        reply = http(catalog.port, "", b"", raw_head=raw)
    except (AssertionError, ConnectionResetError, IndexError):
        reply = None  # the server may just close the connection on bytes that are not HTTP
    if reply is not None:
        assert reply.status != 500 or reply.text == "No path to datacenter", reply
    assert catalog.get("/v1/status/leader").status == 200


def test_stored_state_intact_after_the_barrage(catalog: Catalog) -> None:
    catalog.assert_intact()
    # whatever the barrage managed to store is readable in every form, pretty-printed too
    for path in ("/v1/agent/services", "/v1/agent/checks", "/v1/catalog/services", "/v1/catalog/nodes",
                 "/v1/health/state/any", "/v1/kv/?recurse", "/v1/agent/self"):
        for query in ("", "?pretty"):
            reply = catalog.get(path + ("&pretty" if query and "?" in path else query))
            assert reply.status == 200, (path, reply)
            json.loads(reply.body)


def test_state_survives_a_restart_on_the_same_data_dir(catalog: Catalog) -> None:
    before = catalog.get_json("/v1/catalog/services")
    catalog.stop()
    catalog.start()
    catalog.assert_intact()
    assert catalog.get_json("/v1/catalog/services") == before
