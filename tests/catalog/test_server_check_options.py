"""Check options Consul accepts: thresholds, DisableRedirects, OutputMaxSize, and what is refused."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiohttp import web

from tests.catalog.test_server_checks import wait_status
from waypost.server.app import CatalogServer
from waypost.server.checks import StatusGate


@pytest.fixture
async def server():
    srv = CatalogServer(port=0, node_name="node-o")
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def backend():
    """A loopback HTTP peer: /health answers ``state['codes']`` in turn (the last repeats)."""
    state = {"codes": [200], "hits": 0}

    async def health(request):
        codes = state["codes"]
        code = codes[min(state["hits"], len(codes) - 1)]
        state["hits"] += 1
        return web.Response(status=code, text="x" * 100)

    async def redirect(request):
        raise web.HTTPFound("/health")

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/moved", redirect)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state["url"] = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    try:
        yield state
    finally:
        await runner.cleanup()


async def register(http, url, body):
    async with http.put(url + "/v1/agent/service/register", data=json.dumps(body)) as resp:
        return resp.status, await resp.text()


def test_status_gate_follows_consul_status_handler():
    gate = StatusGate({"SuccessBeforePassing": 2, "FailuresBeforeCritical": 3, "FailuresBeforeWarning": 2})
    # counters start at their thresholds: the first result is reported at once
    assert gate.status("passing") == "passing"
    assert [gate.status("critical") for _ in range(4)] == [None, "warning", "critical", "critical"]
    assert [gate.status("passing") for _ in range(3)] == [None, "passing", "passing"]
    assert gate.status("critical") is None
    assert gate.status("warning") is None  # a warning result counts as a success
    assert gate.status("warning") == "warning"
    plain = StatusGate({})
    assert [plain.status(s) for s in ("critical", "passing", "warning")] == ["critical", "passing", "warning"]


async def test_failures_before_critical_over_http(server, aio, http, backend):
    backend["codes"] = [200, 503]
    check = {"HTTP": backend["url"] + "/health", "Interval": "1s", "FailuresBeforeCritical": 3,
             "FailuresBeforeWarning": 2}
    assert (await register(http, server.url, {"Name": "f", "ID": "f-1", "Port": 1, "Check": check}))[0] == 200

    async def after_hits(n):
        deadline = time.monotonic() + 8
        while backend["hits"] < n and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        return (await aio.agent.checks())["service:f-1"]["Status"]

    assert await after_hits(1) == "passing"
    assert await after_hits(2) == "passing"  # one failure: below both thresholds
    assert await after_hits(3) == "warning"
    await wait_status(aio, "service:f-1", "critical", timeout=4)


async def test_failures_before_warning_defaults_to_failures_before_critical(server, aio, http, backend):
    backend["codes"] = [200, 503]
    check = {"HTTP": backend["url"] + "/health", "Interval": "1s", "FailuresBeforeCritical": 2}
    assert (await register(http, server.url, {"Name": "g", "ID": "g-1", "Port": 1, "Check": check}))[0] == 200
    await wait_status(aio, "service:g-1", "passing")  # from the initial critical
    deadline = time.monotonic() + 8
    seen = []
    while time.monotonic() < deadline and "critical" not in seen:
        seen.append((await aio.agent.checks())["service:g-1"]["Status"])
        await asyncio.sleep(0.05)
    assert "critical" in seen and "warning" not in seen


async def test_disable_redirects(server, aio, http, backend):
    moved = backend["url"] + "/moved"
    for sid, disable in (("r-follow", False), ("r-stop", True)):
        check = {"HTTP": moved, "Interval": "10s", "DisableRedirects": disable}
        assert (await register(http, server.url, {"Name": "r", "ID": sid, "Port": 1, "Check": check}))[0] == 200
    await wait_status(aio, "service:r-follow", "passing")
    chk = await wait_status(aio, "service:r-stop", "critical")
    assert chk["Output"].startswith(f"HTTP GET {moved}: 302 Found")


async def test_output_max_size(server, aio, http, backend):
    check = {"HTTP": backend["url"] + "/health", "Interval": "10s", "OutputMaxSize": 20}
    assert (await register(http, server.url, {"Name": "o", "ID": "o-1", "Port": 1, "Check": check}))[0] == 200
    chk = await wait_status(aio, "service:o-1", "passing")
    assert chk["Output"] == "x" * 20
    check = {"TTL": "30s", "OutputMaxSize": 5}
    assert (await register(http, server.url, {"Name": "o", "ID": "o-2", "Port": 1, "Check": check}))[0] == 200
    async with http.put(server.url + "/v1/agent/check/pass/service:o-2", params={"note": "0123456789"}) as resp:
        assert resp.status == 200
    assert (await aio.agent.checks())["service:o-2"]["Output"] == "56789"


@pytest.mark.parametrize(("body", "named"), [
    ({"Check": {"HTTP": "https://127.0.0.1:1/", "Interval": "10s", "TLSServerName": "svc.example"}},
     "TLSServerName"),
    ({"Connect": {"SidecarService": {}}}, "Connect.SidecarService"),
    ({"Connect": {"Native": True}}, "Connect"),
])
async def test_unsupported_options_are_400_naming_the_field(server, http, body, named):
    status, text = await register(http, server.url, {"Name": "u", "Port": 1, **body})
    assert status == 400 and named in text


async def test_negative_thresholds_are_400(server, http):
    check = {"TTL": "10s", "FailuresBeforeCritical": -1}
    status, text = await register(http, server.url, {"Name": "n", "Port": 1, "Check": check})
    assert status == 400 and "FailuresBeforeCritical" in text
