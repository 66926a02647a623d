"""The Docker event bridge: message parsing, and the thread ↔ loop hand-off without an engine."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.catalog.test_client import tls_files  # noqa: F401 - pytest fixture
from tests.dockerkit import run as docker_run
from waypost.docker_events import CONTAINER, DISCONNECTED, DockerEvent, EventBridge, parse_event


def test_parse_start_event() -> None:
    raw = {"status": "start", "id": "abc", "from": "busybox", "Type": "container", "Action": "start",
           "Actor": {"ID": "abc", "Attributes": {"name": "web", "image": "busybox"}}, "scope": "local",
           "time": 1700000000, "timeNano": 1700000000123456789}
    event = parse_event(raw)
    assert event == DockerEvent(kind=CONTAINER, action="start", container_id="abc", time_nano=1700000000123456789,
                                attributes={"name": "web", "image": "busybox"}, detail="")


def test_parse_health_status_detail() -> None:
    event = parse_event({"Type": "container", "Action": "health_status: unhealthy", "Actor": {"ID": "x"},
                         "time": 5})
    assert event is not None
    assert (event.action, event.detail, event.time_nano) == ("health_status", "unhealthy", 5_000_000_000)


def test_parse_exec_and_other_types() -> None:
    exec_event = parse_event({"Type": "container", "Action": "exec_start: test -f /tmp/x", "Actor": {"ID": "x"}})
    assert exec_event is not None and exec_event.action == "exec_start"
    assert parse_event({"Type": "network", "Action": "connect", "Actor": {"ID": "n"}}) is None
    legacy = parse_event({"status": "die", "id": "old"})  # pre-1.22 engines: no Type/Action/Actor
    assert legacy is not None and (legacy.action, legacy.container_id) == ("die", "old")


async def test_bridge_reports_unreachable_engine_and_stops_promptly(tmp_path, caplog) -> None:
    caplog.set_level("WARNING", logger="waypost.docker")
    queue: asyncio.Queue[DockerEvent] = asyncio.Queue()
    bridge = EventBridge(queue, asyncio.get_running_loop(), f"unix://{tmp_path}/no-docker.sock",
                         min_backoff=0.01, max_backoff=0.05)
    bridge.start()
    first = await asyncio.wait_for(queue.get(), 10)
    assert first.kind == DISCONNECTED and first.detail
    second = await asyncio.wait_for(queue.get(), 10)  # it keeps retrying, with backoff
    assert second.kind == DISCONNECTED
    (warning,) = [r.getMessage() for r in caplog.records]  # said once, not per retry
    assert f"unix://{tmp_path}/no-docker.sock" in warning and "DOCKER_HOST" in warning  # where, and the fix
    started = time.monotonic()
    await bridge.stop()
    assert time.monotonic() - started < 2
    assert not bridge.connected


async def test_one_bridge_feeds_every_subscriber(docker_client, busybox_image) -> None:
    """`waypost up` shares one event stream between registrator and injector: each subscriber gets
    every event, and one that joins a live stream gets `connected` at once (so it resyncs)."""
    from waypost.docker_events import CONNECTED

    first: asyncio.Queue[DockerEvent] = asyncio.Queue()
    late: asyncio.Queue[DockerEvent] = asyncio.Queue()
    bridge = EventBridge(None, asyncio.get_running_loop())
    bridge.subscribe(first)
    bridge.start()
    try:
        assert (await asyncio.wait_for(first.get(), 10)).kind == CONNECTED
        bridge.subscribe(late)
        assert late.get_nowait().kind == CONNECTED
        container = await asyncio.to_thread(docker_run, docker_client, busybox_image)
        for queue in (first, late):
            while True:
                event = await asyncio.wait_for(queue.get(), 10)
                if event.kind == CONTAINER and event.action == "start" and event.container_id == container.id:
                    break
        bridge.unsubscribe(late)
        await asyncio.to_thread(container.kill)
        async with asyncio.timeout(10):
            while not (event := await first.get()).action == "die":
                pass
        assert late.empty()  # nothing after unsubscribing
    finally:
        await bridge.stop()


async def test_docker_api_calls_run_on_the_loop(docker_client, busybox_image) -> None:
    """inspect / running / info against the real engine, as plain HTTP on the event loop."""
    from waypost.docker_events import DockerAPI

    api = DockerAPI()
    try:
        container = await asyncio.to_thread(docker_run, docker_client, busybox_image)
        doc = await api.inspect(container.id)
        assert doc is not None and doc["Id"] == container.id and doc["State"]["Running"]
        assert (container.id, container.name) in await api.running()
        assert await api.inspect("no-such-container-" + container.id[:6]) is None
        assert (await api.info())["Name"]
    finally:
        await api.close()


async def test_docker_api_errors_name_the_problem(tmp_path, monkeypatch) -> None:
    from waypost.docker_events import DockerAPI, DockerError

    down = DockerAPI(f"unix://{tmp_path}/no-docker.sock")
    try:
        with pytest.raises(OSError, match="no-docker.sock"):
            await down.info()
    finally:
        await down.close()
    ssh = DockerAPI("ssh://user@example.invalid")
    with pytest.raises(DockerError, match="ssh:// engines are not supported"):
        await ssh.info()


async def test_docker_host_with_tls_from_the_environment(tls_files, monkeypatch) -> None:  # noqa: F811
    """DOCKER_HOST / DOCKER_TLS_VERIFY / DOCKER_CERT_PATH mean what they mean to the docker CLI."""
    import ssl

    from waypost.docker_events import DockerAPI

    certs = tls_files
    (certs / "cert.pem").write_bytes((certs / "server.pem").read_bytes())  # any client cert will do
    (certs / "key.pem").write_bytes((certs / "server.key").read_bytes())
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2376")
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(certs))
    base, kwargs = DockerAPI()._connect_args()
    assert base == "https://127.0.0.1:2376"
    context = kwargs["connector"]._ssl
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED
    await kwargs["connector"].close()
    monkeypatch.delenv("DOCKER_HOST")
    base, kwargs = DockerAPI()._connect_args()
    assert base == "http://docker"  # the local socket
    await kwargs["connector"].close()


def test_network_connect_names_the_container() -> None:
    event = parse_event({"Type": "network", "Action": "connect", "timeNano": 5,
                         "Actor": {"ID": "netid", "Attributes": {"container": "c1", "name": "back", "type": "bridge"}}})
    assert event is not None and (event.kind, event.action, event.container_id) == (CONTAINER, "network_connect", "c1")
    assert event.attributes == {"network": "back"}
    assert parse_event({"Type": "network", "Action": "create", "Actor": {"ID": "n", "Attributes": {"name": "x"}}}) is None


# ---- where the engine's socket is: gliderlabs' run line mounts it at /tmp/docker.sock ------------


def test_choose_socket_takes_the_first_existing_candidate() -> None:
    from waypost.docker_events import choose_socket

    usual, gliderlabs = "/var/run/docker.sock", "/tmp/docker.sock"
    assert choose_socket((usual, gliderlabs), {gliderlabs}.__contains__) == gliderlabs
    assert choose_socket((usual, gliderlabs), {usual, gliderlabs}.__contains__) == usual
    assert choose_socket((usual, gliderlabs), set().__contains__) == usual  # none: errors name the usual one


def test_default_candidates_are_the_usual_socket_then_gliderlabs_mount() -> None:
    from waypost.docker_events import LOCAL_SOCKETS

    assert LOCAL_SOCKETS == ("/var/run/docker.sock", "/tmp/docker.sock")


@pytest.fixture
def local_sockets(tmp_path, monkeypatch):
    """LOCAL_SOCKETS pointed at two paths under tmp_path (neither exists yet); no DOCKER_HOST."""
    from waypost import docker_events

    usual, mounted = tmp_path / "var-run.sock", tmp_path / "tmp.sock"
    monkeypatch.setattr(docker_events, "LOCAL_SOCKETS", (str(usual), str(mounted)))
    monkeypatch.setattr(docker_events, "_announced_fallbacks", set())
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    return usual, mounted


async def test_api_uses_the_tmp_mount_when_only_it_exists_and_says_so_once(local_sockets, caplog) -> None:
    from waypost.docker_events import DockerAPI

    caplog.set_level("INFO", logger="waypost.docker")
    usual, mounted = local_sockets
    mounted.touch()
    for _ in range(2):
        base, kwargs = DockerAPI()._connect_args()
        assert base == "http://docker" and kwargs["connector"]._path == str(mounted)
        await kwargs["connector"].close()
    (message,) = [r.getMessage() for r in caplog.records]
    assert str(usual) in message and f"unix://{mounted}" in message
    usual.touch()  # both: the usual socket, as before
    base, kwargs = DockerAPI()._connect_args()
    assert kwargs["connector"]._path == "/var/run/docker.sock"  # the docker SDK's own default
    await kwargs["connector"].close()


async def test_explicit_url_and_host_variable_win_over_the_tmp_mount(local_sockets, monkeypatch) -> None:
    from waypost.docker_events import DockerAPI

    _, mounted = local_sockets
    mounted.touch()
    base, kwargs = DockerAPI("unix:///run/other.sock")._connect_args()
    assert kwargs["connector"]._path == "/run/other.sock"
    await kwargs["connector"].close()
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
    base, kwargs = DockerAPI()._connect_args()
    assert base == "http://127.0.0.1:2375"
    await kwargs["connector"].close()


def test_make_client_uses_the_tmp_mount(local_sockets, monkeypatch) -> None:
    from waypost import docker_events

    made: list[dict] = []
    monkeypatch.setattr(docker_events.docker, "APIClient", lambda **kw: made.append(kw) or kw)
    _, mounted = local_sockets
    docker_events.make_client()
    mounted.touch()
    docker_events.make_client()
    docker_events.make_client("tcp://192.0.2.1:2375")
    assert [kw.get("base_url") for kw in made] == [None, f"unix://{mounted}", "tcp://192.0.2.1:2375"]


async def test_unreachable_warning_names_the_socket_actually_tried(local_sockets, caplog) -> None:
    caplog.set_level("WARNING", logger="waypost.docker")
    _, mounted = local_sockets
    mounted.touch()  # a plain file: "mounted", but nothing answers
    queue: asyncio.Queue[DockerEvent] = asyncio.Queue()
    bridge = EventBridge(queue, asyncio.get_running_loop(), None, min_backoff=0.01, max_backoff=0.05)
    bridge.start()
    try:
        assert (await asyncio.wait_for(queue.get(), 10)).kind == DISCONNECTED
    finally:
        await bridge.stop()
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert f"docker engine at unix://{mounted} unreachable" in warning and "/tmp/docker.sock" in warning
