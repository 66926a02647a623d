"""DNS test fixtures: a server fed through ``CatalogView.apply`` and dnspython query helpers.

(dnspython is imported with the repository root hidden by tests/conftest.py.)
"""

from __future__ import annotations

import pytest

from tests.dns.helpers import start_dns  # noqa: E402


@pytest.fixture(params=["batched", "datagram"])
async def make_dns(request):
    """Factory: ``await make_dns(view=None, **DnsConfig fields)`` → a started DnsServer on a free port.

    Every test runs against both UDP paths: recvmmsg/sendmmsg batches and the asyncio
    DatagramProtocol fallback used where those are unavailable.
    """
    started = []

    async def factory(view=None, **fields):
        server = await start_dns(view=view, batch_udp=request.param == "batched", **fields)
        started.append(server)
        return server

    yield factory
    for server in started:
        await server.stop()
        await server.view.stop()
