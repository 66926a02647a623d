"""The agent's own checks against real peers on loopback: TTL, HTTP, TCP, maintenance, reaper."""

from __future__ import annotations

import asyncio
import time

import consul
import consul.aio
import pytest
from aiohttp import web

from waypost.server.app import CatalogServer


@pytest.fixture
async def server():
    srv = CatalogServer(port=0, node_name="node-c")
    srv.reap_interval = 0.2
    srv.deregister_critical_min = 0.0
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def check_of(aio, check_id):
    return (await aio.agent.checks())[check_id]


async def wait_status(aio, check_id, status, timeout=6.0):
    deadline = time.monotonic() + timeout
    chk = None
    while time.monotonic() < deadline:
        chk = (await aio.agent.checks()).get(check_id)
        if chk and chk["Status"] == status:
            return chk
        await asyncio.sleep(0.05)
    raise AssertionError(f"{check_id} did not become {status}: {chk}")


async def test_ttl_pass_warn_fail_update_and_expiry(server, aio):
    await aio.agent.service.register("ttl", service_id="ttl-1", port=1, check={"TTL": "1s"})
    assert (await check_of(aio, "service:ttl-1"))["Status"] == "critical"  # Consul's initial status
    assert await aio.agent.check.ttl_pass("service:ttl-1", notes="all good")
    chk = await check_of(aio, "service:ttl-1")
    assert (chk["Status"], chk["Output"]) == ("passing", "all good")
    assert await aio.agent.check.ttl_warn("service:ttl-1", notes="slow")
    assert (await check_of(aio, "service:ttl-1"))["Status"] == "warning"
    assert await aio.agent.check.ttl_fail("service:ttl-1")
    assert (await check_of(aio, "service:ttl-1"))["Status"] == "critical"
    await aio.agent.check.ttl_pass("service:ttl-1", notes="back")
    # no further updates: the TTL runs out
    chk = await wait_status(aio, "service:ttl-1", "critical", timeout=3)
    assert chk["Output"] == "TTL expired (last output before timeout follows): back"


async def test_check_update_endpoint_and_non_ttl_check(server, aio):
    await aio.agent.service.register("u", service_id="u-1", port=1, check={"TTL": "30s"})
    c = consul.Consul(host="127.0.0.1", port=server.port)
    await asyncio.to_thread(c.agent.check.ttl_pass, "service:u-1", "via sync client")
    assert (await check_of(aio, "service:u-1"))["Output"] == "via sync client"
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.put(server.url + "/v1/agent/check/update/service:u-1",
                            json={"Status": "warning", "Output": "disk 91%"}) as resp:
            assert resp.status == 200
        await aio.agent.check.register("probe", check=consul.Check.tcp("127.0.0.1", 1, "10m"), check_id="probe")
        async with http.put(server.url + "/v1/agent/check/pass/probe") as resp:
            assert resp.status == 500
            assert await resp.text() == 'CheckID "probe" does not have associated TTL'
    chk = await check_of(aio, "service:u-1")
    assert (chk["Status"], chk["Output"]) == ("warning", "disk 91%")


async def test_initial_status_from_registration(server, aio):
    await aio.agent.service.register("s", service_id="s-1", port=1, check={"TTL": "30s", "Status": "passing"})
    assert (await check_of(aio, "service:s-1"))["Status"] == "passing"


async def test_http_check_follows_a_real_backend(server, aio):
    state = {"code": 200}

    async def health(request):
        return web.Response(status=state["code"], text=f"code {state['code']}")

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}/health"
    try:
        await aio.agent.service.register("h", service_id="h-1", port=port,
                                         check=consul.Check.http(url, interval="1s", timeout="1s"))
        chk = await wait_status(aio, "service:h-1", "passing")
        assert chk["Output"] == f"HTTP GET {url}: 200 OK Output: code 200"
        assert chk["Type"] == "http" and chk["Interval"] == "1s"
        state["code"] = 429
        await wait_status(aio, "service:h-1", "warning")
        state["code"] = 503
        chk = await wait_status(aio, "service:h-1", "critical")
        assert "503 Service Unavailable" in chk["Output"]
        state["code"] = 200
        await wait_status(aio, "service:h-1", "passing")
    finally:
        await runner.cleanup()
    chk = await wait_status(aio, "service:h-1", "critical")
    assert "connection refused" in chk["Output"] or "connect" in chk["Output"]


async def test_tcp_check_up_and_down(server, aio):
    listener = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    await aio.agent.service.register("t", service_id="t-1", port=port,
                                     check=consul.Check.tcp("127.0.0.1", port, interval="1s", timeout="1s"))
    chk = await wait_status(aio, "service:t-1", "passing")
    assert chk["Output"] == f"TCP connect 127.0.0.1:{port}: Success"
    listener.close()
    await listener.wait_closed()
    chk = await wait_status(aio, "service:t-1", "critical")
    assert chk["Output"] == f"dial tcp 127.0.0.1:{port}: connect: connection refused"


async def test_maintenance_mode(server, aio):
    await aio.agent.service.register("m", service_id="m-1", port=1, check={"TTL": "30s", "Status": "passing"})
    _, passing = await aio.health.service("m", passing=True)
    assert len(passing) == 1
    assert await aio.agent.service.maintenance("m-1", "true", reason="upgrading")
    chk = await check_of(aio, "_service_maintenance:m-1")
    assert chk["Status"] == "critical" and chk["Notes"] == "upgrading" and chk["Name"] == "Service Maintenance Mode"
    _, passing = await aio.health.service("m", passing=True)
    assert passing == []
    assert await aio.agent.service.maintenance("m-1", "false")
    assert "_service_maintenance:m-1" not in await aio.agent.checks()
    _, passing = await aio.health.service("m", passing=True)
    assert len(passing) == 1
    # node maintenance takes every service of the node out
    await aio.agent.maintenance("true")
    _, passing = await aio.health.service("m", passing=True)
    assert passing == []
    await aio.agent.maintenance("false")


async def test_deregister_critical_service_after(server, aio):
    await aio.agent.service.register("d", service_id="d-1", port=1,
                                     check={"TTL": "30s", "DeregisterCriticalServiceAfter": "300ms"})
    await aio.agent.service.register("d", service_id="d-2", port=2,
                                     check={"TTL": "30s", "Status": "passing",
                                            "DeregisterCriticalServiceAfter": "300ms"})
    deadline = time.monotonic() + 5
    while "d-1" in await aio.agent.services() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    services = await aio.agent.services()
    assert "d-1" not in services and "d-2" in services
    assert "service:d-1" not in await aio.agent.checks()


async def test_check_register_on_node_and_service(server, aio):
    await aio.agent.service.register("n", service_id="n-1", port=1)
    assert await aio.agent.check.register("node ttl", check={"TTL": "30s"}, check_id="node-ttl")
    assert await aio.agent.check.register("svc ttl", check={"TTL": "30s"}, check_id="svc-ttl", service_id="n-1")
    checks = await aio.agent.checks()
    assert checks["node-ttl"]["ServiceID"] == "" and checks["svc-ttl"]["ServiceName"] == "n"
    _, entries = await aio.health.service("n")
    assert {c["CheckID"] for c in entries[0]["Checks"]} == {"serfHealth", "node-ttl", "svc-ttl"}
    assert await aio.agent.check.deregister("node-ttl")
    assert "node-ttl" not in await aio.agent.checks()


