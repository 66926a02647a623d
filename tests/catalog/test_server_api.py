"""The embedded catalog's HTTP API through real clients: py-consul (sync and aio) and raw aiohttp."""

from __future__ import annotations

import asyncio
import base64
import json

import aiohttp
import consul
import consul.aio
import pytest

from tests.conftest import running_catalog
from waypost.server.app import CatalogServer


@pytest.fixture
async def server():
    async with running_catalog(port=0, node_name="node-a") as srv:
        yield srv


async def call(http, method, url, **kw):
    async with http.request(method, url, **kw) as resp:
        return resp.status, await resp.text(), resp.headers


async def test_agent_registration_round_trip_with_sync_client(server):
    c = consul.Consul(host="127.0.0.1", port=server.port)

    def work():
        c.agent.service.register("web", service_id="web-1", address="10.1.2.3", port=8080, tags=["v1", "blue"],
                                 meta={"team": "core"}, check=consul.Check.ttl("30s"),
                                 weights={"Passing": 10, "Warning": 1})
        return c.agent.services(), c.agent.checks(), c.catalog.service("web"), c.health.service("web")

    services, checks, (idx, cat), (_, health) = await asyncio.to_thread(work)
    svc = services["web-1"]
    assert svc["Service"] == "web" and svc["Address"] == "10.1.2.3" and svc["Port"] == 8080
    assert svc["Tags"] == ["v1", "blue"] and svc["Meta"] == {"team": "core"}
    assert svc["Weights"] == {"Passing": 10, "Warning": 1} and svc["EnableTagOverride"] is False
    assert svc["Datacenter"] == "dc1"
    chk = checks["service:web-1"]
    assert chk["Status"] == "critical" and chk["Type"] == "ttl" and chk["ServiceName"] == "web"
    assert chk["Name"] == "Service 'web' check" and chk["ServiceTags"] == ["v1", "blue"]
    assert int(idx) >= 1
    assert cat[0]["ServiceID"] == "web-1" and cat[0]["Node"] == "node-a" and cat[0]["ServicePort"] == 8080
    assert health[0]["Service"]["ID"] == "web-1"
    assert {c["CheckID"] for c in health[0]["Checks"]} == {"serfHealth", "service:web-1"}


async def test_local_node_exists_with_serf_health(server, aio):
    _, nodes = await aio.catalog.nodes()
    assert [n["Node"] for n in nodes] == ["node-a"]
    _, checks = await aio.health.node("node-a")
    serf = [c for c in checks if c["CheckID"] == "serfHealth"][0]
    assert serf["Status"] == "passing" and serf["Output"] == "Agent alive and reachable"
    info = await aio.agent.self()
    assert info["Config"]["NodeName"] == "node-a" and info["Config"]["Datacenter"] == "dc1"
    assert info["Member"]["Name"] == "node-a"
    assert [m["Name"] for m in await aio.agent.members()] == ["node-a"]
    assert await aio.status.leader() and len(await aio.status.peers()) == 1
    assert await aio.catalog.datacenters() == ["dc1"]


async def test_multiple_checks_get_numbered_ids_and_replace_existing_checks(server, aio, http):
    body = {"Name": "api", "ID": "api-1", "Port": 1,
            "Checks": [{"TTL": "10s"}, {"TTL": "20s", "Status": "passing"}]}
    status, _, _ = await call(http, "PUT", server.url + "/v1/agent/service/register", data=json.dumps(body))
    assert status == 200
    checks = await aio.agent.checks()
    assert {"service:api-1:1", "service:api-1:2"} <= set(checks)
    assert checks["service:api-1:2"]["Status"] == "passing"
    # without replace-existing-checks the old checks stay; with it they go
    body2 = {"Name": "api", "ID": "api-1", "Port": 1, "Check": {"CheckID": "only", "TTL": "5s"}}
    await call(http, "PUT", server.url + "/v1/agent/service/register", data=json.dumps(body2))
    assert {"service:api-1:1", "service:api-1:2", "only"} <= set(await aio.agent.checks())
    await call(http, "PUT", server.url + "/v1/agent/service/register?replace-existing-checks=true",
               data=json.dumps(body2))
    checks = await aio.agent.checks()
    assert "only" in checks and "service:api-1:1" not in checks and "service:api-1:2" not in checks


async def test_reregistering_identical_service_does_not_move_the_index(server, aio):
    await aio.agent.service.register("db", service_id="db-1", port=5432, check=consul.Check.ttl("30s"))
    idx1, _ = await aio.health.service("db")
    await aio.agent.service.register("db", service_id="db-1", port=5432, check=consul.Check.ttl("30s"))
    idx2, _ = await aio.health.service("db")
    assert idx1 == idx2


async def test_deregister_and_unknown_ids(server, aio, http):
    await aio.agent.service.register("cache", service_id="cache-1", port=6379)
    assert await aio.agent.service.deregister("cache-1")
    assert "cache-1" not in await aio.agent.services()
    status, text, _ = await call(http, "PUT", server.url + "/v1/agent/service/deregister/cache-1")
    assert status == 404
    assert text == 'Unknown service ID "cache-1". Ensure that the service ID is passed, not the service name.'
    status, text, _ = await call(http, "GET", server.url + "/v1/agent/service/nope")
    assert (status, text) == (404, "unknown service ID: nope")
    status, text, _ = await call(http, "PUT", server.url + "/v1/agent/check/pass/nope")
    assert status == 404
    assert text == 'Unknown check ID "nope". Ensure that the check ID is passed, not the check name.'
    status, text, _ = await call(http, "PUT", server.url + "/v1/agent/service/maintenance/nope?enable=true")
    assert (status, text) == (404, 'No service registered with ID "nope"')


async def test_agent_service_by_id_has_content_hash(server, http):
    await call(http, "PUT", server.url + "/v1/agent/service/register", data=json.dumps({"Name": "x", "Port": 1}))
    status, text, headers = await call(http, "GET", server.url + "/v1/agent/service/x")
    assert status == 200
    data = json.loads(text)
    assert data["ID"] == "x" and data["ContentHash"] == headers["X-Consul-ContentHash"]


async def test_catalog_register_and_deregister_external_node(server, aio, http):
    body = {"Node": "ext", "Address": "192.0.2.10", "NodeMeta": {"rack": "r1"},
            "Service": {"Service": "legacy", "ID": "legacy-1", "Port": 25, "Tags": ["smtp"]},
            "Check": {"CheckID": "legacy-ok", "Name": "legacy ok", "Status": "passing", "ServiceID": "legacy-1"}}
    status, text, _ = await call(http, "PUT", server.url + "/v1/catalog/register", data=json.dumps(body))
    assert (status, text) == (200, "true")
    _, services = await aio.catalog.services()
    assert services["legacy"] == ["smtp"]
    _, node = await aio.catalog.node("ext")
    assert node["Node"]["Address"] == "192.0.2.10" and "legacy-1" in node["Services"]
    _, entries = await aio.health.service("legacy", passing=True)
    assert [e["Node"]["Node"] for e in entries] == ["ext"]
    _, by_meta = await aio.catalog.nodes(node_meta={"rack": "r1"})
    assert [n["Node"] for n in by_meta] == ["ext"]
    # the external service is not the agent's
    assert "legacy-1" not in await aio.agent.services()
    status, _, _ = await call(http, "PUT", server.url + "/v1/catalog/deregister", data=json.dumps({"Node": "ext"}))
    assert status == 200
    _, node = await aio.catalog.node("ext")
    assert node is None
    status, text, _ = await call(http, "PUT", server.url + "/v1/catalog/register", data=json.dumps({"Address": "x"}))
    assert (status, text) == (400, "Must provide node")


async def test_health_service_tags_and_passing(server, aio):
    await aio.agent.service.register("svc", service_id="a", port=1, tags=["prod", "v2"],
                                     check={"TTL": "30s", "Status": "passing"})
    await aio.agent.service.register("svc", service_id="b", port=2, tags=["prod"], check=consul.Check.ttl("30s"))
    _, all_entries = await aio.health.service("svc")
    assert sorted(e["Service"]["ID"] for e in all_entries) == ["a", "b"]
    _, passing = await aio.health.service("svc", passing=True)
    assert [e["Service"]["ID"] for e in passing] == ["a"]
    _, tagged = await aio.health.service("svc", tag=["prod", "v2"])
    assert [e["Service"]["ID"] for e in tagged] == ["a"]
    _, cat = await aio.catalog.service("svc", tag="prod")
    assert sorted(s["ServiceID"] for s in cat) == ["a", "b"]
    _, crit = await aio.health.state("critical")
    assert "service:b" in {c["CheckID"] for c in crit}
    _, svc_checks = await aio.health.checks("svc")
    assert {c["CheckID"] for c in svc_checks} == {"service:a", "service:b"}


async def test_filters(server, aio):
    await aio.agent.service.register("f", service_id="f1", port=80, tags=["blue"], meta={"zone": "a"})
    await aio.agent.service.register("f", service_id="f2", port=81, tags=["green"], meta={"zone": "b"})
    got = await aio.agent.services(filter_expr='Meta.zone == "b"')
    assert list(got) == ["f2"]
    _, entries = await aio.health.service("f", filter_expr='"blue" in Service.Tags')
    assert [e["Service"]["ID"] for e in entries] == ["f1"]
    _, cat = await aio.catalog.service("f", filter_expr="ServicePort == 81")
    assert [c["ServiceID"] for c in cat] == ["f2"]


async def test_bad_filter_is_400(server, http):
    status, text, _ = await call(http, "GET", server.url + "/v1/agent/services", params={"filter": "Service =="})
    assert status == 400 and text.startswith("Failed to create boolean expression evaluator")


async def test_kv_put_get_cas_flags_recurse_keys_raw(server, aio, http):
    assert await aio.kv.put("app/config/a", "1", flags=42)
    assert await aio.kv.put("app/config/b", "2")
    assert await aio.kv.put("app/other", "3")
    idx, entry = await aio.kv.get("app/config/a")
    assert entry["Value"] == b"1" and entry["Flags"] == 42 and entry["Key"] == "app/config/a"
    assert entry["LockIndex"] == 0 and entry["CreateIndex"] == entry["ModifyIndex"] == int(idx)
    # cas: wrong index fails, right index succeeds, cas=0 only creates
    assert not await aio.kv.put("app/config/a", "x", cas=entry["ModifyIndex"] + 100)
    assert await aio.kv.put("app/config/a", "x", cas=entry["ModifyIndex"])
    assert not await aio.kv.put("app/config/a", "y", cas=0)
    assert await aio.kv.put("app/new", "z", cas=0)
    _, entries = await aio.kv.get("app/config", recurse=True)
    assert [e["Key"] for e in entries] == ["app/config/a", "app/config/b"]
    _, keys = await aio.kv.get("app/", keys=True, separator="/")
    assert keys == ["app/config/", "app/new", "app/other"]
    status, text, headers = await call(http, "GET", server.url + "/v1/kv/app/config/a?raw")
    assert (status, text) == (200, "x") and headers["X-Consul-Index"]
    status, text, _ = await call(http, "GET", server.url + "/v1/kv/app/missing")
    assert status == 404 and text == ""
    # JSON shape: base64 Value
    status, text, _ = await call(http, "GET", server.url + "/v1/kv/app/other")
    assert json.loads(text)[0]["Value"] == base64.b64encode(b"3").decode()
    # delete with cas, then recurse
    _, entry = await aio.kv.get("app/other")
    assert not await aio.kv.delete("app/other", cas=entry["ModifyIndex"] + 1)
    assert await aio.kv.delete("app/other", cas=entry["ModifyIndex"])
    assert await aio.kv.delete("app/config", recurse=True)
    _, rest = await aio.kv.get("app", recurse=True)
    assert [e["Key"] for e in rest] == ["app/new"]


async def test_kv_errors(server, http):
    status, text, _ = await call(http, "PUT", server.url + "/v1/kv/lock?acquire=abc", data=b"x")
    assert status == 400 and "sessions" in text
    status, text, _ = await call(http, "PUT", server.url + "/v1/kv/k?flags=abc", data=b"x")
    assert status == 400 and "flags" in text
    status, text, _ = await call(http, "PUT", server.url + "/v1/kv/k?cas=1&acquire=s", data=b"x")
    assert status == 400 and text.startswith("Conflicting flags")
    status, text, _ = await call(http, "PUT", server.url + "/v1/kv/", data=b"x")
    assert (status, text) == (400, "Missing key name")
    status, _, _ = await call(http, "PUT", server.url + "/v1/kv/big", data=b"x" * (512 * 1024 + 1))
    assert status == 413


@pytest.mark.parametrize("path,body,expect", [
    ("/v1/agent/service/register", b"{not json", "Request decode failed"),
    ("/v1/agent/service/register", b"[1, 2]", "Request decode failed"),
    ("/v1/agent/service/register", b'{"Name": "x", "Port": "eighty"}', "Port"),
    ("/v1/agent/service/register", b'{"Port": 1}', "Missing service name"),
    ("/v1/agent/service/register", b'{"Name": "x", "Check": {"Args": ["/bin/true"], "Interval": "10s"}}',
     "script checks are not supported"),
    ("/v1/agent/service/register", b'{"Name": "x", "Check": {"HTTP": "http://127.0.0.1/"}}',
     "Interval must be > 0"),
    ("/v1/agent/service/register", b'{"Name": "x", "Check": {"TTL": "10s", "Status": "bogus"}}',
     "Status for checks must 'passing', 'warning', 'critical'"),
    ("/v1/agent/service/register", b'{"Name": "x", "Check": {"TTL": "ten seconds"}}', "TTL"),
    ("/v1/agent/check/register", b'{"TTL": "10s"}', "Missing check name"),
    ("/v1/agent/check/update/serfHealth", b'{"Status": "meh"}', "Invalid check status: 'meh'"),
    ("/v1/catalog/register", b"{", "Request decode failed"),
])
async def test_bad_bodies_are_400_with_a_message(server, http, path, body, expect):
    status, text, _ = await call(http, "PUT", server.url + path, data=body)
    assert status == 400, text
    assert expect in text


@pytest.mark.parametrize("query,expect", [
    ("index=abc", "Invalid index"),
    ("index=-1", "Invalid index"),
    ("index=1&wait=xyz", "Invalid wait time"),
    ("index=1&wait=10", "Invalid wait time"),
])
async def test_bad_query_strings_are_400(server, http, query, expect):
    status, text, _ = await call(http, "GET", server.url + "/v1/health/service/web?" + query)
    assert status == 400 and text.startswith(expect)


async def test_unknown_datacenter_is_500_no_path(server, aio, http):
    status, text, _ = await call(http, "GET", server.url + "/v1/catalog/services?dc=elsewhere")
    assert (status, text) == (500, "No path to datacenter")
    with pytest.raises(consul.ConsulException):
        await aio.health.service("web", dc="elsewhere")
    status, _, _ = await call(http, "GET", server.url + "/v1/catalog/services?dc=dc1")
    assert status == 200


async def test_unknown_path_and_method(server, http):
    status, text, _ = await call(http, "GET", server.url + "/v1/nothing/here")
    assert (status, text) == (404, "404 page not found")
    status, text, headers = await call(http, "POST", server.url + "/v1/catalog/register")
    assert status == 405 and "PUT" in headers["Allow"]


async def test_read_headers(server, http):
    status, _, headers = await call(http, "GET", server.url + "/v1/catalog/services")
    assert status == 200
    assert headers["X-Consul-KnownLeader"] == "true" and headers["X-Consul-LastContact"] == "0"
    assert int(headers["X-Consul-Index"]) >= 1


async def test_token_enforcement():
    srv = CatalogServer(port=0, node_name="n", token="s3cret")
    await srv.start()
    try:
        async with aiohttp.ClientSession() as http:
            reg = json.dumps({"Name": "t", "Port": 1})
            status, text, _ = await call(http, "PUT", srv.url + "/v1/agent/service/register", data=reg)
            assert (status, text) == (403, "Permission denied")
            status, _, _ = await call(http, "PUT", srv.url + "/v1/agent/service/register", data=reg,
                                      headers={"X-Consul-Token": "wrong"})
            assert status == 403
            for kw in ({"headers": {"X-Consul-Token": "s3cret"}}, {"params": {"token": "s3cret"}},
                       {"headers": {"Authorization": "Bearer s3cret"}}):
                status, _, _ = await call(http, "PUT", srv.url + "/v1/agent/service/register", data=reg, **kw)
                assert status == 200
            status, _, _ = await call(http, "GET", srv.url + "/v1/agent/services")
            assert status == 200  # reads stay open without --token-reads
            srv.token_reads = True
            status, _, _ = await call(http, "GET", srv.url + "/v1/agent/services")
            assert status == 403
        ok = consul.aio.Consul(host="127.0.0.1", port=srv.port, token="s3cret")
        try:
            assert "t" in await ok.agent.services()
        finally:
            await ok.close()
    finally:
        await srv.stop()


async def test_agent_health_endpoints(server, aio, http):
    await aio.agent.service.register("hh", service_id="hh-1", port=1, check={"TTL": "30s", "Status": "passing"})
    await aio.agent.service.register("hh", service_id="hh-2", port=2, check={"TTL": "30s", "Status": "warning"})
    status, text, _ = await call(http, "GET", server.url + "/v1/agent/health/service/id/hh-1")
    assert status == 200 and json.loads(text)["AggregatedStatus"] == "passing"
    status, text, _ = await call(http, "GET", server.url + "/v1/agent/health/service/id/hh-2?format=text")
    assert (status, text) == (429, "warning")
    status, text, _ = await call(http, "GET", server.url + "/v1/agent/health/service/name/hh")
    assert status == 429 and len(json.loads(text)) == 2
    status, text, _ = await call(http, "GET", server.url + "/v1/agent/health/service/id/none?format=text")
    assert (status, text) == (404, "ServiceId none not found")


async def catalog_services(http, url, expr=None):
    params = {"filter": expr} if expr is not None else {}
    async with http.get(url + "/v1/catalog/services", params=params) as resp:
        assert resp.status == 200, await resp.text()
        return int(resp.headers["X-Consul-Index"]), await resp.json()


async def test_catalog_services_filter_applies_per_instance(server, aio, http):
    """Consul's List Services: the filter runs on each ServiceNode; survivors are grouped by name."""
    await aio.agent.service.register("web", service_id="web-1", port=1, tags=["v1", "blue"], meta={"team": "core"})
    await aio.agent.service.register("web", service_id="web-2", port=2, tags=["v2", "green"], meta={"team": "edge"})
    await aio.agent.service.register("db", service_id="db-1", port=3, tags=["primary"], meta={"team": "core"})
    body = {"Node": "ext", "Address": "192.0.2.20", "NodeMeta": {"rack": "r9"},
            "Service": {"Service": "cache", "ID": "cache-1", "Port": 4, "Tags": ["hot"]}}
    assert (await call(http, "PUT", server.url + "/v1/catalog/register", data=json.dumps(body)))[0] == 200
    url = server.url
    idx, everything = await catalog_services(http, url)
    assert {"web", "db", "cache"} <= set(everything)
    assert await catalog_services(http, url, 'ServiceMeta.team == "core"') == (
        idx, {"web": ["blue", "v1"], "db": ["primary"]})
    assert (await catalog_services(http, url, '"green" in ServiceTags'))[1] == {"web": ["green", "v2"]}
    assert (await catalog_services(http, url, 'ServiceName == "db"'))[1] == {"db": ["primary"]}
    assert (await catalog_services(http, url, 'NodeMeta.rack == "r9"'))[1] == {"cache": ["hot"]}
    assert (await catalog_services(http, url, 'ServiceName == "nothing"'))[1] == {}


async def test_catalog_services_bad_filter_is_400(server, http):
    status, text, _ = await call(http, "GET", server.url + "/v1/catalog/services?filter=ServiceName%20%3D%3D")
    assert status == 400 and text


@pytest.mark.parametrize("path", ["/v1/agent/service/deregister/web1", "/v1/agent/service/maintenance/web1",
                                  "/v1/agent/service/register"])
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
async def test_put_only_agent_service_paths_answer_405(server, http, path, method):
    status, text, headers = await call(http, method, server.url + path)
    assert (status, text) == (405, f"method {method} not allowed")
    assert headers["Allow"] == "PUT"


async def test_put_only_agent_paths_still_take_put_and_get_service_still_works(server, http):
    body = json.dumps({"Name": "web", "ID": "web1", "Port": 80})
    assert (await call(http, "PUT", server.url + "/v1/agent/service/register", data=body))[0] == 200
    assert (await call(http, "GET", server.url + "/v1/agent/service/web1"))[0] == 200
    assert (await call(http, "PUT", server.url + "/v1/agent/service/maintenance/web1?enable=true"))[0] == 200
    assert (await call(http, "PUT", server.url + "/v1/agent/service/deregister/web1"))[0] == 200
    status, text, _ = await call(http, "GET", server.url + "/v1/agent/service/web1")
    assert (status, text) == (404, "unknown service ID: web1")
