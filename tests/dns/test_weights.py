"""SRV weights from the service's ``Weights``, registered through the embedded catalog's HTTP API."""

from __future__ import annotations

import aiohttp

from tests.dns.helpers import records
from tests.dns.test_live import until
from waypost.catalog import CatalogClient
from waypost.dns import CatalogView


async def register(url: str, body: dict) -> None:
    async with aiohttp.ClientSession() as session, session.put(f"{url}/v1/agent/service/register",
                                                               json=body) as resp:
        assert resp.status == 200, await resp.text()


def weights(msg) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """SRV weight by target port."""
    return {r.split()[2]: int(r.split()[1]) for r in records(msg, "SRV")}


async def test_srv_weights_follow_the_service_weights(catalog_server, catalog_client: CatalogClient,
                                                      make_dns) -> None:
    url = catalog_server.url
    await register(url, {"ID": "w1", "Name": "weighted", "Address": "10.3.0.1", "Port": 81,
                         "Weights": {"Passing": 10, "Warning": 1}})
    await register(url, {"ID": "w2", "Name": "weighted", "Address": "10.3.0.2", "Port": 82,
                         "Weights": {"Passing": 3, "Warning": 2},
                         "Check": {"CheckID": "w2:ttl", "TTL": "60s", "Status": "warning"}})
    await register(url, {"ID": "w3", "Name": "weighted", "Address": "10.3.0.3", "Port": 83})  # no Weights
    view = CatalogView(catalog_client)
    server = await make_dns(view)
    await view.wait_synced(5)
    want = {"81": 10, "82": 2, "83": 1}  # passing → Passing, warning → Warning, none → Consul's 1
    await until(server, "_weighted._tcp.service.consul", lambda m: weights(m) == want, "SRV")
    # a warning instance back to passing gets its Passing weight
    await catalog_client.update_ttl("w2:ttl", "passing", "ok")
    want = {"81": 10, "82": 3, "83": 1}
    await until(server, "weighted.service.consul", lambda m: weights(m) == want, "SRV")
