"""Service routes following the embedded catalog live: registrations, deregistrations, health, tags."""

from __future__ import annotations

import asyncio

import pytest

from tests.ambassador.conftest import Resp, ask, port_of
from waypost.catalog import CRITICAL, PASSING, CheckDef, ServiceDef
from waypost.config import ConfigError


@pytest.fixture(params=["client", "reader"])
async def route_catalog(request, catalog_client):
    """What the routes follow: the full client (as `waypost up` passes) or the h11 reader (sidecars)."""
    if request.param == "client":
        yield catalog_client
        return
    from waypost.catalog.reader import CatalogReader

    reader = CatalogReader(catalog_client.config)
    yield reader
    await reader.close()


def svc(name: str, port: int, sid: str, tags: tuple[str, ...] = (), ttl: bool = False) -> ServiceDef:
    checks = (CheckDef("ttl", ttl="30s", check_id=f"{sid}-ttl", initial_status=PASSING),) if ttl else ()
    return ServiceDef(id=sid, name=name, address="127.0.0.1", port=port, tags=tags, checks=checks)


async def until(predicate, timeout: float = 3.0) -> float:  # type: ignore[no-untyped-def]
    """Wait for `predicate()` to hold; returns the seconds it took."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)
    return loop.time() - t0


async def test_redis_route_follows_the_catalog(catalog_client, route_catalog, redis_factory, ambassador_factory):
    r1, r2 = redis_factory(), redis_factory()
    await catalog_client.register(svc("redis", r1.port, "redis-1"))
    amb = await ambassador_factory(["127.0.0.1:0=redis"], catalog=route_catalog, lb="round-robin")
    route = amb.routes[0]
    await until(lambda: route.balancer.has_backends())
    port = port_of(amb)
    c = await Resp.connect(port)
    assert await c.server_port() == r1.port
    await c.close()

    # a new instance takes traffic as soon as the watch sees it
    await catalog_client.register(svc("redis", r2.port, "redis-2"))
    took = await until(lambda: len(route.balancer.backends) == 2)
    assert took < 1.0
    seen = set()
    for _ in range(4):
        c = await Resp.connect(port)
        seen.add(await c.server_port())
        await c.close()
    assert seen == {r1.port, r2.port}

    # deregistered: no new connections, the open one drains and keeps working
    keep = await Resp.connect(port)
    while await keep.server_port() != r1.port:
        await keep.close()
        keep = await Resp.connect(port)
    await catalog_client.deregister("redis-1")
    await until(lambda: len(route.balancer.backends) == 1)
    for _ in range(4):
        c = await Resp.connect(port)
        assert await c.server_port() == r2.port
        await c.close()
    assert await keep.call("PING") == "PONG"
    assert route.snapshot()["backends"][-1]["state"] == "draining"
    await keep.close()
    await until(lambda: not route.balancer.draining)
    assert route.snapshot()["catalog_reachable"] is True


async def test_failing_health_check_takes_an_instance_out(catalog_client, route_catalog, backends, ambassador_factory):
    a, b = await backends(name="a"), await backends(name="b")
    await catalog_client.register(svc("api", a.port, "api-a", ttl=True))
    await catalog_client.register(svc("api", b.port, "api-b", ttl=True))
    amb = await ambassador_factory(["127.0.0.1:0=api"], catalog=route_catalog)
    route = amb.routes[0]
    await until(lambda: len(route.balancer.backends) == 2)
    await catalog_client.update_ttl("api-a-ttl", CRITICAL, "down for the test")
    await until(lambda: len(route.balancer.backends) == 1)
    assert {await ask(port_of(amb)) for _ in range(6)} == {b"b:hello\n"}


async def test_tagged_route_only_uses_tagged_instances(catalog_client, route_catalog, backends, ambassador_factory):
    primary, replica = await backends(name="primary"), await backends(name="replica")
    await catalog_client.register(svc("db", primary.port, "db-1", tags=("primary",)))
    await catalog_client.register(svc("db", replica.port, "db-2", tags=("replica",)))
    amb = await ambassador_factory(["127.0.0.1:0=db#primary"], catalog=route_catalog)
    await until(lambda: amb.routes[0].balancer.has_backends())
    assert {await ask(port_of(amb)) for _ in range(5)} == {b"primary:hello\n"}


async def test_client_waits_for_the_first_instance_to_register(catalog_client, route_catalog, backends, ambassador_factory):
    await catalog_client.register(svc("late", 1, "placeholder"))  # known service, no usable instance yet
    await catalog_client.deregister("placeholder")
    server = await backends(name="late")
    amb = await ambassador_factory(["127.0.0.1:0=late"], catalog=route_catalog, strict_services=False)
    pending = asyncio.create_task(ask(port_of(amb), b"hi\n"))
    await asyncio.sleep(0.2)
    assert not pending.done()
    await catalog_client.register(svc("late", server.port, "late-1"))
    assert await asyncio.wait_for(pending, 3) == b"late:hi\n"


async def test_unknown_service_is_a_config_error(catalog_client, route_catalog, ambassador_factory):
    await catalog_client.register(svc("redis", 6379, "redis-1"))
    with pytest.raises(ConfigError, match=r"--route '127.0.0.1:0=rediss': service 'rediss' is not in the catalog"):
        await ambassador_factory(["127.0.0.1:0=rediss"], catalog=route_catalog)
