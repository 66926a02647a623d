"""The top-level Dockerfile: builds offline from a local base and host-built wheels, runs `waypost`,
and its HEALTHCHECK turns healthy for `waypost up`."""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest

from tests import images
from tests.tooling import require_docker


@pytest.fixture(scope="module")
def image() -> str:
    require_docker()
    return images.ensure_waypost()


def docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def test_help_and_size(image: str) -> None:
    out = docker("run", "--rm", image, "--help")
    assert out.returncode == 0, out.stderr
    for command in ("up", "catalog", "registrator", "dns", "ambassador"):
        assert command in out.stdout
    config = json.loads(docker("image", "inspect", image).stdout)[0]["Config"]
    assert config["Entrypoint"] == ["waypost"] and config["Cmd"] == ["up"]
    assert "waypost.healthcheck" in " ".join(config["Healthcheck"]["Test"])
    size, base = images.image_size(image), images.image_size(images.ensure_base())
    print(f"image {image}: {size / 1e6:.0f} MB, {(size - base) / 1e6:.0f} MB over the base")  # shown with -s / -rP
    assert size - base < 80e6, "Waypost and its dependencies should add well under 80 MB to the base"


def test_up_becomes_healthy(image: str) -> None:
    name = f"wpt-image-{uuid.uuid4().hex[:8]}"
    # A faster health interval than the image's 10 s default, so the test needn't wait for it.
    run = docker("run", "-d", "--name", name, "--label", "waypost.test=image", "--health-interval", "1s",
                 "--health-start-period", "1s", "-v", "/var/run/docker.sock:/var/run/docker.sock:ro",
                 image, "up", "--internal", "--no-inject", "--dns", "off", "--node", "imagetest")
    assert run.returncode == 0, run.stderr
    try:
        deadline, health = time.monotonic() + 45, ""
        while time.monotonic() < deadline:
            health = docker("inspect", "-f", "{{.State.Health.Status}} {{.State.Status}}", name).stdout.strip()
            if health.startswith(("healthy", "unhealthy")) or "exited" in health:
                break
            time.sleep(0.5)
        logs = docker("logs", name).stdout + docker("logs", name).stderr
        assert health.startswith("healthy"), f"health: {health}\n{logs}"
        assert "waypost up on node imagetest" in logs
        # the catalog it embeds answers inside the container
        probe = docker("exec", name, "python3", "-c",
                       "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:8500/v1/agent/self')"
                       ".read().decode())")
        assert '"imagetest"' in probe.stdout.replace(": ", ":").replace('"NodeName":', ""), probe
    finally:
        docker("rm", "-f", name)


def _wait_health(name: str, seconds: float = 45) -> str:
    deadline, health = time.monotonic() + seconds, ""
    while time.monotonic() < deadline:
        health = docker("inspect", "-f", "{{.State.Health.Status}} {{.State.Status}}", name).stdout.strip()
        if health.startswith(("healthy", "unhealthy")) or "exited" in health:
            break
        time.sleep(0.5)
    return health


def test_other_commands_are_healthy_too(image: str) -> None:
    """The HEALTHCHECK probes what each command serves: the catalog's API, and nothing for the
    registrator (no HTTP), instead of `up`'s /healthz that neither has."""
    suffix = uuid.uuid4().hex[:8]
    runs = {
        f"wpt-image-catalog-{suffix}": ["catalog"],
        f"wpt-image-registrator-{suffix}": ["registrator", "--internal", "consul://127.0.0.1:1"],
    }
    try:
        for name, command in runs.items():
            run = docker("run", "-d", "--name", name, "--label", "waypost.test=image", "--health-interval", "1s",
                         "--health-start-period", "1s", "-v", "/var/run/docker.sock:/var/run/docker.sock:ro",
                         image, *command)
            assert run.returncode == 0, run.stderr
        for name in runs:
            health = _wait_health(name)
            logs = docker("logs", name).stdout + docker("logs", name).stderr
            assert health.startswith("healthy"), f"{name} health: {health}\n{logs}"
    finally:
        for name in runs:
            docker("rm", "-f", name)
