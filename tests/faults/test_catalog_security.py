"""Security properties of the embedded catalog: loopback by default, the ACL token, body limits.

- Every listener binds loopback unless told otherwise; a wider ``--listen`` is logged as a warning.
  (Checked on the process's own listening sockets; the tests only ever connect to 127.0.0.1.)
- ``--token``: every write endpoint (enumerated from the router) needs it, sent as
  ``X-Consul-Token``, ``?token=`` or ``Authorization: Bearer``; reads need it only with
  ``--token-reads``. No token → 403 ``Permission denied``; a wrong one → 403 ``ACL not found``
  (Consul's texts), including tokens one character off or one character longer/shorter.
- Bodies over 4 MB are refused with 413 before being read; KV values over 512 KB get Consul's 413.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.conftest import running_catalog
from tests.ports import free_port
from waypost.server import cli
from waypost.server.api import KV_MAX_VALUE
from waypost.server.app import MAX_BODY, CatalogServer

TOKEN = "4f1c9a7e-0d2b-4c3e-9f8a-7b6d5e4c3b2a"
KV_TOO_LARGE = ("Request body({} bytes) too large, max size: 524288 bytes. See "
                "https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size.")


# ---- who listens where ---------------------------------------------------------------------------


def _hex_addr(text: str) -> str:
    raw = bytes.fromhex(text)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))  # /proc prints host-order words
    return socket.inet_ntop(socket.AF_INET6, words)


def listening(pid: int) -> set[tuple[str, int]]:
    """The TCP addresses process `pid` listens on, from /proc (its own sockets only)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A = LISTEN
                host, port = local.split(":")
                found.add((_hex_addr(host), int(port, 16)))
    return found


def catalog_process(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WAYPOST_")}
    return subprocess.Popen([sys.executable, "-m", "waypost", "catalog", *args], env={**clean, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)


def wait_listening(proc: subprocess.Popen[str], timeout: float = 20.0) -> set[tuple[str, int]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return set()
        addrs = listening(proc.pid)
        if addrs:
            return addrs
        time.sleep(0.05)
    pytest.fail("the catalog process did not listen in time")


def finish(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.terminate()
    try:
        _, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err


def _port_free(port: int) -> bool:
    for host in ("127.0.0.1", "0.0.0.0"):
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


async def test_catalog_server_binds_loopback_by_default() -> None:
    server = CatalogServer(port=0)
    assert server.host == "127.0.0.1"
    await server.start()
    try:
        addrs = {(a[0], a[1]) for a in server._runner.addresses}  # type: ignore[union-attr]
        assert addrs == {("127.0.0.1", server.port)}
        assert listening(os.getpid()) >= addrs
    finally:
        await server.stop()


def test_cli_without_listen_binds_loopback_only() -> None:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert parser.parse_args([]).listen == "127.0.0.1:8500"
    if not _port_free(8500):  # someone else has the default port: the refusal must still name loopback
        proc = catalog_process()
        assert proc.wait(20) != 0
        assert "127.0.0.1:8500" in finish(proc)
        return
    proc = catalog_process()
    try:
        assert wait_listening(proc) == {("127.0.0.1", 8500)}
    finally:
        err = finish(proc)
    assert "listening on http://127.0.0.1:8500" in err and "WARNING" not in err


def test_cli_listen_without_host_binds_loopback() -> None:
    port = free_port()
    proc = catalog_process("--listen", f":{port}")
    try:
        assert wait_listening(proc) == {("127.0.0.1", port)}
    finally:
        err = finish(proc)
    assert "WARNING" not in err


@pytest.mark.parametrize("token", [False, True])
def test_cli_wide_listen_is_logged_as_a_warning(token: bool) -> None:
    port = free_port("0.0.0.0")
    proc = catalog_process("--listen", f"0.0.0.0:{port}", *(["--token", TOKEN] if token else []))
    try:
        assert wait_listening(proc) == {("0.0.0.0", port)}
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:  # loopback only, as ever
            s.sendall(b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 200")
    finally:
        err = finish(proc)
    warning = next(line for line in err.splitlines() if "WARNING" in line)
    assert "reachable beyond this host" in warning and f"--listen 0.0.0.0:{port}" in warning
    assert ("consider --token" in warning) is not token
    assert TOKEN not in err  # the token is never logged


def test_cli_empty_token_is_refused() -> None:
    proc = catalog_process("--listen", f"127.0.0.1:{free_port()}", "--token", "")
    assert proc.wait(20) != 0
    assert "--token is empty" in finish(proc)


# ---- the token ------------------------------------------------------------------------------------


@pytest.fixture
async def guarded() -> AsyncIterator[CatalogServer]:
    async with running_catalog(port=0, token=TOKEN, node_name="guarded") as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> tuple[int, str, str]:
    async with http.request(method, url, **kw) as resp:
        return resp.status, await resp.text(), resp.headers.get("Content-Type", "")


def routes(server: CatalogServer, write: bool) -> list[tuple[str, str]]:
    out = []
    for route in server.app.router.routes():
        if route.method == "*":  # the 405 catch-alls of PUT-only paths: they write nothing
            continue
        if (route.method != "GET") == write:
            info = route.resource.get_info()
            out.append((route.method, (info.get("formatter") or info["path"]).replace("{", "").replace("}", "")))
    return out


REGISTER = json.dumps({"ID": "guarded-svc", "Name": "guarded-svc", "Port": 80})
WRONG_TOKENS = [TOKEN[:-1] + ("b" if TOKEN[-1] != "b" else "c"), TOKEN + "0", TOKEN[:-1], TOKEN.upper(), "x",
                "ü" * 8, TOKEN + TOKEN]


def _ways(token: str) -> list[dict[str, Any]]:
    return [{"headers": {"X-Consul-Token": token}}, {"params": {"token": token}},
            {"headers": {"Authorization": f"Bearer {token}"}}]


async def test_every_write_endpoint_needs_the_token(guarded: CatalogServer, http: aiohttp.ClientSession) -> None:
    before = guarded.store.index
    writes = routes(guarded, write=True)
    assert len(writes) >= 14
    for method, path in writes:
        status, text, ctype = await call(http, method, guarded.url + path, data=REGISTER)
        assert (status, text) == (403, "Permission denied"), (method, path)
        assert ctype.startswith("text/plain")
    assert guarded.store.index == before  # nothing was written


@pytest.mark.parametrize("wrong", WRONG_TOKENS, ids=["last-char", "longer", "shorter", "case", "short", "unicode",
                                                     "doubled"])
async def test_wrong_tokens_are_refused_every_way(guarded: CatalogServer, http: aiohttp.ClientSession,
                                                  wrong: str) -> None:
    for kw in _ways(wrong):
        status, text, _ = await call(http, "PUT", guarded.url + "/v1/agent/service/register", data=REGISTER, **kw)
        assert (status, text) == (403, "ACL not found"), kw
    assert "guarded-svc" not in {sid for _, sid in guarded.store.services}


async def test_right_token_works_every_way(guarded: CatalogServer, http: aiohttp.ClientSession) -> None:
    for n, kw in enumerate(_ways(TOKEN)):
        body = json.dumps({"ID": f"ok-{n}", "Name": "ok", "Port": 80 + n})
        status, _, _ = await call(http, "PUT", guarded.url + "/v1/agent/service/register", data=body, **kw)
        assert status == 200, kw
        status, _, _ = await call(http, "PUT", guarded.url + f"/v1/kv/k{n}", data=b"v", **kw)
        assert status == 200, kw
    assert {sid for _, sid in guarded.store.services} >= {"ok-0", "ok-1", "ok-2"}


async def test_reads_are_open_unless_token_reads(guarded: CatalogServer, http: aiohttp.ClientSession) -> None:
    reads = [(m, p) for m, p in routes(guarded, write=False) if not p.startswith("/v1/agent/health/")]
    for method, path in reads:
        status, _, _ = await call(http, method, guarded.url + path)
        assert status != 403, path
    guarded.token_reads = True
    for method, path in reads:
        status, text, _ = await call(http, method, guarded.url + path)
        if path.startswith("/v1/status/"):
            assert status == 200  # Consul's status endpoints need no ACL
        else:
            assert (status, text) == (403, "Permission denied"), path
        status, text, _ = await call(http, method, guarded.url + path, headers={"X-Consul-Token": TOKEN[:-1]})
        if path.startswith("/v1/status/"):
            assert status == 200
        else:
            assert (status, text) == (403, "ACL not found"), path
    status, _, _ = await call(http, "GET", guarded.url + "/v1/agent/services", headers={"X-Consul-Token": TOKEN})
    assert status == 200


# ---- body limits ----------------------------------------------------------------------------------


async def test_oversized_bodies_are_refused_with_413(catalog_server: CatalogServer,
                                                     http: aiohttp.ClientSession) -> None:
    url = catalog_server.url
    assert MAX_BODY <= 10 * 1024 * 1024
    big = b"x" * (MAX_BODY + 1)
    status, text, ctype = await call(http, "PUT", url + "/v1/agent/service/register", data=big)
    assert (status, text) == (413, f"Request body({MAX_BODY + 1} bytes) too large, max size: {MAX_BODY} bytes")
    assert ctype.startswith("text/plain")

    async def chunks():  # no Content-Length: the limit applies while reading
        for _ in range(5):
            yield b"y" * (1024 * 1024)

    status, text, _ = await call(http, "PUT", url + "/v1/catalog/register", data=chunks())
    assert status == 413 and f"max size: {MAX_BODY} bytes" in text
    status, _, _ = await call(http, "GET", url + "/v1/status/leader")
    assert status == 200


async def test_huge_content_length_is_refused_before_reading(catalog_server: CatalogServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", catalog_server.port)
    try:
        writer.write(b"PUT /v1/agent/service/register HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 10000000000\r\n\r\n{")
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 5)  # no 10 GB upload needed to get the answer
        assert status_line.startswith(b"HTTP/1.1 413")
    finally:
        writer.close()


async def test_kv_values_over_512kb_get_consuls_413(catalog_server: CatalogServer,
                                                    http: aiohttp.ClientSession) -> None:
    url = catalog_server.url + "/v1/kv/"
    assert KV_MAX_VALUE == 512 * 1024
    status, text, _ = await call(http, "PUT", url + "big", data=b"v" * (KV_MAX_VALUE + 1))
    assert (status, text) == (413, KV_TOO_LARGE.format(KV_MAX_VALUE + 1))
    status, text, _ = await call(http, "PUT", url + "fits", data=b"v" * KV_MAX_VALUE)
    assert (status, text) == (200, "true")
    async with http.get(url + "fits?raw") as resp:
        assert len(await resp.read()) == KV_MAX_VALUE
    status, _, _ = await call(http, "GET", url + "big")
    assert status == 404
