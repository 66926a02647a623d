"""Against the embedded catalog: catalog changes reach DNS answers, and outages keep last-known data."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import dns.exception
import dns.rcode

from tests.dns.helpers import ask, records
from waypost.catalog import CatalogClient, CheckDef, ServiceDef
from waypost.config import CatalogConfig
from waypost.dns import CatalogView

CHANGE_TIMEOUT = 5.0  # loose on purpose; the benchmark measures the real latency


async def until(server, name: str, predicate, rdtype: str = "A", timeout: float = CHANGE_TIMEOUT):  # type: ignore[no-untyped-def]
    """Ask repeatedly until the answer satisfies ``predicate``; returns (answer, seconds taken)."""
    t0 = time.monotonic()
    while True:
        msg = await ask(server, name, rdtype)
        if predicate(msg):
            return msg, time.monotonic() - t0
        assert time.monotonic() - t0 < timeout, f"{name}: answer never changed; last: {msg}"
        await asyncio.sleep(0.01)


async def test_register_and_deregister_change_answers(catalog_client: CatalogClient, make_dns) -> None:
    view = CatalogView(catalog_client)
    server = await make_dns(view)
    await view.wait_synced(5)
    assert (await ask(server, "redis.service.consul")).rcode() == dns.rcode.NXDOMAIN
    await catalog_client.register(ServiceDef(id="redis-1", name="redis", address="10.8.0.1", port=6379,
                                             tags=("primary",)))
    await until(server, "redis.service.consul", lambda m: records(m) == ["10.8.0.1"])
    await until(server, "primary.redis.service.consul", lambda m: records(m) == ["10.8.0.1"])
    await catalog_client.register(ServiceDef(id="redis-2", name="redis", address="10.8.0.2", port=6380))
    await until(server, "redis.service.consul", lambda m: records(m) == ["10.8.0.1", "10.8.0.2"])
    srv, _ = await until(server, "redis.service.consul", lambda m: len(records(m, "SRV")) == 2, "SRV")
    assert {r.split()[2] for r in records(srv, "SRV")} == {"6379", "6380"}
    await catalog_client.deregister("redis-1")
    await until(server, "redis.service.consul", lambda m: records(m) == ["10.8.0.2"])
    await catalog_client.deregister("redis-2")
    await until(server, "redis.service.consul", lambda m: m.rcode() == dns.rcode.NXDOMAIN)
    assert view.stale is False


async def test_health_flip_through_a_ttl_check(catalog_client: CatalogClient, make_dns) -> None:
    check = CheckDef(kind="ttl", ttl="60s", check_id="api-1:ttl", initial_status="passing")
    await catalog_client.register(ServiceDef(id="api-1", name="api", address="10.8.1.1", port=80, checks=(check,)))
    await catalog_client.register(ServiceDef(id="api-2", name="api", address="10.8.1.2", port=80))
    lenient = CatalogView(catalog_client)
    strict = CatalogView(catalog_client, only_passing=True)
    loose_dns = await make_dns(lenient)
    strict_dns = await make_dns(strict, only_passing=True)
    both = ["10.8.1.1", "10.8.1.2"]
    await until(loose_dns, "api.service.consul", lambda m: records(m) == both)
    await until(strict_dns, "api.service.consul", lambda m: records(m) == both)

    await catalog_client.update_ttl("api-1:ttl", "warning", "slow")
    await until(strict_dns, "api.service.consul", lambda m: records(m) == ["10.8.1.2"])
    assert records(await ask(loose_dns, "api.service.consul")) == both  # warning is still served

    await catalog_client.update_ttl("api-1:ttl", "critical", "down")
    await until(loose_dns, "api.service.consul", lambda m: records(m) == ["10.8.1.2"])

    await catalog_client.update_ttl("api-1:ttl", "passing", "back")
    await until(loose_dns, "api.service.consul", lambda m: records(m) == both)
    await until(strict_dns, "api.service.consul", lambda m: records(m) == both)


async def test_catalog_outage_keeps_last_known_answers_and_flags_stale(catalog_server, make_dns) -> None:
    client = CatalogClient(CatalogConfig.from_url(catalog_server.url))
    try:
        await client.register(ServiceDef(id="cache-1", name="cache", address="10.8.2.1", port=11211))
        view = CatalogView(client)
        server = await make_dns(view)
        await view.wait_synced(5)
        await until(server, "cache.service.consul", lambda m: records(m) == ["10.8.2.1"])
        assert not view.stale
        metrics = server.registry.get_sample_value("waypost_dns_catalog_stale")
        assert metrics == 0.0
        await catalog_server.stop()
        deadline = time.monotonic() + CHANGE_TIMEOUT
        while not view.stale:
            assert time.monotonic() < deadline, "view never noticed the catalog went away"
            await asyncio.sleep(0.05)
        assert records(await ask(server, "cache.service.consul")) == ["10.8.2.1"]  # last-known data
        assert server.registry.get_sample_value("waypost_dns_catalog_stale") == 1.0
        assert server.registry.get_sample_value("waypost_dns_queries_total", {"type": "A", "rcode": "NOERROR"}) >= 2
    finally:
        await client.close()


async def test_cli_run_serves_from_the_catalog_with_metrics(catalog_client: CatalogClient, catalog_server) -> None:
    import argparse

    from tests.ports import free_port
    from waypost.dns import cli
    from waypost.dns.config import DnsConfig  # noqa: F401  (the API the CLI builds)

    await catalog_client.register(ServiceDef(id="web-1", name="web", address="10.8.3.1", port=80))
    port, mport = free_port(), free_port()
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--catalog", catalog_server.url, "--listen", f"127.0.0.1:{port}",
                              "--service-ttl", "15", "--metrics-listen", f"127.0.0.1:{mport}"])
    task = asyncio.create_task(cli.run(args))
    try:
        class Target:
            pass

        target = Target()
        target.port = port  # type: ignore[attr-defined]
        deadline = time.monotonic() + CHANGE_TIMEOUT
        while True:
            try:
                msg = await ask(target, "web.service.consul")  # type: ignore[arg-type]
                if records(msg) == ["10.8.3.1"]:
                    break
            except (OSError, dns.exception.Timeout):
                pass
            assert time.monotonic() < deadline and not task.done(), task
            await asyncio.sleep(0.05)
        assert {rrset.ttl for rrset in msg.answer} == {15}
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{mport}/metrics") as resp:
            text = await resp.text()
        assert 'waypost_dns_queries_total{rcode="NOERROR",type="A"}' in text
        assert "waypost_dns_catalog_stale 0.0" in text
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
