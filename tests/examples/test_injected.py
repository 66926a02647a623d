"""examples/injected: one `waypost up` injects ambassadors into labelled containers; --scale is followed."""

from __future__ import annotations

from tests.examples.compose import eventually, hit, instances, status, wait_for
from tests.ports import free_port


def test_injected_ambassadors_follow_scaling(example) -> None:
    http, dns, front, admin = free_port(), free_port(), free_port(), free_port()
    stack = example("injected", WAYPOST_HTTP_PORT=str(http), WAYPOST_DNS_PORT=str(dns), FRONT_PORT=str(front),
                    FRONT_ADMIN_PORT=str(admin))
    stack("up", "-d", "--scale", "web=3")
    waypost, url = f"http://127.0.0.1:{http}", f"http://127.0.0.1:{front}/"
    webs = {c[:12] for c in stack.containers("web")}
    [cache] = stack.containers("cache")
    assert len(webs) == 3

    def attached(doc: dict) -> set[str]:
        return {a["container"] for a in doc["ambassadors"] if a["routes"] and a["routes"][0]["service"] == "redis"}

    # every web container got an ambassador; no sidecar containers exist
    doc = wait_for(lambda: status(waypost), lambda s: webs <= attached(s), what="ambassadors in all 3 web containers")
    assert doc["injection"] == "on"
    assert set(stack("config", "--services").split()) == {"waypost", "cache", "web", "front"}

    # requests spread over the three; every one of them reached redis through its injected ambassador
    wait_for(lambda: hit(url, 30)[0], lambda seen: set(seen) == webs, what="hits on all 3 web instances")
    seen, answers = hit(url, 30)
    assert sum(seen.values()) == 30, answers
    assert "redis" in stack.exec(stack.containers("web")[0], "grep", "127.127.", "/etc/hosts")
    doc = status(waypost)
    cache_ip = instances(doc, "redis")[0]["address"]
    assert cache_ip == stack.exec(cache, "hostname", "-i").split()[0]
    for amb in doc["ambassadors"]:
        if amb["container"] in webs:
            [backend] = amb["routes"][0]["backends"]
            assert backend["address"] == f"{cache_ip}:6379" and backend["total"] >= 2

    # scale up: the new replica is registered, gets its ambassador and serves
    stack("up", "-d", "--no-recreate", "--scale", "web=4")
    webs4 = {c[:12] for c in stack.containers("web")}
    [new] = webs4 - webs
    wait_for(lambda: status(waypost), lambda s: new in attached(s) and len(instances(s, "web")) == 4,
             what="4th replica registered with an ambassador")
    wait_for(lambda: hit(url, 40)[0], lambda seen: new in seen, what="hits on the new replica")

    # scale down: the removed replicas leave the catalog and the front stops using them
    stack("up", "-d", "--no-recreate", "--scale", "web=2")
    left = {c[:12] for c in stack.containers("web")}
    eventually(lambda: len(instances(status(waypost), "web")) == 2, what="scaled-down replicas deregistered")
    seen, answers = hit(url, 20)
    assert set(seen) == left and sum(seen.values()) == 20, answers
    assert not (attached(status(waypost)) & (webs4 - left)), "ambassadors of removed containers are gone"
