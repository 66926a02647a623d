"""The embedded catalog's metrics on Consul's path, /v1/agent/metrics, as a scraper reads them."""

from __future__ import annotations

import consul.aio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import running_catalog


@pytest.fixture
async def server():
    async with running_catalog(port=0, node_name="metrics-node") as srv:
        yield srv


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_prometheus_format_counts_what_the_catalog_holds(server, aio: consul.aio.Consul, http) -> None:
    url = f"http://127.0.0.1:{server.port}/v1/agent/metrics?format=prometheus"
    async with http.get(url) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
        before = samples(await resp.text())
    for i in range(3):
        await aio.agent.service.register("redis", service_id=f"redis-{i}", port=6379 + i,
                                         check=consul.Check.ttl("30s") if i == 0 else None)
    await aio.agent.service.register("web", service_id="web-1", port=80)
    await aio.kv.put("a/b", "1")
    async with http.get(url) as resp:
        after = samples(await resp.text())
    assert after[("waypost_catalog_service_instances", ())] == before[("waypost_catalog_service_instances", ())] + 4
    assert after[("waypost_catalog_services", ())] == before[("waypost_catalog_services", ())] + 2
    assert after[("waypost_catalog_kv_keys", ())] == 1
    assert after[("waypost_catalog_checks", (("status", "critical"),))] == 1  # a TTL check starts critical
    assert after[("waypost_catalog_index", ())] > before[("waypost_catalog_index", ())]
    assert after[("waypost_catalog_nodes", ())] == 1


async def test_json_format_is_consuls_shape(server, http) -> None:
    async with http.get(f"http://127.0.0.1:{server.port}/v1/agent/metrics") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert set(body) == {"Timestamp", "Gauges", "Points", "Counters", "Samples"}
    assert body["Timestamp"].endswith("+0000 UTC")
    names = {g["Name"] for g in body["Gauges"]}
    assert {"waypost_catalog_index", "waypost_catalog_blocking_queries"} <= names
