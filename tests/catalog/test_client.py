"""The catalog client against the embedded catalog (and a real Consul agent when one is given)."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest

from waypost.catalog import CatalogClient, CheckDef, ServiceDef
from waypost.config import CatalogConfig
from waypost.server.app import CatalogServer

CONSUL_URL = os.environ.get("WAYPOST_TEST_CONSUL")


@pytest.fixture(params=["embedded", pytest.param("consul", marks=pytest.mark.consul)])
async def client(request):
    """A catalog client for the embedded catalog, and for a real agent if WAYPOST_TEST_CONSUL is set."""
    if request.param == "consul":
        if not CONSUL_URL:
            pytest.skip("no real Consul agent: Consul can't be installed here; set "
                        "WAYPOST_TEST_CONSUL=http://HOST:8500 to run this suite against one")
        c = CatalogClient(CatalogConfig.from_url(CONSUL_URL))
        yield c
        await c.close()
        return
    server = CatalogServer(port=0)
    await server.start()
    c = CatalogClient(CatalogConfig.from_url(server.url))
    yield c
    await c.close()
    await server.stop()


def unique(name: str) -> str:
    return f"wp-test-{name}-{uuid.uuid4().hex[:8]}"


async def next_value(it, timeout: float = 5.0):
    return await asyncio.wait_for(it.__anext__(), timeout)


async def test_register_roundtrip_and_deregister(client: CatalogClient) -> None:
    name = unique("web")
    svc = ServiceDef(id=f"{name}-1", name=name, address="10.1.2.3", port=8080, tags=("v1", "blue"),
                     meta=(("team", "core"),))
    await client.register(svc)
    try:
        local = await client.local_services()
        assert local[svc.id].same_registration(svc)
        [inst] = await client.instances(name)
        assert (inst.address, inst.port, inst.tags) == ("10.1.2.3", 8080, ("v1", "blue"))
        assert dict(inst.meta) == {"team": "core"}
        assert name in await client.services()
    finally:
        await client.deregister(svc.id)
    assert await client.instances(name) == []
    assert svc.id not in await client.local_services()


async def test_ttl_check_drives_passing_only(client: CatalogClient) -> None:
    name = unique("ttl")
    check = CheckDef(kind="ttl", ttl="30s", check_id=f"{name}:ttl", initial_status="critical")
    svc = ServiceDef(id=name, name=name, address="10.0.0.9", port=1, checks=(check,))
    await client.register(svc)
    try:
        assert await client.instances(name) == []  # critical: not passing
        assert len(await client.instances(name, passing_only=False)) == 1
        await client.update_ttl(check.check_id, "passing", "ok")
        [inst] = await client.instances(name)
        assert inst.status == "passing"
        await client.update_ttl(check.check_id, "warning", "slow")
        assert [i.status for i in await client.instances(name, passing_only=False)] == ["warning"]
    finally:
        await client.deregister(svc.id)


async def test_watch_wakes_on_change_and_filters_tag(client: CatalogClient) -> None:
    name = unique("watched")
    watch = client.watch(name, wait="5s")
    it = watch.__aiter__()
    assert await next_value(it) == []
    await client.register(ServiceDef(id=f"{name}-a", name=name, address="10.0.0.1", port=1, tags=("a",)))
    assert [i.id for i in await next_value(it)] == [f"{name}-a"]
    tagged = client.watch(name, tag="b", wait="5s").__aiter__()
    assert await next_value(tagged) == []
    await client.register(ServiceDef(id=f"{name}-b", name=name, address="10.0.0.2", port=2, tags=("b",)))
    assert [i.id for i in await next_value(it)] == [f"{name}-a", f"{name}-b"]
    assert [i.id for i in await next_value(tagged)] == [f"{name}-b"]
    await client.deregister(f"{name}-a")
    assert [i.id for i in await next_value(it)] == [f"{name}-b"]
    await client.deregister(f"{name}-b")
    assert await next_value(it) == []
    await it.aclose()
    await tagged.aclose()


async def test_watch_survives_catalog_restart_and_outage() -> None:
    """Index reset on restart, last value kept while down, reconnect when the catalog returns."""
    server = CatalogServer(port=0)
    await server.start()
    port = server.port
    client = CatalogClient(CatalogConfig.from_url(server.url))
    watch = client.watch("db", wait="2s")
    it = watch.__aiter__()
    try:
        assert await next_value(it) == []
        for n in range(3):  # push the index up so a fresh catalog's index is lower
            await client.register(ServiceDef(id=f"db-{n}", name="db", address="10.0.0.1", port=5432 + n))
            await next_value(it)
        high_index = watch.index
        await server.stop()

        pending = asyncio.ensure_future(it.__anext__())
        await asyncio.sleep(1.0)
        assert not pending.done()
        assert not watch.reachable
        assert [i.id for i in watch.value] == ["db-0", "db-1", "db-2"]  # last value kept

        server = CatalogServer(port=port)  # same address, empty state, index starts over
        await server.start()
        assert await asyncio.wait_for(pending, 10) == []
        assert watch.reachable and watch.index < high_index
        await client.register(ServiceDef(id="db-9", name="db", address="10.0.0.9", port=1))
        assert [i.id for i in await next_value(it)] == ["db-9"]
    finally:
        await it.aclose()
        await client.close()
        await server.stop()


async def test_unreachable_catalog_raises_clear_error() -> None:
    client = CatalogClient(CatalogConfig.from_url("http://127.0.0.1:9"))
    try:
        with pytest.raises(OSError):
            await client.local_services()
    finally:
        await client.close()


async def test_token_is_sent() -> None:
    server = CatalogServer(port=0, token="s3cret")
    await server.start()
    good = CatalogClient(CatalogConfig.from_url(server.url, token="s3cret"))
    bad = CatalogClient(CatalogConfig.from_url(server.url, token="wrong"))
    try:
        await good.register(ServiceDef(id="x", name="x", address="10.0.0.1", port=1))
        from waypost.catalog import CatalogError

        with pytest.raises(CatalogError):
            await bad.register(ServiceDef(id="y", name="y", address="10.0.0.1", port=1))
        assert set(await good.local_services()) == {"x"}
    finally:
        await good.close()
        await bad.close()
        await server.stop()


@pytest.mark.parametrize("bad", ["../../kv/pwned", "a/b", "..", ""])
async def test_ids_that_could_escape_the_url_path_are_refused(client: CatalogClient, bad: str) -> None:
    with pytest.raises(ValueError, match="catalog URL"):
        await client.deregister(bad)
    with pytest.raises(ValueError, match="catalog URL"):
        await client.update_ttl(bad, "passing")


@pytest.fixture
def tls_files(tmp_path):
    """A throwaway CA and a server certificate for 127.0.0.1 it signed (openssl)."""
    import shutil
    import subprocess

    from tests.tooling import missing

    if shutil.which("openssl") is None:
        missing("openssl is not installed", "apt-get install -y openssl")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp_path)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
        "-subj", "/CN=waypost test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")
    (tmp_path / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "1", "-extfile", "san.ext")
    return tmp_path


async def test_https_with_ca_file_and_token(tls_files) -> None:
    """The same client code over https (verified against a CA file) with an ACL token."""
    from waypost.server.cli import tls_context

    context = tls_context(str(tls_files / "server.pem"), str(tls_files / "server.key"))
    server = CatalogServer(port=0, token="t0ken", ssl_context=context)
    await server.start()
    assert server.url.startswith("https://127.0.0.1:")
    good = CatalogClient(CatalogConfig.from_url(server.url, token="t0ken", ca_file=str(tls_files / "ca.pem")))
    untrusting = CatalogClient(CatalogConfig.from_url(server.url, token="t0ken"))  # system CAs only
    try:
        await good.register(ServiceDef(id="tls-1", name="tls", address="10.0.0.1", port=443))
        [inst] = await good.instances("tls")
        assert inst.port == 443
        watch = good.watch("tls", wait="2s").__aiter__()
        assert [i.id for i in await next_value(watch)] == ["tls-1"]
        await watch.aclose()
        with pytest.raises(OSError):  # aiohttp's certificate error is an OSError
            await untrusting.local_services()
    finally:
        await good.close()
        await untrusting.close()
        await server.stop()
