"""Behaviour a client sees that must match Consul's source: unchanged KV writes, CAS deletes, the
agent's local health view (maintenance, serfHealth), TTL re-registration, fresh health/service
answers, service tagged addresses and the order of a health entry's checks."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import consul
import consul.aio
import pytest

from tests.catalog.test_server_checks import wait_status
from tests.conftest import running_catalog

NODE = "node-p"


@pytest.fixture
async def server():
    async with running_catalog(port=0, node_name=NODE) as srv:
        yield srv


async def call(http, method, url, **kw):
    """(status, decoded JSON or text, headers) of one request."""
    async with http.request(method, url, **kw) as resp:
        text = await resp.text()
        try:
            body = json.loads(text)
        except ValueError:
            body = text
        return resp.status, body, resp.headers


async def put_json(http, url, body):
    status, text, _ = await call(http, "PUT", url, data=json.dumps(body))
    assert status == 200, text


# ---- KV: unchanged writes (Consul's kvsSetTxn) and CAS deletes (kvsDeleteCASTxn) ---------------


async def test_unchanged_kv_put_keeps_modify_index_so_cas_keeps_succeeding(server, aio):
    assert await aio.kv.put("lock/leader", "owner-A") is True
    _, entry = await aio.kv.get("lock/leader")
    first = entry["ModifyIndex"]
    for _ in range(3):  # re-asserting the value with the index last read
        assert await aio.kv.put("lock/leader", "owner-A", cas=first) is True
    _, entry = await aio.kv.get("lock/leader")
    assert (entry["ModifyIndex"], entry["CreateIndex"], entry["Value"]) == (first, first, b"owner-A")
    assert await aio.kv.put("lock/leader", "owner-A", cas=0) is False  # still "only if absent"

    assert await aio.kv.put("lock/leader", "owner-A", flags=3) is True  # new flags: a real write
    _, entry = await aio.kv.get("lock/leader")
    assert entry["ModifyIndex"] > first and entry["Flags"] == 3
    assert await aio.kv.put("lock/leader", "owner-B", cas=first) is False  # stale index
    assert await aio.kv.put("lock/leader", "owner-B", cas=entry["ModifyIndex"]) is True
    _, entry = await aio.kv.get("lock/leader")
    assert entry["Value"] == b"owner-B" and entry["Flags"] == 0


async def test_unchanged_kv_put_wakes_no_watcher_and_a_change_does(server, aio, http):
    await call(http, "PUT", server.url + "/v1/kv/cfg/empty", data=b"")
    assert await aio.kv.put("cfg/a", "v1") is True
    idx, _ = await aio.kv.get("cfg/a")

    async def rewrite_same():
        await asyncio.sleep(0.2)
        assert await aio.kv.put("cfg/a", "v1") is True
        await call(http, "PUT", server.url + "/v1/kv/cfg/empty", data=b"")

    started = time.monotonic()
    writer = asyncio.create_task(rewrite_same())
    same_idx, entry = await aio.kv.get("cfg/a", index=idx, wait="1s")
    await writer
    assert time.monotonic() - started >= 0.95  # only the wait ended it
    assert same_idx == idx and entry["ModifyIndex"] == int(idx)
    _, recursed = await aio.kv.get("cfg/", recurse=True)
    assert max(e["ModifyIndex"] for e in recursed) == int(idx)

    async def change():
        await asyncio.sleep(0.2)
        assert await aio.kv.put("cfg/a", "v2") is True

    started = time.monotonic()
    writer = asyncio.create_task(change())
    new_idx, entry = await aio.kv.get("cfg/a", index=idx, wait="5s")
    await writer
    assert time.monotonic() - started < 2.0
    assert int(new_idx) > int(idx) and entry["Value"] == b"v2"


async def test_cas_delete_of_a_missing_key_succeeds_whatever_the_index(server, aio):
    assert await aio.kv.delete("never/there", cas=7) is True
    assert await aio.kv.delete("never/there", cas=0) is True
    assert await aio.kv.put("gone", "x") is True
    _, entry = await aio.kv.get("gone")
    assert await aio.kv.delete("gone", cas=entry["ModifyIndex"] + 1) is False  # wrong index: kept
    assert (await aio.kv.get("gone"))[1] is not None
    assert await aio.kv.delete("gone") is True  # someone else removes it
    assert await aio.kv.delete("gone", cas=entry["ModifyIndex"]) is True


# ---- agent: local health view and serfHealth ----------------------------------------------------


async def agent_health(http, server, path, text=False):
    url = server.url + "/v1/agent/health/service/" + path + ("?format=text" if text else "")
    status, body, _ = await call(http, "GET", url)
    return status, body


async def test_agent_health_says_maintenance_and_leaves_out_serf_health(server, http):
    await put_json(http, server.url + "/v1/agent/service/register",
                   {"Name": "web", "ID": "web1", "Port": 80, "Check": {"TTL": "60s", "Status": "passing"}})
    status, info = await agent_health(http, server, "id/web1")
    assert (status, info["AggregatedStatus"]) == (200, "passing")
    assert [c["CheckID"] for c in info["Checks"]] == ["service:web1"]

    await call(http, "PUT", server.url + "/v1/agent/service/maintenance/web1?enable=true&reason=deploy")
    status, info = await agent_health(http, server, "id/web1")
    assert (status, info["AggregatedStatus"]) == (503, "maintenance")
    assert sorted(c["CheckID"] for c in info["Checks"]) == ["_service_maintenance:web1", "service:web1"]
    assert await agent_health(http, server, "id/web1", text=True) == (503, "maintenance")
    status, infos = await agent_health(http, server, "name/web")
    assert status == 503 and [i["AggregatedStatus"] for i in infos] == ["maintenance"]
    assert await agent_health(http, server, "name/web", text=True) == (503, "maintenance")

    await call(http, "PUT", server.url + "/v1/agent/service/maintenance/web1?enable=false")
    await call(http, "PUT", server.url + "/v1/agent/maintenance?enable=true")
    status, info = await agent_health(http, server, "id/web1")
    assert (status, info["AggregatedStatus"]) == (503, "maintenance")
    assert [c["CheckID"] for c in info["Checks"]] == ["_node_maintenance", "service:web1"]
    await call(http, "PUT", server.url + "/v1/agent/maintenance?enable=false")
    assert await agent_health(http, server, "name/web", text=True) == (200, "passing")


async def test_serf_health_is_not_an_agent_check_and_survives_agent_calls(server, aio, http):
    await aio.agent.service.register("web", service_id="web1", port=80, check={"TTL": "60s"})
    assert set(await aio.agent.checks()) == {"service:web1"}
    unknown = 'Unknown check ID "serfHealth". Ensure that the check ID is passed, not the check name.'
    for path in ("deregister", "pass", "warn", "fail"):
        status, body, _ = await call(http, "PUT", server.url + f"/v1/agent/check/{path}/serfHealth")
        assert (status, body) == (404, unknown), path
    status, body, _ = await call(http, "PUT", server.url + "/v1/agent/check/update/serfHealth",
                                 json={"Status": "critical"})
    assert (status, body) == (404, unknown)
    for body in ({"Name": "serfHealth", "TTL": "1s"}, {"Name": "x", "CheckID": "serfHealth", "TTL": "1s"}):
        status, text, _ = await call(http, "PUT", server.url + "/v1/agent/check/register", data=json.dumps(body))
        assert status == 400 and "serfHealth" in text
    _, checks = await aio.health.node(NODE)
    serf = [c for c in checks if c["CheckID"] == "serfHealth"]
    assert len(serf) == 1 and (serf[0]["Status"], serf[0]["Output"]) == ("passing", "Agent alive and reachable")
    _, entries = await aio.health.service("web")
    assert "serfHealth" in {c["CheckID"] for c in entries[0]["Checks"]}


# ---- TTL re-registration ------------------------------------------------------------------------


async def test_reregistering_a_ttl_check_restarts_its_clock_with_the_new_ttl(server, aio):
    longer = consul.Check.ttl("10m")
    longer["Status"] = "passing"
    shorter = consul.Check.ttl("1s")
    shorter["Status"] = "passing"
    start = consul.Check.ttl("1s")
    start["Status"] = "passing"

    assert await aio.agent.check.register("hb", check=start, check_id="hb")
    assert await aio.agent.check.register("hb", check=longer, check_id="hb")
    assert await aio.agent.check.register("hb2", check=longer, check_id="hb2")
    assert await aio.agent.check.register("hb2", check=shorter, check_id="hb2")
    chk = await wait_status(aio, "hb2", "critical", timeout=4)
    assert chk["Output"] == "TTL expired"
    assert (await aio.agent.checks())["hb"]["Status"] == "passing"  # past the old 1s deadline


# ---- health/service answers are never stale -----------------------------------------------------


async def views(server, http, name):
    """{view: {(CheckID, ServiceID): (Status, Output)}} for every way of reading one service's checks."""
    out = {}
    for label, path in (("plain", f"/v1/health/service/{name}"), ("pretty", f"/v1/health/service/{name}?pretty"),
                        ("filtered", f"/v1/health/service/{name}?filter=Service.Port%20!%3D%200")):
        _, entries, _ = await call(http, "GET", server.url + path)
        out[label] = {(c["CheckID"], c["ServiceID"]): (c["Status"], c["Output"])
                      for e in entries for c in e["Checks"]}
    _, checks, _ = await call(http, "GET", server.url + f"/v1/health/checks/{name}")
    out["health/checks"] = {(c["CheckID"], c["ServiceID"]): (c["Status"], c["Output"]) for c in checks}
    return out


def agree(seen):
    """All views equal once node-level checks are set aside (health/checks lists only service checks)."""
    service_level = [{k: v for k, v in view.items() if k[1]} for view in seen.values()]
    assert all(view == service_level[0] for view in service_level), seen
    return seen["plain"]


async def test_output_only_updates_reach_every_health_service_read(server, aio, http):
    await aio.agent.service.register("web", service_id="web1", port=80, check={"TTL": "60s", "Status": "passing"})
    await aio.agent.check.ttl_pass("service:web1", notes="build-41")
    assert agree(await views(server, http, "web"))[("service:web1", "web1")] == ("passing", "build-41")
    idx, _ = await aio.health.service("web")
    await aio.agent.check.ttl_pass("service:web1", notes="build-42")
    assert agree(await views(server, http, "web"))[("service:web1", "web1")] == ("passing", "build-42")
    same_idx, passing = await aio.health.service("web", passing=True)
    assert same_idx == idx  # output-only: no index moved (deferred like Consul's check_update_interval)
    assert passing[0]["Checks"][-1]["Output"] == "build-42"

    # a node-level check's output shows in the entries of every service on the node
    node_ttl = consul.Check.ttl("60s")
    node_ttl["Status"] = "passing"
    await aio.agent.check.register("disk", check=node_ttl, check_id="disk")
    await aio.agent.service.register("api", service_id="api1", port=81)
    for note in ("91%", "92%"):
        await aio.agent.check.ttl_pass("disk", notes=note)
        for name in ("web", "api"):
            assert agree(await views(server, http, name))[("disk", "")] == ("passing", note)


async def test_a_check_moved_to_another_service_leaves_the_old_answer(server, aio, http):
    await aio.agent.service.register("web", service_id="web1", port=80, check={"TTL": "60s", "Status": "passing"})
    await aio.agent.service.register("api", service_id="api1", port=81)
    await aio.agent.check.register("shared", check=consul.Check.ttl("60s"), check_id="shared", service_id="web1")
    assert ("shared", "web1") in agree(await views(server, http, "web"))
    _, passing = await aio.health.service("web", passing=True)
    assert passing == []

    await aio.agent.check.register("shared", check=consul.Check.ttl("60s"), check_id="shared", service_id="api1")
    web = agree(await views(server, http, "web"))
    assert [k for k in web if k[0] == "shared"] == []
    assert ("shared", "api1") in agree(await views(server, http, "api"))
    _, passing = await aio.health.service("web", passing=True)
    assert [e["Service"]["ID"] for e in passing] == ["web1"]

    # node-level → service-level: the other services of the node lose it too
    await aio.agent.check.register("nodewide", check=consul.Check.ttl("60s"), check_id="nodewide")
    assert ("nodewide", "") in agree(await views(server, http, "web"))
    await aio.agent.check.register("nodewide", check=consul.Check.ttl("60s"), check_id="nodewide",
                                   service_id="api1")
    assert [k for k in agree(await views(server, http, "web")) if k[0] == "nodewide"] == []
    assert ("nodewide", "api1") in agree(await views(server, http, "api"))


async def test_node_changes_reach_health_service_reads(server, aio, http):
    await aio.agent.service.register("web", service_id="web1", port=80)
    await aio.health.service("web")  # fill the encoded answer
    await put_json(http, server.url + "/v1/catalog/register",
                   {"Node": NODE, "Address": "127.0.0.1", "NodeMeta": {"rack": "r2"}})
    _, entries = await aio.health.service("web")
    assert entries[0]["Node"]["Meta"] == {"rack": "r2"}


async def test_repeated_identical_reads_are_encoded_once(server, aio, monkeypatch):
    await aio.agent.service.register("web", service_id="web1", port=80, check={"TTL": "60s"})
    builds = 0
    original = server.store.health_entry_checks

    def counting(*args):
        nonlocal builds
        builds += 1
        return original(*args)

    monkeypatch.setattr(server.store, "health_entry_checks", counting)
    first = [await aio.health.service("web") for _ in range(5)]
    assert builds == 1 and all(r == first[0] for r in first)
    await aio.agent.check.ttl_fail("service:web1", notes="down")
    await aio.health.service("web")
    await aio.health.service("web")
    assert builds == 2


# ---- service tagged addresses ---------------------------------------------------------------------


TAGGED = {"lan_ipv4": {"Address": "10.0.0.5", "Port": 6379}, "wan": {"Address": "198.51.100.5", "Port": 16379},
          "virtual": {"Address": "240.0.0.1", "Port": 6379}, "MyVIP": {"Address": "10.9.9.9", "Port": 1},
          "myvip": {"Address": "10.9.9.8", "Port": 2}}


async def tagged_everywhere(aio, http, server, name, sid):
    """The service's tagged addresses as agent/service, catalog/service and health/service answer them."""
    found = []
    if sid is not None:
        _, svc, _ = await call(http, "GET", server.url + f"/v1/agent/service/{sid}")
        found.append(svc.get("TaggedAddresses"))
    _, nodes = await aio.catalog.service(name)
    found.append(nodes[0].get("ServiceTaggedAddresses"))
    _, entries = await aio.health.service(name)
    found.append(entries[0]["Service"].get("TaggedAddresses"))
    return found


async def test_tagged_address_keys_are_kept_exactly_and_survive_a_restart(tmp_path):
    data_dir = str(tmp_path / "d")
    async with running_catalog(port=0, node_name=NODE, data_dir=data_dir) as srv:
        async with aiohttp.ClientSession() as http:
            aio = consul.aio.Consul(host="127.0.0.1", port=srv.port)
            try:
                await put_json(http, srv.url + "/v1/agent/service/register",
                               {"Name": "cache", "ID": "cache1", "Port": 6379, "TaggedAddresses": TAGGED})
                await put_json(http, srv.url + "/v1/catalog/register",
                               {"Node": "ext", "Address": "10.3.3.3", "Service": {
                                   "Service": "legacy", "Port": 9,
                                   "TaggedAddresses": {"wan_ipv4": {"Address": "203.0.113.9", "Port": 9}}}})
                assert await tagged_everywhere(aio, http, srv, "cache", "cache1") == [TAGGED] * 3
                legacy = {"wan_ipv4": {"Address": "203.0.113.9", "Port": 9}}
                assert await tagged_everywhere(aio, http, srv, "legacy", None) == [legacy] * 2
            finally:
                await aio.close()
    async with running_catalog(port=0, node_name=NODE, data_dir=data_dir) as srv:
        async with aiohttp.ClientSession() as http:
            aio = consul.aio.Consul(host="127.0.0.1", port=srv.port)
            try:
                assert await tagged_everywhere(aio, http, srv, "cache", "cache1") == [TAGGED] * 3
                assert await tagged_everywhere(aio, http, srv, "legacy", None) == [legacy] * 2
            finally:
                await aio.close()


async def test_malformed_tagged_address_is_a_400_that_keeps_what_is_stored(server, aio, http):
    await put_json(http, server.url + "/v1/agent/service/register",
                   {"Name": "cache", "ID": "cache1", "Port": 1, "TaggedAddresses": {"lan_ipv4": {"Address": "10.0.0.1"}}})
    for bad in ({"lan_ipv4": "10.0.0.2"}, ["lan_ipv4"], {"wan": {"Port": "eighty"}}):
        status, text, _ = await call(http, "PUT", server.url + "/v1/agent/service/register",
                                     data=json.dumps({"Name": "cache", "ID": "cache1", "Port": 1,
                                                      "TaggedAddresses": bad}))
        assert status == 400 and "TaggedAddresses" in text, text
    svc = (await aio.agent.services())["cache1"]
    assert svc["TaggedAddresses"] == {"lan_ipv4": {"Address": "10.0.0.1", "Port": 0}}


async def test_agent_registration_derives_default_tagged_addresses_from_an_ip(server, aio, http):
    await aio.agent.service.register("db", service_id="db1", address="10.1.2.3", port=5432)
    v4 = {"Address": "10.1.2.3", "Port": 5432}
    assert await tagged_everywhere(aio, http, server, "db", "db1") == [{"lan_ipv4": v4, "wan_ipv4": v4}] * 3

    await put_json(http, server.url + "/v1/agent/service/register",
                   {"Name": "db6", "ID": "db6", "Address": "2001:db8::7", "Port": 5,
                    "TaggedAddresses": {"wan_ipv6": {"Address": "2001:db8::99", "Port": 55}}})
    lan6 = {"Address": "2001:db8::7", "Port": 5}
    assert await tagged_everywhere(aio, http, server, "db6", "db6") == [
        {"wan_ipv6": {"Address": "2001:db8::99", "Port": 55}, "lan_ipv6": lan6}] * 3

    await aio.agent.service.register("named", service_id="named1", address="db.example.internal", port=1)
    assert await tagged_everywhere(aio, http, server, "named", "named1") == [None] * 3

    # the catalog endpoint records what it is given, as Consul's Catalog.Register does
    await put_json(http, server.url + "/v1/catalog/register",
                   {"Node": "ext", "Address": "10.3.3.3", "Service": {"Service": "raw", "Address": "10.3.3.4"}})
    assert await tagged_everywhere(aio, http, server, "raw", None) == [None] * 2


# ---- order of a health entry's checks -------------------------------------------------------------


async def test_health_entry_lists_node_checks_first_then_service_checks(server, aio, http):
    for cid in ("node-disk", "Zeta", "alpha"):
        await aio.agent.check.register(cid, check=consul.Check.ttl("60s"), check_id=cid)
    await put_json(http, server.url + "/v1/agent/service/register",
                   {"Name": "db", "ID": "db1", "Port": 5432,
                    "Checks": [{"CheckID": "db-alive", "TTL": "60s"}, {"CheckID": "B-ready", "TTL": "60s"}]})
    _, entries = await aio.health.service("db")
    assert [c["CheckID"] for c in entries[0]["Checks"]] == [
        "alpha", "node-disk", "serfHealth", "Zeta", "B-ready", "db-alive"]
