"""Shared Docker test helpers: a tiny busybox image built locally, labelled containers, cleanup.

No registry pulls: the image is a static busybox binary with its applets symlinked, imported with
``docker import``. Everything a test creates carries the label ``waypost.test=<session id>``; the
:func:`cleanup` helper (and the fixtures built on it) removes every container, network and image
with this session's label, even when a test failed.

Typical use in a test package's conftest.py::

    from tests.dockerkit import docker_fixtures
    docker_client, busybox_image, docker_cleanup = docker_fixtures()
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

LABEL = "waypost.test"
SESSION = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
IMAGE_REPO = "waypost-test/busybox"
APPLETS = (
    "sh", "ash", "nc", "httpd", "sleep", "cat", "echo", "ls", "mkdir", "rm", "touch", "test", "[", "true",
    "false", "kill", "ps", "env", "printf", "wget", "ip", "ifconfig", "hostname", "tail", "head", "grep",
    "sed", "seq", "date", "nslookup", "usleep", "timeout", "ping", "xargs", "wc", "tr",
)
DOCKERD_LOG = "/tmp/dockerd.log"

_counter = 0


def labels(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This session's test label plus `extra`."""
    return {LABEL: SESSION, **(extra or {})}


def client() -> Any:
    """A docker SDK client from the environment (``DOCKER_HOST`` or the default socket)."""
    import docker

    return docker.from_env(timeout=60)


def _rootfs_tar(busybox: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for directory in ("bin", "tmp", "www", "etc", "proc", "sys", "dev"):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        tar.add(busybox, arcname="bin/busybox")
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            tar.addfile(info)
        for name, text in (("etc/passwd", "root:x:0:0:root:/:/bin/sh\n"), ("etc/group", "root:x:0:\n"),
                           ("www/index.html", "ok\n")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build_image(docker_client: Any, tag: str | None = None, extra_changes: tuple[str, ...] = ()) -> str:
    """Import the busybox image as ``waypost-test/busybox:<session>`` (labelled); returns its name.

    ``extra_changes`` are more Dockerfile instructions for the import (e.g. ``EXPOSE 8080/tcp``).
    """
    busybox = shutil.which("busybox") or "/usr/bin/busybox"
    if not os.path.exists(busybox):
        from tests.tooling import missing

        missing("busybox is not installed", "apt-get install -y busybox-static")
    tag = tag or SESSION
    changes = [f"LABEL {LABEL}={SESSION}", "ENV PATH=/bin", 'CMD ["sh"]', *extra_changes]
    docker_client.api.import_image_from_data(_rootfs_tar(busybox), repository=IMAGE_REPO, tag=tag, changes=changes)
    return f"{IMAGE_REPO}:{tag}"


def unique_name(prefix: str = "wpt") -> str:
    """A container/network name unique to this session."""
    global _counter
    _counter += 1
    return f"{prefix}-{SESSION}-{_counter}"


def run(docker_client: Any, image: str, command: Any = ("sleep", "3600"), *, name: str | None = None,
        extra_labels: dict[str, str] | None = None, **kwargs: Any) -> Any:
    """Start a detached, labelled container (default: ``sleep 3600``, stopped fast by SIGKILL)."""
    kwargs.setdefault("stop_signal", "SIGKILL")
    return docker_client.containers.run(
        image, list(command) if command is not None else None, detach=True,
        name=name or unique_name(), labels=labels(extra_labels), **kwargs,
    )


def create_network(docker_client: Any, **kwargs: Any) -> Any:
    """A labelled user-defined bridge network."""
    return docker_client.networks.create(unique_name("wptnet"), labels=labels(), **kwargs)


def cleanup(docker_client: Any, images: bool = False) -> None:
    """Remove every container and network (and, with `images`, image) labelled for this session."""
    selector = {"label": f"{LABEL}={SESSION}"}
    for container in docker_client.containers.list(all=True, filters=selector):
        try:
            container.remove(force=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
    for network in docker_client.networks.list(filters=selector):
        try:
            network.remove()
        except Exception:  # noqa: BLE001
            pass
    if images:
        for image in docker_client.images.list(filters=selector):
            try:
                docker_client.images.remove(image.id, force=True)
            except Exception:  # noqa: BLE001
                pass


def _session_alive(session: str) -> bool:
    """Whether the test process that owns label value `session` (``<pid>-<random>``) still runs."""
    pid_text = session.partition("-")[0]
    if not pid_text.isdigit():
        return True  # not one of ours: leave it alone
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def sweep_dead_sessions(docker_client: Any) -> list[str]:
    """Remove what test sessions that died without cleaning up left behind; returns their ids.

    A session killed mid-run (a CI timeout, Ctrl-C twice) never reaches its cleanup; its
    containers, networks and images keep the session label, whose pid part says whether the owner
    still runs. Live sessions (concurrent test runs, a benchmark) are never touched.
    """
    found: set[str] = set()
    for kind in (docker_client.containers.list(all=True, filters={"label": LABEL}),
                 docker_client.networks.list(filters={"label": LABEL}),
                 docker_client.images.list(all=True, filters={"label": LABEL})):
        for obj in kind:
            session = _labels_of(obj).get(LABEL, "")
            if session and session != SESSION:
                found.add(session)
    dead = sorted(s for s in found if not _session_alive(s))
    for session in dead:
        selector = {"label": f"{LABEL}={session}"}
        for container in docker_client.containers.list(all=True, filters=selector):
            _quietly(container.remove, force=True)
        for network in docker_client.networks.list(filters=selector):
            _quietly(network.remove)
        for image in docker_client.images.list(all=True, filters=selector):
            _quietly(docker_client.images.remove, image.id, force=True)
    return dead


def _labels_of(obj: Any) -> dict[str, str]:
    """Labels of a container, image or network model (networks keep them at the top level)."""
    attrs = obj.attrs or {}
    return attrs.get("Labels") or (attrs.get("Config") or {}).get("Labels") or {}


def _quietly(action: Any, *args: Any, **kwargs: Any) -> None:
    try:
        action(*args, **kwargs)
    except Exception:  # noqa: BLE001 - already gone, or in use by a live session's container
        pass


# ---- restarting the engine ----------------------------------------------------------------------


def dockerd_pid() -> int | None:
    """The pid of the local dockerd, if any."""
    try:
        with open("/var/run/docker.pid") as f:
            pid = int(f.read().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        pass
    out = subprocess.run(["pidof", "dockerd"], capture_output=True, text=True)
    pids = out.stdout.split()
    return int(pids[0]) if pids else None


def wait_for_engine(timeout: float = 60.0) -> None:
    """Return once the engine answers a ping; raise TimeoutError otherwise."""
    import docker

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            c = docker.from_env(timeout=5)
            try:
                c.ping()
                return
            finally:
                c.close()
        except Exception as exc:  # noqa: BLE001 - not up yet
            last = exc
            time.sleep(0.2)
    raise TimeoutError(f"docker engine did not answer within {timeout}s ({last})")


def _exited(pid: int) -> bool:
    """True once `pid` is gone or a zombie (reaped here when it is our own child)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    except ChildProcessError:
        pass  # not our child
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def restart_dockerd(down_for: float = 0.0, timeout: float = 60.0) -> float:
    """Restart the local dockerd the way this machine starts it; returns seconds it was unreachable.

    SIGTERM the running dockerd, wait for it to exit, optionally stay down `down_for` seconds,
    start it again with the same command line (output appended to /tmp/dockerd.log) and wait
    for a ping. Containers without a restart policy are stopped by this (no live-restore).
    """
    pid = dockerd_pid()
    if pid is None:
        raise RuntimeError("no dockerd process found to restart")
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = [part.decode() for part in f.read().split(b"\0") if part]
    started = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _exited(pid):
            break
        time.sleep(0.1)
    else:
        raise TimeoutError(f"dockerd {pid} did not exit within {timeout}s of SIGTERM")
    if down_for:
        time.sleep(down_for)
    with open(DOCKERD_LOG, "ab") as log:
        # double fork: the new engine is not our child, so it never lingers as our zombie (which
        # would look alive to the next restart's os.kill(pid, 0)) and outlives this process
        subprocess.run(["sh", "-c", 'exec "$@" </dev/null &', "dockerd", *(argv or ["dockerd"])],
                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True, check=True)
    wait_for_engine(timeout)
    return time.monotonic() - started


# ---- pytest fixtures ------------------------------------------------------------------------------


def docker_fixtures() -> tuple[Any, Any, Any]:
    """Fixtures to bind in a conftest.py: ``docker_client``, ``busybox_image``, ``docker_cleanup``.

    ``docker_client`` (session) skips/fails via tests.tooling when no engine answers;
    ``busybox_image`` (session) builds the image once and removes it at the end;
    ``docker_cleanup`` (function) removes this session's containers/networks after the test.
    """

    @pytest.fixture(scope="session")
    def docker_client() -> Iterator[Any]:
        from tests.tooling import require_docker

        require_docker()
        c = client()
        sweep_dead_sessions(c)
        try:
            yield c
        finally:
            cleanup(c, images=True)
            c.close()

    @pytest.fixture(scope="session")
    def busybox_image(docker_client: Any) -> str:
        return build_image(docker_client)

    @pytest.fixture
    def docker_cleanup(docker_client: Any) -> Iterator[Any]:
        try:
            yield docker_client
        finally:
            cleanup(docker_client)

    return docker_client, busybox_image, docker_cleanup
