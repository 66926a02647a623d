"""The registrator against a real Docker engine and the embedded catalog.

Containers come from the tiny local busybox image (tests.dockerkit); everything is labelled with
the session label and removed afterwards. Docker SDK calls run in a thread so the registrator
keeps handling events meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests import dockerkit as dk
from tests.polling import eventually
from waypost.catalog import CatalogClient
from waypost.catalog.model import ServiceDef
from waypost.config import CatalogConfig
from waypost.registrator import cli
from waypost.registrator.hostinfo import routable_ip
from waypost.registrator.metadata import MARKER_CONTAINER, MARKER_CONTAINER_PORT, MARKER_NODE, docker_check_id
from waypost.server.app import CatalogServer

pytestmark = pytest.mark.docker

NODE = "testnode"


async def run(image: str, command: Any = ("sleep", "3600"), **kwargs: Any) -> Any:
    container = await asyncio.to_thread(dk.run, dk.client(), image, command, **kwargs)
    await asyncio.to_thread(container.reload)
    return container


def ours(services: dict[str, ServiceDef], container: Any) -> dict[str, ServiceDef]:
    return {sid: s for sid, s in services.items() if s.meta_dict.get(MARKER_CONTAINER) == container.id}


async def services_of(client: CatalogClient, container: Any, count: int = 1, timeout: float = 10.0
                      ) -> dict[str, ServiceDef]:
    async def check() -> dict[str, ServiceDef] | None:
        found = ours(await client.local_services(), container)
        return found if len(found) == count else None

    return await eventually(check, timeout, f"{count} service(s) of {container.name}")


async def gone(client: CatalogClient, container: Any, timeout: float = 10.0) -> None:
    async def check() -> bool:
        return not ours(await client.local_services(), container)

    await eventually(check, timeout, f"{container.name}'s services to be deregistered")


def host_port(container: Any, key: str) -> int:
    return int(container.attrs["NetworkSettings"]["Ports"][key][0]["HostPort"])


# ---- naming, metadata, ports --------------------------------------------------------------------


async def test_naming_labels_env_tags_meta(catalog_client, start_registrator, busybox_image) -> None:
    registrator = await start_registrator(tags=("fleet",))
    c = await run(busybox_image, ports={"80/tcp": None},
                  environment={"SERVICE_NAME": "from-env", "SERVICE_TAGS": "a,b\\,c", "SERVICE_REGION": "eu",
                               "SERVICE_TEAM": "env-team"},
                  extra_labels={"SERVICE_NAME": "from-label", "SERVICE_TEAM": "label-team"})
    (svc,) = (await services_of(catalog_client, c)).values()
    assert svc.id == f"{NODE}:{c.name}:80"
    assert svc.name == "from-label"
    assert svc.tags == ("a", "b,c", "fleet")
    assert svc.port == host_port(c, "80/tcp")
    assert svc.meta_dict == {"region": "eu", "team": "label-team", MARKER_NODE: NODE, MARKER_CONTAINER: c.id,
                             MARKER_CONTAINER_PORT: "80"}
    # 0.0.0.0 binding → this host's routable address, never loopback
    assert svc.address == await routable_ip() == registrator.default_ip
    assert not ipaddress.ip_address(svc.address).is_loopback
    # visible to readers through the health endpoint, with the same data
    (inst,) = await catalog_client.instances("from-label")
    assert inst.endpoint == (svc.address, svc.port)


async def test_default_name_multi_port_udp_ignore(catalog_client, start_registrator, busybox_image) -> None:
    await start_registrator(host_ip="127.0.0.1")
    multi = await run(busybox_image, ports={"80/tcp": None, "81/tcp": None, "53/udp": None, "82/tcp": None},
                      environment={"SERVICE_81_NAME": "api", "SERVICE_82_IGNORE": "true"})
    ignored = await run(busybox_image, ports={"80/tcp": None}, extra_labels={"SERVICE_IGNORE": "1"})
    services = await services_of(catalog_client, multi, 3)
    by_id = {sid.split(":", 2)[2]: s for sid, s in services.items()}
    assert by_id["80"].name == "busybox-80"
    assert by_id["81"].name == "api"
    assert by_id["53:udp"].name == "busybox-53" and "udp" in by_id["53:udp"].tags
    assert by_id["53:udp"].port == host_port(multi, "53/udp")
    assert all(s.address == "127.0.0.1" for s in services.values())
    assert not ours(await catalog_client.local_services(), ignored)


async def test_explicit(catalog_client, start_registrator, busybox_image) -> None:
    await start_registrator(explicit=True)
    anonymous = await run(busybox_image, ports={"80/tcp": None})
    named = await run(busybox_image, ports={"80/tcp": None, "81/tcp": None}, extra_labels={"SERVICE_81_NAME": "only"})
    (svc,) = (await services_of(catalog_client, named)).values()
    assert svc.name == "only"
    assert not ours(await catalog_client.local_services(), anonymous)


async def test_internal_vs_published(catalog_client, start_registrator, busybox_image, docker_client) -> None:
    net = await asyncio.to_thread(dk.create_network, docker_client)
    exposed_only = await run(busybox_image, ports={"8080/tcp": None}, environment={"SERVICE_NAME": "pub"})
    internal_c = await run(busybox_image, network=net.name, environment={"SERVICE_NAME": "int"},
                           extra_labels={"SERVICE_CHECK_TCP": "true"}, ports={"9000/tcp": None})
    registrator = await start_registrator(internal=True, network=net.name)
    (svc,) = (await services_of(catalog_client, internal_c)).values()
    ip = internal_c.attrs["NetworkSettings"]["Networks"][net.name]["IPAddress"]
    assert (svc.address, svc.port) == (ip, 9000)
    (pub,) = (await services_of(catalog_client, exposed_only)).values()
    assert pub.port == 8080  # exposed port, container IP on its own network (not on --network)
    assert pub.address == exposed_only.attrs["NetworkSettings"]["IPAddress"]
    await registrator.stop()
    # the same containers without --internal: published host ports at the routable address
    await start_registrator(node="othernode")
    svc2 = next(s for s in (await catalog_client.local_services()).values()
                if s.meta_dict.get(MARKER_NODE) == "othernode" and s.meta_dict[MARKER_CONTAINER] == internal_c.id)
    assert svc2.port == host_port(internal_c, "9000/tcp") and svc2.address == await routable_ip()


async def test_host_network(catalog_client, start_registrator, busybox_image, docker_client) -> None:
    await start_registrator(host_ip="192.0.2.77")
    # a host-network container with an exposed (not published) port, via the low-level API
    created = await asyncio.to_thread(
        docker_client.api.create_container, busybox_image, ["sleep", "3600"], name=dk.unique_name(),
        labels=dk.labels({"SERVICE_NAME": "hostnet"}), ports=[7070],
        host_config=docker_client.api.create_host_config(network_mode="host"), stop_signal="SIGKILL")
    await asyncio.to_thread(docker_client.api.start, created["Id"])
    container = await asyncio.to_thread(docker_client.containers.get, created["Id"])
    (svc,) = (await services_of(catalog_client, container)).values()
    assert (svc.name, svc.address, svc.port) == ("hostnet", "192.0.2.77", 7070)


# ---- lifecycle ----------------------------------------------------------------------------------


async def test_stop_start_restart_and_rm(catalog_client, start_registrator, busybox_image) -> None:
    await start_registrator()
    c = await run(busybox_image, ports={"80/tcp": None})
    await services_of(catalog_client, c)
    await asyncio.to_thread(c.restart, timeout=0)  # die → start in quick succession
    await asyncio.sleep(0.5)
    await services_of(catalog_client, c)
    await asyncio.to_thread(c.kill)
    await gone(catalog_client, c)
    await asyncio.to_thread(c.start)
    await services_of(catalog_client, c)
    await asyncio.to_thread(c.remove, force=True)
    await gone(catalog_client, c)


async def test_deregister_on_success(catalog_client, start_registrator, busybox_image) -> None:
    registrator = await start_registrator(deregister="on-success")
    failing = await run(busybox_image, ["sh", "-c", "read x; exit 3"], ports={"80/tcp": None}, stdin_open=True)
    ok = await run(busybox_image, ["sh", "-c", "read x; exit 0"], ports={"80/tcp": None}, stdin_open=True)
    await services_of(catalog_client, failing)
    await services_of(catalog_client, ok)
    for c in (failing, ok):
        sock = await asyncio.to_thread(c.attach_socket, params={"stdin": 1, "stream": 1})
        await asyncio.to_thread(sock._sock.sendall, b"go\n")
        await asyncio.to_thread(sock.close)
    await gone(catalog_client, ok)
    assert (await asyncio.to_thread(failing.wait, timeout=10))["StatusCode"] == 3
    await asyncio.sleep(0.2)  # the die event has reached the registrator…
    await registrator.idle()  # …and was handled
    assert registrator.events >= 4
    assert ours(await catalog_client.local_services(), failing)  # non-zero exit: kept


async def test_health_status_and_pause_flip_the_check(catalog_client, start_registrator, busybox_image) -> None:
    await start_registrator()
    c = await run(busybox_image, ["sh", "-c", "touch /tmp/healthy; exec sleep 3600"], ports={"80/tcp": None},
                  environment={"SERVICE_NAME": "healthy-svc"},
                  healthcheck={"test": ["CMD", "test", "-f", "/tmp/healthy"], "interval": 100_000_000,
                               "retries": 1})
    sid = f"{NODE}:{c.name}:80"
    watch = catalog_client.watch("healthy-svc", wait="5s")
    states: list[list[str]] = []

    async def next_state(want: list[str]) -> None:
        async def check() -> bool:
            await asyncio.wait_for(watch.poll(), 10)
            states.append([i.id for i in watch.value or []])
            return states[-1] == want
        await eventually(check, 15, f"passing instances == {want}")

    await next_state([sid])  # starting (critical) → healthy (passing)
    checks = await catalog_client.local_checks()
    assert checks[docker_check_id(sid)]["Status"] == "passing"
    await asyncio.to_thread(c.exec_run, ["rm", "/tmp/healthy"])
    await next_state([])  # unhealthy → critical → not returned to readers
    assert (await catalog_client.local_checks())[docker_check_id(sid)]["Status"] == "critical"
    assert sid in await catalog_client.local_services()  # still registered, just not routed to
    await asyncio.to_thread(c.exec_run, ["touch", "/tmp/healthy"])
    await next_state([sid])
    await asyncio.to_thread(c.pause)
    await next_state([])
    await asyncio.to_thread(c.unpause)
    await next_state([sid])


async def test_pause_without_healthcheck(catalog_client, start_registrator, busybox_image) -> None:
    await start_registrator()
    c = await run(busybox_image, ports={"80/tcp": None}, environment={"SERVICE_NAME": "pausable"})
    await services_of(catalog_client, c)

    async def passing() -> list[str]:
        return [i.id for i in await catalog_client.instances("pausable")]

    assert await passing()
    await asyncio.to_thread(c.pause)
    await eventually(lambda: _not(passing), 10, "paused container to be critical")
    await asyncio.to_thread(c.unpause)
    await eventually(passing, 10, "unpaused container to be passing")


async def _not(fn: Callable[[], Awaitable[Any]]) -> bool:
    return not await fn()


async def test_missed_events_while_down_and_no_duplicates(catalog_client, start_registrator, busybox_image) -> None:
    first = await start_registrator()
    stays = await run(busybox_image, ports={"80/tcp": None})
    dies = await run(busybox_image, ports={"80/tcp": None})
    await services_of(catalog_client, stays)
    await services_of(catalog_client, dies)
    await first.stop()  # graceful stop leaves registrations in place
    assert ours(await catalog_client.local_services(), stays)
    await asyncio.to_thread(dies.kill)
    born = await run(busybox_image, ports={"80/tcp": None})
    await asyncio.sleep(0.2)
    before = await catalog_client.local_services()
    assert ours(before, dies) and not ours(before, born)
    await start_registrator()
    after = await catalog_client.local_services()  # first sync done: repaired
    assert not ours(after, dies)
    assert len(ours(after, born)) == 1 and len(ours(after, stays)) == 1
    # no orphans: every registration of this node belongs to a container that runs now (other
    # containers on the host may be registered too, so count by container, not in total)
    running = {c.id for c in await asyncio.to_thread(dk.client().containers.list)}
    mine = [s for s in after.values() if s.meta_dict.get(MARKER_NODE) == NODE]
    assert mine and all(s.meta_dict.get(MARKER_CONTAINER) in running for s in mine)


async def test_deregister_on_exit(catalog_client, start_registrator, busybox_image) -> None:
    registrator = await start_registrator(deregister_on_exit=True)
    c = await run(busybox_image, ports={"80/tcp": None})
    await services_of(catalog_client, c)
    await registrator.stop()
    assert not ours(await catalog_client.local_services(), c)


async def test_cleanup_removes_legacy_and_keeps_foreign(catalog_client, start_registrator, busybox_image) -> None:
    c = await run(busybox_image, ports={"80/tcp": None})
    await catalog_client.register(ServiceDef(f"{NODE}:vanished:80", "legacy", "10.0.0.1", 80))
    await catalog_client.register(ServiceDef("othernode:vanished:80", "legacy", "10.0.0.2", 80))
    await catalog_client.register(ServiceDef("hand-made", "mine", "10.0.0.3", 80))
    await start_registrator(cleanup=True)
    services = await catalog_client.local_services()
    assert f"{NODE}:vanished:80" not in services
    assert "othernode:vanished:80" in services and "hand-made" in services
    assert ours(services, c)


async def test_bad_metadata_is_one_warning_and_still_registers(catalog_client, start_registrator, busybox_image,
                                                              caplog) -> None:
    await start_registrator()
    with caplog.at_level(logging.WARNING, logger="waypost.registrator"):
        bad = await run(busybox_image, ports={"80/tcp": None},
                        extra_labels={"SERVICE_CHECK_TCP": "true", "SERVICE_CHECK_INTERVAL": "every-now-and-then",
                                      "SERVICE_99999_NAME": "x", "SERVICE_TAGS": "ok,{{.Nope}}",
                                      "SERVICE_BAD.KEY": "v"})
        good = await run(busybox_image, ports={"80/tcp": None})
        (svc,) = (await services_of(catalog_client, bad)).values()
        await services_of(catalog_client, good)
    assert svc.tags == ("ok",)
    checks = await catalog_client.local_checks()
    assert checks[f"service:{svc.id}"]["Type"] == "tcp"
    texts = [r.getMessage() for r in caplog.records if bad.name in r.getMessage()]
    for variable in ("SERVICE_CHECK_INTERVAL", "SERVICE_99999_NAME", "SERVICE_TAGS", "SERVICE_BAD.KEY"):
        assert sum(variable in t for t in texts) == 1, (variable, texts)
    assert not [r for r in caplog.records if good.name in r.getMessage() and r.levelno >= logging.WARNING]


# ---- failures of the peers ----------------------------------------------------------------------


async def test_catalog_restart_without_state_is_repaired(start_registrator, busybox_image, docker_cleanup) -> None:
    server = CatalogServer(host="127.0.0.1", port=0)
    await server.start()
    port = server.port
    client = CatalogClient(CatalogConfig.from_url(server.url))
    try:
        registrator = await start_registrator(client=client)
        a = await run(busybox_image, ports={"80/tcp": None})
        b = await run(busybox_image, ports={"80/tcp": None},
                      healthcheck={"test": ["CMD", "true"], "interval": 100_000_000})
        await services_of(client, a)
        await services_of(client, b)
        await eventually(lambda: _status_is(client, docker_check_id(f"{NODE}:{b.name}:80"), "passing"), 10)
        await server.stop()
        await asyncio.sleep(0.5)
        server = CatalogServer(host="127.0.0.1", port=port)  # a fresh catalog: no state
        await server.start()
        await services_of(client, a, timeout=15)
        await services_of(client, b, timeout=15)
        await eventually(lambda: _status_is(client, docker_check_id(f"{NODE}:{b.name}:80"), "passing"), 10)
        assert registrator.status()["catalog_restarts_seen"] >= 1
        c = await run(busybox_image, ports={"80/tcp": None})  # events still flow
        await services_of(client, c)
    finally:
        await client.close()
        await server.stop()


async def _status_is(client: CatalogClient, check_id: str, status: str) -> bool:
    check = (await client.local_checks()).get(check_id)
    return bool(check) and check["Status"] == status


async def test_catalog_down_at_start_retry_attempts(busybox_image, refusing_port) -> None:
    from waypost.registrator import CatalogUnavailable, Registrator, RegistratorOptions

    client = CatalogClient(CatalogConfig.from_url(f"http://127.0.0.1:{refusing_port()}"))
    try:
        registrator = Registrator(client, RegistratorOptions(node=NODE, retry_attempts=2, retry_interval=0.05))
        started = time.monotonic()
        with pytest.raises(CatalogUnavailable, match="--retry-attempts"):
            await registrator.start()
        assert time.monotonic() - started < 5
    finally:
        await client.close()


@pytest.mark.slow
async def test_dockerd_restart(catalog_client, start_registrator, busybox_image, docker_client) -> None:
    registrator = await start_registrator()
    survivor = await run(busybox_image, ports={"80/tcp": None}, restart_policy={"Name": "always"})
    casualty = await run(busybox_image, ports={"80/tcp": None})
    await services_of(catalog_client, survivor)
    await services_of(catalog_client, casualty)
    await asyncio.to_thread(dk.restart_dockerd)
    # the casualty was stopped by the engine's shutdown; the survivor was restarted by it
    await gone(catalog_client, casualty, timeout=20)
    await services_of(catalog_client, survivor, timeout=20)
    assert registrator.status()["docker_connections"] >= 2
    newcomer = await run(busybox_image, ports={"80/tcp": None})
    (svc,) = (await services_of(catalog_client, newcomer)).values()
    await asyncio.to_thread(survivor.reload)
    (svc,) = (await services_of(catalog_client, survivor)).values()
    assert svc.port == host_port(survivor, "80/tcp")


# ---- the command ------------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_options() -> None:
    opts = cli.options_from_args(parse("--ip", "10.0.0.1", "--internal", "--network", "n", "--tags", "a,b\\,c",
                                       "--resync", "30", "--cleanup", "--deregister", "on-success",
                                       "--retry-attempts", "3", "--retry-interval", "500",
                                       "--use-ip-from-label", "ip", "--node", "h1", "--deregister-on-exit",
                                       "--explicit"))
    assert opts.tags == ("a", "b,c") and opts.retry_interval == 0.5 and opts.deregister == "on-success"
    assert (opts.host_ip, opts.internal, opts.network, opts.node) == ("10.0.0.1", True, "n", "h1")
    assert opts.cleanup and opts.explicit and opts.deregister_on_exit and opts.resync == 30


@pytest.mark.parametrize("argv", [("--ip", "nope"), ("--retry-interval", "0"), ("--resync", "-1"),
                                  ("--retry-attempts", "-5")])
def test_cli_bad_flags(argv: tuple[str, ...]) -> None:
    from waypost.config import ConfigError

    with pytest.raises(ConfigError, match=argv[0]):
        cli.options_from_args(parse(*argv))


async def test_cli_run_registers_then_stops_cleanly(catalog_server, catalog_client, busybox_image,
                                                   docker_cleanup) -> None:
    c = await run(busybox_image, ports={"80/tcp": None})
    args = parse(catalog_server.url.replace("http://", "consul://"), "--node", "clinode")
    task = asyncio.create_task(cli.run(args))

    async def registered() -> bool:
        return any(s.meta_dict.get(MARKER_NODE) == "clinode" for s in ours(await catalog_client.local_services(), c).values())

    await eventually(registered, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await registered()  # graceful shutdown leaves registrations


async def test_cli_run_exits_1_when_catalog_never_answers(refusing_port) -> None:
    args = parse("--catalog", f"http://127.0.0.1:{refusing_port()}", "--retry-attempts", "0", "--node", "x")
    assert await asyncio.wait_for(cli.run(args), 10) == 1


async def test_default_node_is_the_engines_host_name(start_registrator, busybox_image, docker_client) -> None:
    registrator = await start_registrator(node="")
    info = await asyncio.to_thread(docker_client.info)
    assert registrator.options.node == info["Name"]
    assert registrator.status()["node"] == info["Name"]


def test_plugs_into_the_waypost_command_with_env_defaults(monkeypatch) -> None:
    import waypost.cli as waypost_cli

    monkeypatch.setitem(waypost_cli.SUBCOMMANDS, "registrator", ("waypost.registrator.cli", "registrator"))
    parser = waypost_cli.build_parser({"WAYPOST_RESYNC": "15", "WAYPOST_CLEANUP": "1", "WAYPOST_TAGS": "x,y",
                                       "WAYPOST_DEREGISTER": "on-success", "WAYPOST_IP": "192.0.2.5"})
    args = parser.parse_args(["registrator", "consul://127.0.0.1:8501", "--internal"])
    opts = cli.options_from_args(args)
    assert (opts.resync, opts.cleanup, opts.tags, opts.deregister, opts.host_ip, opts.internal) == (
        15.0, True, ("x", "y"), "on-success", "192.0.2.5", True)
    assert args.registry == "consul://127.0.0.1:8501"


async def test_internal_follows_network_connect_and_disconnect(catalog_client, start_registrator, busybox_image,
                                                              docker_client) -> None:
    """`docker network connect` / `disconnect` of a running container moves its --internal address."""
    net = await asyncio.to_thread(dk.create_network, docker_client)
    c = await run(busybox_image, ports={"9000/tcp": None}, environment={"SERVICE_NAME": "moves"})
    await start_registrator(internal=True, network=net.name)
    bridge_ip = c.attrs["NetworkSettings"]["IPAddress"]
    (svc,) = (await services_of(catalog_client, c)).values()
    assert svc.address == bridge_ip  # not on --network yet: its own network's IP

    await asyncio.to_thread(net.connect, c)
    await asyncio.to_thread(c.reload)
    net_ip = c.attrs["NetworkSettings"]["Networks"][net.name]["IPAddress"]

    async def address_is(ip: str) -> bool:
        found = ours(await catalog_client.local_services(), c)
        return [s.address for s in found.values()] == [ip]

    await eventually(lambda: address_is(net_ip), 10, "the address on --network after connect")
    await asyncio.to_thread(net.disconnect, c)
    await eventually(lambda: address_is(bridge_ip), 10, "the bridge address after disconnect")
