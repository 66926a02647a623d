"""examples/trainingwheels: compose sidecars route `redis:6379` through the catalog; a front spreads."""

from __future__ import annotations

import json

from tests.examples.compose import eventually, hit, instances, status, wait_for
from tests.ports import free_port


def sidecar_routes(stack, web: str) -> dict:
    """The sidecar's /v1/routes, read from inside the web container (they share the namespace)."""
    code = "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:9901/v1/routes').read().decode())"
    [route] = json.loads(stack.exec(web, "python3", "-c", code))["routes"]
    return route


def test_sidecars_route_redis_and_the_front_spreads(example) -> None:
    http, front = free_port(), free_port()
    stack = example("trainingwheels", WAYPOST_HTTP_PORT=str(http), FRONT_PORT=str(front))
    stack("up", "-d")  # builds examples/app; everything else is prebuilt
    waypost, url = f"http://127.0.0.1:{http}", f"http://127.0.0.1:{front}/"
    [web1], [web2], [cache] = stack.containers("web1"), stack.containers("web2"), stack.containers("cache")
    webs = {web1[:12], web2[:12]}

    # the registrator put both web containers and the redis container in the catalog
    doc = wait_for(lambda: status(waypost), lambda s: len(instances(s, "web")) == 2 and instances(s, "redis"),
                   what="web x2 and redis registered")
    cache_ip = stack.exec(cache, "hostname", "-i").split()[0]
    assert [(i["address"], i["port"]) for i in instances(doc, "redis")] == [(cache_ip, 6379)]
    assert not instances(doc, "waypost"), "SERVICE_IGNORE keeps waypost's own containers out"

    # the front spreads requests over both instances, each of which reaches redis through its sidecar
    wait_for(lambda: hit(url, 20)[0], lambda seen: set(seen) == webs, what="hits on both web instances")
    before = hit(url, 1)[1][0]["all"]
    seen, answers = hit(url, 30)
    assert sum(seen.values()) == 30, answers
    after = answers[-1]["all"]
    assert sum(after.values()) == sum(before.values()) + 30  # every request counted once
    assert set(seen) == webs

    # the app's `redis` is the sidecar's loopback address, and the sidecar forwarded to the cache
    assert "127.127.0.2\tredis" in stack.exec(web1, "cat", "/etc/hosts").replace(" ", "\t")
    route = sidecar_routes(stack, web1)
    assert route["service"] == "redis" and route["listen"] == "127.127.0.2:6379"
    assert [b["address"] for b in route["backends"]] == [f"{cache_ip}:6379"]
    assert route["total"] >= 2 * after[web1[:12]]  # HINCRBY + HGETALL per request, one connection each

    # stopping web2 deregisters it and the front stops sending there
    stack("stop", "-t", "1", "web2")
    eventually(lambda: len(instances(status(waypost), "web")) == 1, what="web2 deregistered")
    seen, _ = hit(url, 10)
    assert dict(seen) == {web1[:12]: 10}

    # back again (its sidecar restarted with it: it must join web2's new network namespace)
    stack("start", "web2")
    stack("restart", "-t", "1", "web2-ambassador")
    wait_for(lambda: hit(url, 20)[0], lambda seen: set(seen) == webs, what="web2 serving again")
