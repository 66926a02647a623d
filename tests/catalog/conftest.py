"""Fixtures shared by the catalog tests: py-consul's async client and a raw HTTP session.

Each module defines its own ``server`` fixture (node name and reaper settings differ).
"""

from __future__ import annotations

import aiohttp
import consul.aio
import pytest


@pytest.fixture
async def aio(server):
    """py-consul's asyncio client bound to the module's ``server``."""
    c = consul.aio.Consul(host="127.0.0.1", port=server.port)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
async def http():
    """A raw aiohttp session, for headers and error bodies."""
    async with aiohttp.ClientSession() as session:
        yield session
