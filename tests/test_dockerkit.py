"""The test kit's own promise: what a killed test session left on the engine is removed by the next
session, and nothing of a session that still runs is touched."""

from __future__ import annotations

import subprocess
from typing import Any

from tests import dockerkit
from tests.dockerkit import docker_fixtures

docker_client, busybox_image, docker_cleanup = docker_fixtures()


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def leave_behind(docker: Any, image: str, session: str) -> tuple[Any, Any]:
    """A stopped container and a network labelled as if `session` had created them."""
    container = docker.containers.create(image, ["true"], labels={dockerkit.LABEL: session},
                                         name=dockerkit.unique_name("sweep"))
    network = docker.networks.create(dockerkit.unique_name("sweep"), labels={dockerkit.LABEL: session})
    return container, network


def exists(collection: Any, obj_id: str) -> bool:
    import docker.errors

    try:
        collection.get(obj_id)
        return True
    except docker.errors.NotFound:
        return False


def test_sweep_removes_a_dead_sessions_leftovers_only(docker_client: Any, busybox_image: str) -> None:
    dead = f"{dead_pid()}-deadbeef"
    alive = "1-0a11ve00"  # pid 1 always runs: a concurrent session's resources must stay
    dead_container, dead_network = leave_behind(docker_client, busybox_image, dead)
    live_container, live_network = leave_behind(docker_client, busybox_image, alive)
    try:
        swept = dockerkit.sweep_dead_sessions(docker_client)
        assert dead in swept and alive not in swept
        assert not exists(docker_client.containers, dead_container.id)
        assert not exists(docker_client.networks, dead_network.id)
        assert exists(docker_client.containers, live_container.id)
        assert exists(docker_client.networks, live_network.id)
        assert exists(docker_client.images, busybox_image), "this session's own image must stay"
    finally:
        for obj in (dead_container, live_container):
            if exists(docker_client.containers, obj.id):
                obj.remove(force=True)
        for obj in (dead_network, live_network):
            if exists(docker_client.networks, obj.id):
                obj.remove()
