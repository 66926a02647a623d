"""Ambassadors injected into labelled containers, on a real dockerd: the app dials a name, nothing else."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import uuid
from typing import Any

from tests.dockerkit import run as docker_run
from tests.polling import eventually
from tests.tooling import missing
from waypost.ambassador.inject import Injector
from waypost.ambassador.routes import Options

BACKEND_CMD = ["sh", "-c", "hostname > /www/index.html; exec httpd -f -p 8080 -h /www"]


def service_name() -> str:
    return f"web-{uuid.uuid4().hex[:8]}"


async def start_backend(docker_client: Any, image: str, service: str) -> Any:
    return await asyncio.to_thread(docker_run, docker_client, image, BACKEND_CMD,
                                   environment={"SERVICE_NAME": service}, ports={"8080/tcp": None})


async def start_client(docker_client: Any, image: str, label: str | None) -> Any:
    extra = {"waypost.connect": label} if label is not None else {}
    return await asyncio.to_thread(docker_run, docker_client, image, ["sleep", "3600"], extra_labels=extra)


async def fetch(container: Any, host: str = "web", port: int = 8080, timeout: int = 3) -> str | None:
    """The body the app in `container` gets for GET / on host:port (None when the request failed).

    (busybox-static's wget crashes on this machine, so the request is written with nc.)
    """
    script = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w {timeout} {host} {port}"
    code, out = await asyncio.to_thread(container.exec_run, ["sh", "-c", script])
    text = out.decode(errors="replace")
    if code != 0 or not text.startswith("HTTP/1.") or " 200 " not in text.split("\r\n", 1)[0]:
        return None
    return text.split("\r\n\r\n", 1)[1].strip()


async def seen_backends(client: Any, want: set[str], tries: int = 40) -> set[str]:
    """Hostnames of the backends that answered `tries` requests (stops early once all wanted were seen)."""
    seen: set[str] = set()
    for _ in range(tries):
        answer = await fetch(client)
        assert answer is not None, "a request through the ambassador failed"
        seen.add(answer)
        if seen >= want:
            break
    return seen


def hosts_lines(container: Any, name: str) -> list[str]:
    code, out = container.exec_run(["cat", "/etc/hosts"])
    return [line for line in out.decode().splitlines() if line.split("#")[0].split()[1:2] == [name]]


async def test_client_reaches_backend_by_name_and_follows_scaling(injector, busybox_image, docker_client) -> None:
    svc = service_name()
    b1 = await start_backend(docker_client, busybox_image, svc)
    client = await start_client(docker_client, busybox_image, f"web:8080@{svc}")
    first = await eventually(lambda: fetch(client), what="first answer through the injected ambassador")
    assert first == b1.id[:12]
    assert hosts_lines(client, "web") == [hosts_lines(client, "web")[0]]
    assert hosts_lines(client, "web")[0].startswith("127.127.")

    b2 = await start_backend(docker_client, busybox_image, svc)
    both = {b1.id[:12], b2.id[:12]}
    await eventually(lambda: _all_seen(client, both), what="traffic spread over both backends")

    await asyncio.to_thread(b1.stop, timeout=0)
    await eventually(lambda: _only(client, {b2.id[:12]}), what="traffic leaving the stopped backend")


async def _all_seen(client: Any, want: set[str]) -> bool:
    return await seen_backends(client, want) >= want


async def _only(client: Any, want: set[str]) -> bool:
    return await seen_backends(client, set(), tries=10) == want


async def test_port_from_catalog_and_no_backends_then_one(injector, busybox_image, docker_client) -> None:
    """Without a port in the label the service's registered port is used, as soon as it is known."""
    svc = service_name()
    client = await start_client(docker_client, busybox_image, f"web@{svc}")
    await eventually(lambda: asyncio.sleep(0, result=bool(hosts_lines(client, "web"))), what="hosts line")
    assert await fetch(client, timeout=1) is None  # nothing registered yet: nothing listens
    backend = await start_backend(docker_client, busybox_image, svc)
    assert await eventually(lambda: fetch(client), what="answer once a backend exists") == backend.id[:12]
    # the only backend dies: a waiting client gets served by the replacement
    await asyncio.to_thread(backend.kill)
    waiting = asyncio.ensure_future(fetch(client, timeout=10))
    await asyncio.sleep(0.5)
    replacement = await start_backend(docker_client, busybox_image, svc)
    assert await waiting == replacement.id[:12]


async def test_restarts_reattach_and_reuse_hosts_lines(catalog_client, injector, busybox_image,
                                                        docker_client) -> None:
    svc = service_name()
    backend = await start_backend(docker_client, busybox_image, svc)
    client = await start_client(docker_client, busybox_image, f"web:8080@{svc}")
    await eventually(lambda: fetch(client), what="first answer")
    line = hosts_lines(client, "web")

    # waypost restarts: the new injector re-attaches and reuses the line
    await injector.stop()
    again = Injector(catalog_client, Options(strict_services=False, connect_timeout=1))
    assert await again.start()
    try:
        await again.synced.wait()
        assert await eventually(lambda: fetch(client), what="answer after waypost restart") == backend.id[:12]
        assert hosts_lines(client, "web") == line
        # the client restarts: new namespace, re-attached, still one line
        await asyncio.to_thread(client.restart, timeout=0)
        assert await eventually(lambda: fetch(client), what="answer after client restart") == backend.id[:12]
        assert hosts_lines(client, "web") == line
        # the client stops: its listeners close and nothing is left attached
        await asyncio.to_thread(client.stop, timeout=0)
        await eventually(lambda: asyncio.sleep(0, result=client.id not in again.attached), what="detach")
    finally:
        await again.stop()


async def test_two_clients_and_unlabelled_untouched(injector, busybox_image, docker_client) -> None:
    svc = service_name()
    backend = await start_backend(docker_client, busybox_image, svc)
    c1 = await start_client(docker_client, busybox_image, f"web:8080@{svc}")
    c2 = await start_client(docker_client, busybox_image, f"web:8080@{svc}")
    plain = await start_client(docker_client, busybox_image, None)
    for c in (c1, c2):
        assert await eventually(lambda c=c: fetch(c), what="answer") == backend.id[:12]
    results = await asyncio.gather(*(fetch(c) for c in (c1, c2, c1, c2)))
    assert results == [backend.id[:12]] * 4
    assert plain.id not in injector.attached
    code, out = plain.exec_run(["cat", "/etc/hosts"])
    assert "waypost" not in out.decode()
    assert await fetch(plain, timeout=1) is None


async def test_fifty_labelled_clients(injector, busybox_image, docker_client) -> None:
    svc = service_name()
    backend = await start_backend(docker_client, busybox_image, svc)
    clients = await asyncio.gather(*(start_client(docker_client, busybox_image, f"web:8080@{svc}")
                                     for _ in range(50)))
    ids = {c.id for c in clients}
    await eventually(lambda: asyncio.sleep(0, result=ids <= set(injector.attached)), timeout=60,
                     what="all 50 attached")
    sample = clients[::10]
    answers = await asyncio.gather(*(eventually(lambda c=c: fetch(c), what="answer") for c in sample))
    assert answers == [backend.id[:12]] * len(sample)


def _ambassador_inject(catalog_url: str, label: str, *prefix: str) -> subprocess.Popen:
    return subprocess.Popen([*prefix, sys.executable, "-m", "waypost", "ambassador", "--inject", "--catalog",
                             catalog_url, "--inject-label", label], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


async def test_ambassador_inject_command(catalog_server, registrator, busybox_image, docker_client) -> None:
    """`waypost ambassador --inject` on its own, following its own label key."""
    label = f"waypost.test-{uuid.uuid4().hex[:8]}.connect"
    svc = service_name()
    backend = await start_backend(docker_client, busybox_image, svc)
    proc = _ambassador_inject(catalog_server.url, label)
    try:
        client = await asyncio.to_thread(docker_run, docker_client, busybox_image, ["sleep", "3600"],
                                         extra_labels={label: f"web:8080@{svc}"})
        assert await eventually(lambda: fetch(client), what="answer via the injecting process") == backend.id[:12]
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(proc.communicate, timeout=15)
        assert proc.returncode == 0 and "Traceback" not in err
    finally:
        proc.kill()


def test_inject_without_cap_sys_admin_says_so_once(catalog_server) -> None:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        missing("setpriv is not installed", "apt-get install -y util-linux")
    proc = _ambassador_inject("http://127.0.0.1:9", "waypost.connect", setpriv, "--bounding-set", "-sys_admin",
                              "--inh-caps", "-sys_admin", "--")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert err.count("CAP_SYS_ADMIN") == 1 and "Traceback" not in err


async def _truthy(value: Any) -> Any:
    return value


async def test_shared_network_namespaces_are_left_alone_with_a_warning(
        injector, busybox_image, docker_client, caplog) -> None:
    """--network host would put listeners in the host's namespace; a container:X joiner shares X's
    namespace and hosts file. Neither is served: the log says what to do instead."""
    svc = service_name()
    label = {"waypost.connect": f"web:8080@{svc}"}
    on_host = await asyncio.to_thread(docker_run, docker_client, busybox_image, ["sleep", "3600"],
                                      extra_labels=label, network_mode="host")
    owner = await start_client(docker_client, busybox_image, None)
    joiner = await asyncio.to_thread(docker_run, docker_client, busybox_image, ["sleep", "3600"],
                                     extra_labels=label, network_mode=f"container:{owner.id}")
    await eventually(lambda: _truthy("host's network" in caplog.text and "put the label on that container"
                                     in caplog.text), what="both warnings")
    assert on_host.id not in injector.attached and joiner.id not in injector.attached
    for container in (on_host, owner):
        code, out = await asyncio.to_thread(container.exec_run, ["cat", "/etc/hosts"])
        assert "waypost" not in out.decode()


async def test_a_route_that_cannot_listen_yet_is_retried(catalog_client, registrator, busybox_image,
                                                         docker_client) -> None:
    """The app itself holds the port (0.0.0.0:8080): the injected route can't listen. Once the app lets
    go, the retry opens it, without waiting for any Docker event."""
    svc = service_name()
    backend = await start_backend(docker_client, busybox_image, svc)
    key = f"waypost.retry-{uuid.uuid4().hex[:6]}.connect"
    client = await asyncio.to_thread(docker_run, docker_client, busybox_image,
                                     ["sh", "-c", "nc -l -p 8080 >/dev/null & exec sleep 3600"],
                                     extra_labels={key: f"web:8080@{svc}"})
    def app_listens() -> bool:  # port 8080 (1F90) in state LISTEN (0A); busybox nc listens on [::]
        tcp = client.exec_run(["cat", "/proc/net/tcp", "/proc/net/tcp6"])[1].decode()
        return any(len(f := line.split()) > 3 and f[1].endswith(":1F90") and f[3] == "0A"
                   for line in tcp.splitlines())

    await eventually(lambda: asyncio.to_thread(app_listens), what="the app listening on 8080")
    inj = Injector(catalog_client, Options(strict_services=False, wait_for_backends=5, connect_timeout=1), label=key)
    assert await inj.start(), inj.unavailable
    try:
        await inj.synced.wait()
        att = await eventually(lambda: _truthy(inj.attached.get(client.id)), what="attached")
        assert [spec.name for spec, _ in att.unopened] == ["web"]
        await asyncio.to_thread(client.exec_run, ["sh", "-c", "kill $(pidof nc)"])
        assert await eventually(lambda: fetch(client), what="answer once the route opened") == backend.id[:12]
        assert att.unopened == [] and inj.attached.get(client.id) is att  # the same attachment
    finally:
        await inj.stop()


async def test_rename_shows_the_new_name(injector, busybox_image, docker_client) -> None:
    svc = service_name()
    await start_backend(docker_client, busybox_image, svc)
    client = await start_client(docker_client, busybox_image, f"web:8080@{svc}")
    await eventually(lambda: _truthy(client.id in injector.attached and injector.attached[client.id].routes),
                     what="attached with its route")
    new_name = f"{client.name}-renamed"
    await asyncio.to_thread(client.rename, new_name)
    await eventually(lambda: _truthy(injector.attached[client.id].name == new_name), what="the new name")
    [(_, route, _)] = injector.attached[client.id].routes
    assert route.name == f"{new_name}/web"
    assert any(a["client"] == new_name for a in injector.snapshot())
