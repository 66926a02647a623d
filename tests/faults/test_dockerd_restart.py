"""The Docker engine under a running `waypost up`: restarted, and churned by many containers.

- dockerd restarted (SIGTERM, start again, as tests.dockerkit.restart_dockerd does): the event
  streams reconnect, a resync runs, the ``--restart=always`` backend is registered exactly once (at
  its possibly new address), the container the engine's shutdown stopped is deregistered (no
  orphan), and the injected ``--restart=always`` client is re-attached with one hosts line.
- churn: 100 containers here (``bench/soak.py`` does 500) started, stopped and removed in
  overlapping waves, a fifth of them with an injection label; afterwards the catalog holds exactly
  the running labelled containers, and once they are all gone the waypost process's descriptor
  count is back to its baseline (± ``FD_SLACK``), Docker API keep-alive connections aside: docker-py
  keeps up to 25 pools per client, so those are checked against that bound (``DOCKER_CONN_CAP``).

The registrator alone across a dockerd restart is in tests/registrator/test_docker.py.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests import dockerkit as dk
from tests.inject.test_inject_docker import BACKEND_CMD, eventually, fetch, hosts_lines
from tests.procinfo import fd_split, threads
from tests.up.conftest import CONNECT_LABEL, UpProcess, start_up, stop_up

pytestmark = pytest.mark.docker

CHURN = 100
FD_SLACK = 8
# docker-py keeps one keep-alive pool per distinct request URL, up to 25 pools (its num_pools) per
# client; waypost up has two API clients (registrator, injector) plus their two event streams, and
# asyncio's self-pipe is a unix socket pair: after touching many containers up to ~56 unix sockets
# stay open. That is bounded, so it is checked against the cap rather than the baseline.
DOCKER_CONN_CAP = 64  # 2 x 25 pools + 2 streams + the self-pipe pair, plus a little for concurrent requests


def services(up: UpProcess) -> dict[str, dict[str, Any]]:
    with urllib.request.urlopen(up.http + "/v1/agent/services", timeout=5) as resp:
        return json.loads(resp.read())


def registrations(up: UpProcess, name: str) -> list[dict[str, Any]]:
    return [s for s in services(up).values() if s["Service"] == name]


async def until(predicate: Any, timeout: float, what: str) -> Any:
    async def check() -> Any:
        return await asyncio.to_thread(predicate)

    return await eventually(check, timeout=timeout, what=what)


@pytest.mark.slow
async def test_dockerd_restart_no_orphan_no_duplicate_client_reattached(
        tmp_path: Path, docker_cleanup: Any, busybox_image: str) -> None:
    docker = docker_cleanup
    keep, lose = f"keep-{uuid.uuid4().hex[:8]}", f"lose-{uuid.uuid4().hex[:8]}"
    up = start_up(tmp_path)
    try:
        survivor = await asyncio.to_thread(dk.run, docker, busybox_image, BACKEND_CMD,
                                           environment={"SERVICE_NAME": keep}, ports={"8080/tcp": None},
                                           restart_policy={"Name": "always"})
        casualty = await asyncio.to_thread(dk.run, docker, busybox_image, BACKEND_CMD,
                                           environment={"SERVICE_NAME": lose}, ports={"8080/tcp": None})
        client = await asyncio.to_thread(dk.run, docker, busybox_image, ["sleep", "3600"],
                                         extra_labels={CONNECT_LABEL: f"web:8080@{keep}"},
                                         restart_policy={"Name": "always"})
        assert await eventually(lambda: fetch(client), what="answer before the restart") == survivor.id[:12]
        await until(lambda: len(registrations(up, lose)) == 1, 15, "casualty registered")
        before = up.status()["registrator"]

        await asyncio.to_thread(dk.restart_dockerd)

        await until(lambda: registrations(up, lose) == [], 30, "the stopped container deregistered")
        await asyncio.to_thread(survivor.reload)
        assert survivor.status == "running", "restart=always brings it back"
        await asyncio.to_thread(casualty.reload)
        assert casualty.status == "exited", "no restart policy: the engine's shutdown stopped it"
        ip = survivor.attrs["NetworkSettings"]["IPAddress"]

        def one_survivor_at_its_address() -> bool:
            regs = registrations(up, keep)
            return len(regs) == 1 and regs[0]["Address"] == ip and regs[0]["Port"] == 8080

        await until(one_survivor_at_its_address, 30, "survivor registered exactly once")
        assert await eventually(lambda: fetch(client), timeout=30, what="answer after the restart") == survivor.id[:12]
        assert len(hosts_lines(client, "web")) == 1
        status = up.status()
        after = status["registrator"]
        assert after["docker_connections"] >= before["docker_connections"] + 1
        assert after["syncs"] > before["syncs"]
        assert [a["container"] for a in status["ambassadors"]].count(client.id[:12]) == 1
        await asyncio.sleep(1.0)  # nothing flaps afterwards: still exactly one
        assert len(registrations(up, keep)) == 1 and registrations(up, lose) == []
        assert up.proc.poll() is None and "Traceback" not in up.log()
    finally:
        stop_up(up)


def _create(docker: Any, image: str, svc: str, connect: str | None) -> str:
    """A labelled `sleep` container exposing 8080 (not published: `waypost up --internal` registers
    exposed ports at the container address, and no docker-proxy is started per container)."""
    extra = {"SERVICE_NAME": svc}
    labels = dk.labels({CONNECT_LABEL: connect} if connect else None)
    created = docker.api.create_container(image, ["sleep", "3600"], name=dk.unique_name("churn"), ports=[8080],
                                          environment=extra, labels=labels, stop_signal="SIGKILL",
                                          host_config=docker.api.create_host_config())
    docker.api.start(created["Id"])
    return created["Id"]


@pytest.mark.slow
async def test_churn_of_100_containers_exact_registrations_and_no_fd_leak(
        tmp_path: Path, docker_cleanup: Any, busybox_image: str) -> None:
    docker = docker_cleanup
    svc = f"churn-{uuid.uuid4().hex[:8]}"
    rng = random.Random(8)
    up = start_up(tmp_path)
    pool = ThreadPoolExecutor(6)
    loop = asyncio.get_running_loop()

    def in_pool(fn: Any, *args: Any) -> Any:
        return loop.run_in_executor(pool, fn, *args)

    def ids_registered() -> set[str]:
        return {s["ID"].split(":")[1] for s in registrations(up, svc)}  # uptest:<name>:8080

    def names_running() -> set[str]:
        found = docker.containers.list(filters={"label": f"{dk.LABEL}={dk.SESSION}", "status": "running"})
        return {c.name for c in found if c.labels and c.name.startswith("churn-")}

    try:
        # warm-up: the first containers open the Docker and catalog connections the process keeps
        warm = [await in_pool(_create, docker, busybox_image, svc, f"web:8080@{svc}") for _ in range(2)]
        await until(lambda: len(registrations(up, svc)) == 2, 20, "warm-up registered")
        await asyncio.gather(*(in_pool(lambda c=c: docker.api.remove_container(c, force=True)) for c in warm))
        await until(lambda: registrations(up, svc) == [] and not up.status()["ambassadors"], 20, "warm-up gone")
        await asyncio.sleep(1.0)
        _, baseline = fd_split(up.proc.pid)
        threads_before = threads(up.proc.pid)

        started: list[str] = []

        async def wave(n: int) -> None:
            made = await asyncio.gather(*(in_pool(_create, docker, busybox_image, svc,
                                                  f"web:8080@{svc}" if rng.random() < 0.2 else None)
                                          for _ in range(n)))
            started.extend(made)

        t0 = time.monotonic()
        await wave(CHURN // 2)
        gone = rng.sample(started, CHURN // 4)  # removed while the second wave starts
        await asyncio.gather(wave(CHURN - CHURN // 2),
                             *(in_pool(lambda c=c: docker.api.remove_container(c, force=True)) for c in gone))
        alive = [c for c in started if c not in gone]
        stopped = rng.sample(alive, 10)  # stopped, not removed: must be deregistered too
        await asyncio.gather(*(in_pool(lambda c=c: docker.api.kill(c)) for c in stopped))
        assert len(started) == CHURN

        running = await asyncio.to_thread(names_running)
        assert len(running) == CHURN - CHURN // 4 - 10
        await until(lambda: ids_registered() == running, 60, "registrations == running labelled containers")
        churned_in = time.monotonic() - t0
        await asyncio.sleep(1.0)
        assert ids_registered() == running  # and it stays exact

        await asyncio.gather(*(in_pool(lambda c=c: docker.api.remove_container(c, force=True))
                               for c in started if c not in gone))
        await until(lambda: registrations(up, svc) == [] and not up.status()["ambassadors"], 60, "all deregistered")

        def fds_back() -> bool:
            return fd_split(up.proc.pid)[1] <= baseline + FD_SLACK

        await until(fds_back, 30, f"descriptors (Docker API connections aside) back to {baseline} ± {FD_SLACK}")
        docker_conns, others = fd_split(up.proc.pid)
        assert docker_conns <= DOCKER_CONN_CAP, f"{docker_conns} unix sockets: Docker API connections pile up"
        # the event bridge, the namespace thread (and the catalog's disk writer): none per container
        assert threads(up.proc.pid) == threads_before, "threads left behind by attached/detached containers"
        print(f"\n{CHURN} containers churned in {churned_in:.1f}s; descriptors other than Docker API connections "
              f"{baseline} -> {others}, Docker API connections {docker_conns} (cap {DOCKER_CONN_CAP})")
        assert up.proc.poll() is None and "Traceback" not in up.log()
    finally:
        pool.shutdown(wait=True)
        stop_up(up)
