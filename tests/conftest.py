"""Shared fixtures: an in-process embedded catalog and a catalog client bound to it."""

from __future__ import annotations

import contextlib
import importlib
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _import_dnspython() -> None:
    """Import dnspython's top-level ``dns`` with the repository root hidden from sys.path.

    The root holds our ``dns/`` folder (installed as ``waypost.dns``); pytest and ``python -m``
    put the root on sys.path, where it would shadow dnspython. Once dnspython's ``dns`` is in
    sys.modules, every later ``import dns.x`` resolves inside it.
    """
    loaded = sys.modules.get("dns")
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve().parent == ROOT / "dns":
        for key in [k for k in sys.modules if k == "dns" or k.startswith("dns.")]:
            del sys.modules[key]
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT]
    try:
        for module in ("dns", "dns.asyncquery", "dns.edns", "dns.flags", "dns.message", "dns.name",
                       "dns.opcode", "dns.query", "dns.rcode", "dns.rdataclass", "dns.rdatatype", "dns.rrset",
                       "dns.resolver"):
            importlib.import_module(module)
    finally:
        sys.path[:] = saved


_import_dnspython()


@pytest.fixture
def refusing_port():
    """Make ports that refuse connections for the whole test: each is bound but never listens.

    A port from `free_port()` is free only for a moment: the ambassador under test (bound to port 0)
    or a connect's own source port can take it, and a "dead" backend then answers. A bound socket
    holds the port, and a connect to it is refused (RST). Call ``refusing_port()`` for a port, or
    ``refusing_port(sock=True)`` for the bound socket itself (to listen on it later)."""
    held: list[socket.socket] = []

    def make(sock: bool = False) -> Any:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        held.append(s)
        return s if sock else s.getsockname()[1]

    yield make
    for s in held:
        s.close()


@contextlib.asynccontextmanager
async def running_catalog(**kwargs: Any) -> AsyncIterator[Any]:
    """An embedded catalog, ``CatalogServer(**kwargs)``, started in this event loop and stopped on exit."""
    from waypost.server.app import CatalogServer

    server = CatalogServer(**kwargs)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def catalog_server(tmp_path):
    """The embedded catalog on a free loopback port, in this test's event loop (no data dir)."""
    async with running_catalog(host="127.0.0.1", port=0) as server:
        yield server


@pytest.fixture
async def catalog_client(catalog_server):
    """A :class:`waypost.catalog.CatalogClient` pointed at :func:`catalog_server`."""
    from waypost.catalog import CatalogClient
    from waypost.config import CatalogConfig

    client = CatalogClient(CatalogConfig.from_url(catalog_server.url))
    try:
        yield client
    finally:
        await client.close()
