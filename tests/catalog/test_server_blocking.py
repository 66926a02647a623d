"""Blocking queries: wake on the watched resource's change, time out on wait, ignore unrelated writes."""

from __future__ import annotations

import asyncio
import time

import consul
import consul.aio
import pytest

from tests.conftest import running_catalog
from waypost.catalog import CatalogClient
from waypost.config import CatalogConfig
from waypost.server.app import CatalogServer


@pytest.fixture
async def server():
    async with running_catalog(port=0, node_name="node-b") as srv:
        yield srv


async def timed(coro):
    start = time.monotonic()
    result = await coro
    return time.monotonic() - start, result


async def test_blocking_health_query_returns_on_change(server, aio):
    await aio.agent.service.register("web", service_id="web-1", port=1)
    idx, entries = await aio.health.service("web")
    assert len(entries) == 1

    async def later():
        await asyncio.sleep(0.2)
        await aio.agent.service.register("web", service_id="web-2", port=2)

    writer = asyncio.create_task(later())
    elapsed, (new_idx, entries) = await timed(aio.health.service("web", index=idx, wait="5s"))
    await writer
    assert 0.15 < elapsed < 2.0
    assert int(new_idx) > int(idx) and len(entries) == 2


async def test_blocking_query_times_out_after_wait(server, aio):
    await aio.agent.service.register("quiet", port=1)
    idx, _ = await aio.health.service("quiet")
    elapsed, (same, _) = await timed(aio.health.service("quiet", index=idx, wait="1s"))
    assert 1.0 <= elapsed < 1.0 * 17 / 16 + 1.0
    assert same == idx


async def test_blocking_on_one_service_not_woken_by_another(server, aio):
    await aio.agent.service.register("a", port=1)
    idx, _ = await aio.health.service("a")

    async def noise():
        for n in range(5):
            await asyncio.sleep(0.1)
            await aio.agent.service.register("b", service_id=f"b-{n}", port=n + 10)
            await aio.kv.put(f"noise/{n}", "x")

    task = asyncio.create_task(noise())
    elapsed, (same, _) = await timed(aio.health.service("a", index=idx, wait="1s"))
    await task
    assert elapsed >= 1.0 and same == idx
    # catalog/service blocks per service too
    cidx, _ = await aio.catalog.service("a")
    task = asyncio.create_task(noise())
    elapsed, (csame, _) = await timed(aio.catalog.service("a", index=cidx, wait="1s"))
    await task
    assert elapsed >= 1.0 and csame == cidx


async def test_check_status_change_wakes_health_watchers(server, aio):
    await aio.agent.service.register("ttl", port=1, check={"TTL": "30s"})
    idx, _ = await aio.health.service("ttl", passing=True)

    async def later():
        await asyncio.sleep(0.1)
        await aio.agent.check.ttl_pass("service:ttl")

    task = asyncio.create_task(later())
    elapsed, (new_idx, entries) = await timed(aio.health.service("ttl", passing=True, index=idx, wait="5s"))
    await task
    assert elapsed < 2.0 and int(new_idx) > int(idx) and len(entries) == 1


async def test_index_zero_and_future_index_return_at_once(server, aio):
    elapsed, _ = await timed(aio.catalog.services(index=0, wait="5s"))
    assert elapsed < 0.5
    idx, _ = await aio.catalog.services()
    # an index far beyond ours means the client saw an older incarnation: answer at once so it resets
    elapsed, (new_idx, _) = await timed(aio.catalog.services(index=int(idx) + 1000, wait="5s"))
    assert elapsed < 0.5 and int(new_idx) <= int(idx)


async def test_kv_blocking_get(server, aio):
    await aio.kv.put("cfg/x", "1")
    idx, _ = await aio.kv.get("cfg/x")

    async def later():
        await asyncio.sleep(0.1)
        await aio.kv.put("cfg/unrelated", "u")
        await asyncio.sleep(0.1)
        await aio.kv.put("cfg/x", "2")

    task = asyncio.create_task(later())
    elapsed, (new_idx, entry) = await timed(aio.kv.get("cfg/x", index=idx, wait="5s"))
    await task
    assert 0.15 < elapsed < 2.0 and entry["Value"] == b"2" and int(new_idx) > int(idx)


async def test_sync_client_blocking_in_thread(server):
    c = consul.Consul(host="127.0.0.1", port=server.port)
    idx, _ = await asyncio.to_thread(c.catalog.services)
    task = asyncio.create_task(asyncio.to_thread(c.catalog.services, index=idx, wait="5s"))
    await asyncio.sleep(0.2)
    await asyncio.to_thread(c.agent.service.register, "late", port=9)
    new_idx, services = await asyncio.wait_for(task, 3)
    assert "late" in services and int(new_idx) > int(idx)


async def test_catalog_client_watch_wakes_fast(server):
    client = CatalogClient(CatalogConfig.from_url(server.url))
    try:
        watch = client.watch("api", passing_only=False, wait="10s")
        it = watch.__aiter__()
        first = await asyncio.wait_for(it.__anext__(), 3)
        assert first == []
        latencies = []
        for n in range(10):
            start = time.perf_counter()
            await client.consul.agent.service.register("api", service_id=f"api-{n}", port=1000 + n)
            got = await asyncio.wait_for(it.__anext__(), 3)
            latencies.append(time.perf_counter() - start)
            assert len(got) == n + 1
        assert max(latencies) < 1.0  # the bench reports the real p50/p99
    finally:
        await client.close()


async def test_stop_releases_blocked_readers():
    srv = CatalogServer(port=0, node_name="node-s")
    await srv.start()
    c = consul.aio.Consul(host="127.0.0.1", port=srv.port)
    try:
        idx, _ = await c.catalog.services()
        task = asyncio.create_task(c.catalog.services(index=idx, wait="60s"))
        await asyncio.sleep(0.2)
        start = time.monotonic()
        await srv.stop()
        assert time.monotonic() - start < 3.0
        await asyncio.wait([task], timeout=3)
        assert task.done()
        task.exception() if not task.cancelled() else None
    finally:
        await c.close()
