"""The read-only catalog client (h11) the sidecar ambassador uses: same answers as CatalogClient."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from tests.catalog.test_client import CONSUL_URL, next_value, tls_files, unique  # noqa: F401 - fixture
from waypost.catalog import CatalogClient, ServiceDef
from waypost.catalog.reader import CatalogReader, CatalogReadError
from waypost.config import CatalogConfig
from waypost.server.app import CatalogServer


@pytest.fixture(params=["embedded", pytest.param("consul", marks=pytest.mark.consul)])
async def pair(request):
    """(writer CatalogClient, CatalogReader) on the same catalog: embedded, or a real agent if given."""
    server = None
    if request.param == "consul":
        if not CONSUL_URL:
            pytest.skip("no real Consul agent: Consul can't be installed here; set "
                        "WAYPOST_TEST_CONSUL=http://HOST:8500 to run this suite against one")
        config = CatalogConfig.from_url(CONSUL_URL)
    else:
        server = CatalogServer(port=0)
        await server.start()
        config = CatalogConfig.from_url(server.url)
    writer, reader = CatalogClient(config), CatalogReader(config)
    yield writer, reader
    await reader.close()
    await writer.close()
    if server is not None:
        await server.stop()


async def test_reads_match_the_full_client(pair) -> None:
    writer, reader = pair
    name = unique("read")
    await writer.register(ServiceDef(id=f"{name}-1", name=name, address="10.0.0.1", port=80, tags=("blue",)))
    await writer.register(ServiceDef(id=f"{name}-2", name=name, address="10.0.0.2", port=81))
    assert await reader.instances(name) == await writer.instances(name)
    assert [i.id for i in await reader.instances(name, tag="blue")] == [f"{name}-1"]
    assert (await reader.services())[name] == (await writer.services())[name]
    assert await reader.instances(unique("none")) == []


async def test_watch_wakes_on_change_and_filters_tag(pair) -> None:
    writer, reader = pair
    name = unique("watched")
    it = reader.watch(name, wait="5s").__aiter__()
    tagged = reader.watch(name, tag="b", wait="5s").__aiter__()
    try:
        assert await next_value(it) == []
        assert await next_value(tagged) == []
        await writer.register(ServiceDef(id=f"{name}-a", name=name, address="10.0.0.1", port=1, tags=("a",)))
        assert [i.id for i in await next_value(it)] == [f"{name}-a"]
        await writer.register(ServiceDef(id=f"{name}-b", name=name, address="10.0.0.2", port=2, tags=("b",)))
        assert [i.id for i in await next_value(it)] == [f"{name}-a", f"{name}-b"]
        assert [i.id for i in await next_value(tagged)] == [f"{name}-b"]
        await writer.deregister(f"{name}-a")
        assert [i.id for i in await next_value(it)] == [f"{name}-b"]
    finally:
        await it.aclose()
        await tagged.aclose()


async def test_watch_survives_catalog_restart_and_reuses_connections() -> None:
    """Index reset on restart, last value kept while down; a kept-alive connection the old catalog
    closed is replaced transparently."""
    server = CatalogServer(port=0)
    await server.start()
    port = server.port
    config = CatalogConfig.from_url(server.url)
    writer, reader = CatalogClient(config), CatalogReader(config)
    watch = reader.watch("db", wait="2s")
    it = watch.__aiter__()
    try:
        assert await next_value(it) == []
        for n in range(3):
            await writer.register(ServiceDef(id=f"db-{n}", name="db", address="10.0.0.1", port=5432 + n))
            await next_value(it)
        assert "db" in await reader.services()
        high_index = watch.index
        await server.stop()
        pending = asyncio.ensure_future(it.__anext__())
        await asyncio.sleep(1.0)
        assert not pending.done() and not watch.reachable
        assert [i.id for i in watch.value] == ["db-0", "db-1", "db-2"]
        server = CatalogServer(port=port)
        await server.start()
        assert await asyncio.wait_for(pending, 10) == []
        assert watch.index < high_index
        assert "db" not in await reader.services()  # a fresh catalog, read through a new connection
    finally:
        await it.aclose()
        await reader.close()
        await writer.close()
        await server.stop()


async def test_unreachable_catalog_raises_oserror() -> None:
    reader = CatalogReader(CatalogConfig.from_url("http://127.0.0.1:9"))
    with pytest.raises(OSError):
        await reader.services()


async def test_bad_token_is_a_clear_error() -> None:
    server = CatalogServer(port=0, token="s3cret")
    server.token_reads = True  # reads need the token too (`waypost catalog --token-reads`)
    await server.start()
    try:
        async with CatalogClient(CatalogConfig.from_url(server.url, token="s3cret")) as writer:
            await writer.register(ServiceDef(id="x-1", name="x", address="10.0.0.1", port=1))
        good = CatalogReader(CatalogConfig.from_url(server.url, token="s3cret"))
        bad = CatalogReader(CatalogConfig.from_url(server.url, token="wrong"))
        assert "x" in await good.services()
        with pytest.raises(CatalogReadError, match="HTTP 403"):
            await bad.services()
        await good.close()
        await bad.close()
    finally:
        await server.stop()


@pytest.mark.parametrize("bad", ["../../kv/pwned", "a/b", ".."])
async def test_names_that_could_escape_the_url_path_are_refused(bad: str) -> None:
    reader = CatalogReader(CatalogConfig.from_url("http://127.0.0.1:9"))
    with pytest.raises(ValueError, match="catalog URL"):
        await reader.instances(bad)


async def test_https_with_ca_file_and_token(tls_files) -> None:  # noqa: F811 - pytest fixture
    from waypost.server.cli import tls_context

    context = tls_context(str(tls_files / "server.pem"), str(tls_files / "server.key"))
    server = CatalogServer(port=0, token="t0ken", ssl_context=context)
    await server.start()
    writer = CatalogClient(CatalogConfig.from_url(server.url, token="t0ken", ca_file=str(tls_files / "ca.pem")))
    reader = CatalogReader(CatalogConfig.from_url(server.url, token="t0ken", ca_file=str(tls_files / "ca.pem")))
    untrusting = CatalogReader(CatalogConfig.from_url(server.url, token="t0ken"))  # system CAs only
    try:
        await writer.register(ServiceDef(id="tls-1", name="tls", address="10.0.0.1", port=443))
        it = reader.watch("tls", wait="2s").__aiter__()
        assert [i.id for i in await next_value(it)] == ["tls-1"]
        await it.aclose()
        with pytest.raises(OSError):  # ssl.SSLCertVerificationError is an OSError
            await untrusting.services()
    finally:
        await reader.close()
        await untrusting.close()
        await writer.close()
        await server.stop()


def test_reader_loads_neither_aiohttp_nor_py_consul() -> None:
    """What keeps the sidecar small: importing the ambassador and its reader pulls no HTTP stack."""
    code = ("import sys, waypost.ambassador.cli, waypost.ambassador.routes, waypost.catalog.reader; "
            "print(sorted(m for m in ('aiohttp', 'consul', 'requests') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


async def test_watch_services_wakes_on_new_names_and_tags(pair) -> None:
    writer, reader = pair
    name = unique("listed")
    it = reader.watch_services(wait="5s").__aiter__()
    try:
        first = await next_value(it)
        assert name not in first
        await writer.register(ServiceDef(id=f"{name}-1", name=name, address="10.0.0.1", port=1, tags=("v1",)))
        async with asyncio.timeout(5):
            while name not in (seen := await it.__anext__()):
                pass
        assert seen[name] == ("v1",)
        assert seen == {k: tuple(v) for k, v in (await writer.services()).items()}
    finally:
        await it.aclose()


def test_dns_loads_neither_aiohttp_nor_py_consul() -> None:
    """`waypost dns` only reads the catalog too: its process stays free of the HTTP stack."""
    code = ("import sys, waypost.dns.cli; "
            "print(sorted(m for m in ('aiohttp', 'consul', 'requests') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
