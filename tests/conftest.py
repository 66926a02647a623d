"""Shared fixtures: an in-process embedded catalog and a catalog client bound to it."""

from __future__ import annotations

import socket

import pytest


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    """A port that is free right now on `host`."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.fixture
async def catalog_server(tmp_path):
    """The embedded catalog on a free loopback port, in this test's event loop (no data dir)."""
    from waypost.server.app import CatalogServer

    server = CatalogServer(host="127.0.0.1", port=0)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


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
