"""Hosts files the injector cannot (or must not) edit, under a real `waypost up` and dockerd.

Docker bind-mounts ``/var/lib/docker/containers/<id>/hosts`` (``HostsPath``) over each container's
/etc/hosts; the injector maps the dialled names to 127.127.x.y there. What happens when it can't:

- the file is immutable (``chattr +i``: even root gets EPERM) → one warning naming the container
  and the file; the 127.127.x.y listener serves anyway;
- the user mounted their own file (``-v FILE:/etc/hosts:ro``) → Docker then reports FILE as
  ``HostsPath``: waypost must leave the user's file alone (it could be the host's own /etc/hosts),
  warn naming the container and FILE, and still serve the listener;
- the container is ``--read-only`` → its /etc/hosts mount is read-only, but the host-side file is
  not: the name resolves;
- ``HostsPath`` was deleted on the host → the mount still holds the file; it is edited through
  ``/proc/<pid>/root/etc/hosts`` and the name resolves.

In every case a normal labelled container next to them gets its name as usual.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.dockerkit import run as docker_run
from tests.inject.test_inject_docker import BACKEND_CMD, eventually, fetch, hosts_lines
from tests.tooling import require_tool
from tests.up.conftest import CONNECT_LABEL, start_up, stop_up

pytestmark = pytest.mark.docker


async def start(docker_client: Any, image: str, command: list[str], **kwargs: Any) -> Any:
    container = await asyncio.to_thread(docker_run, docker_client, image, command, **kwargs)
    await asyncio.to_thread(container.reload)
    return container


async def client_of(docker_client: Any, image: str, svc: str, **kwargs: Any) -> Any:
    return await start(docker_client, image, ["sleep", "3600"], extra_labels={CONNECT_LABEL: f"web:8080@{svc}"},
                       **kwargs)


async def test_unwritable_and_user_mounted_hosts_files_warn_and_the_listener_serves(
        tmp_path: Path, docker_cleanup: Any, busybox_image: str) -> None:
    chattr = require_tool("chattr", "e2fsprogs")
    docker = docker_cleanup
    svc = f"web-{uuid.uuid4().hex[:8]}"
    backend = await start(docker, busybox_image, BACKEND_CMD, environment={"SERVICE_NAME": svc},
                          ports={"8080/tcp": None})
    immutable = await client_of(docker, busybox_image, svc)
    user_file = tmp_path / "my-hosts"
    user_file.write_text("127.0.0.1\tlocalhost\n10.9.9.9\tsomething-of-mine\n")
    os.chmod(tmp_path, 0o755)
    user_mounted = await client_of(docker, busybox_image, svc,
                                   volumes={str(user_file): {"bind": "/etc/hosts", "mode": "ro"}})
    normal = await client_of(docker, busybox_image, svc)
    locked = immutable.attrs["HostsPath"]
    subprocess.run([chattr, "+i", locked], check=True)
    up = None
    try:
        with pytest.raises(PermissionError):  # the lock holds even for root
            open(locked, "a").close()  # noqa: SIM115
        up = start_up(tmp_path)
        # the neighbour is unaffected: name and listener work
        assert await eventually(lambda: fetch(normal), what="normal client by name") == backend.id[:12]
        assert len(hosts_lines(normal, "web")) == 1
        for container in (immutable, user_mounted):
            answer = await eventually(lambda c=container: fetch(c, host="127.127.0.2"), what="listener by address")
            assert answer == backend.id[:12]
            assert await fetch(container, timeout=1) is None  # the name does not resolve there
        log = up.log()
        assert f"container {immutable.name}: cannot write its hosts file {locked} (Operation not permitted)" in log
        assert f"container {user_mounted.name}: its /etc/hosts is mounted from {user_file}" in log
        assert user_file.read_text() == "127.0.0.1\tlocalhost\n10.9.9.9\tsomething-of-mine\n"  # untouched
        assert "Traceback" not in log
    finally:
        subprocess.run([chattr, "-i", locked], check=False)
        if up is not None:
            stop_up(up)


async def test_read_only_container_and_deleted_hosts_file_still_resolve(
        tmp_path: Path, docker_cleanup: Any, busybox_image: str) -> None:
    docker = docker_cleanup
    svc = f"web-{uuid.uuid4().hex[:8]}"
    backend = await start(docker, busybox_image, BACKEND_CMD, environment={"SERVICE_NAME": svc},
                          ports={"8080/tcp": None})
    read_only = await client_of(docker, busybox_image, svc, read_only=True)
    deleted = await client_of(docker, busybox_image, svc)
    os.remove(deleted.attrs["HostsPath"])
    up = start_up(tmp_path)
    try:
        for container in (read_only, deleted):
            answer = await eventually(lambda c=container: fetch(c), what=f"{container.name} by name")
            assert answer == backend.id[:12]
            assert len(hosts_lines(container, "web")) == 1
        code, _ = await asyncio.to_thread(read_only.exec_run, ["touch", "/etc/hosts"])
        assert code != 0, "the container's own view of /etc/hosts stays read-only"
        log = up.log()
        assert "hosts file" not in log and "Traceback" not in log
    finally:
        stop_up(up)
