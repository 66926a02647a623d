"""Drive an example's docker-compose file the way a user does, with locally built images.

The compose files name the images users normally pull (``redis:7``, ``python:3.12-slim``); they
read ``REDIS_IMAGE``, ``BASE_IMAGE`` and ``WAYPOST_IMAGE`` from the environment, which is how the
tests substitute the images built by :mod:`tests.images` without editing the files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tests.tooling import missing

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
T = TypeVar("T")


def compose_command() -> list[str]:
    """``docker-compose`` (v1, Debian's) when installed, else the ``docker compose`` plugin."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
    if probe.returncode == 0:
        return ["docker", "compose"]
    missing("neither docker-compose nor the docker compose plugin is installed", "apt-get install -y docker-compose")
    raise AssertionError("unreachable")


class Compose:
    """One example brought up as its own compose project (unique name, always torn down)."""

    def __init__(self, example: str, env: dict[str, str]) -> None:
        self.dir = EXAMPLES / example
        self.file = self.dir / "docker-compose.yml"
        self.project = f"wpt{example.replace('-', '')}{uuid.uuid4().hex[:6]}"
        self.env = {**os.environ, **env}
        self.base = [*compose_command(), "-p", self.project, "-f", str(self.file)]

    def __call__(self, *args: str, timeout: float = 180) -> str:
        """Run one compose command in the example's directory; AssertionError with its output on failure."""
        proc = subprocess.run([*self.base, *args], cwd=self.dir, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
                                 f"\n--- logs ---\n{self.logs()}")
        return proc.stdout

    def containers(self, service: str) -> list[str]:
        """Ids of the service's running containers."""
        return self("ps", "-q", service).split()

    def exec(self, container: str, *cmd: str, timeout: float = 60) -> str:
        """Run `cmd` in a container (by id); AssertionError with its output on failure."""
        proc = subprocess.run(["docker", "exec", container, *cmd], capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise AssertionError(f"docker exec {' '.join(cmd)}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def logs(self, tail: int = 60) -> str:
        proc = subprocess.run([*self.base, "logs", "--no-color", "--tail", str(tail)], cwd=self.dir, env=self.env,
                              capture_output=True, text=True, timeout=60)
        return proc.stdout + proc.stderr

    def down(self) -> None:
        """Remove containers, networks, volumes and the images compose built; then anything left."""
        subprocess.run([*self.base, "--profile", "tools", "down", "-v", "--rmi", "local", "--remove-orphans",
                        "-t", "1"], cwd=self.dir, env=self.env, capture_output=True, timeout=120)
        label = f"label=com.docker.compose.project={self.project}"
        leftovers = subprocess.run(["docker", "ps", "-aq", "--filter", label], capture_output=True, text=True).stdout
        if leftovers.split():
            subprocess.run(["docker", "rm", "-f", *leftovers.split()], capture_output=True)
        networks = subprocess.run(["docker", "network", "ls", "-q", "--filter", label],
                                  capture_output=True, text=True).stdout
        if networks.split():
            subprocess.run(["docker", "network", "rm", *networks.split()], capture_output=True)


def eventually(check: Callable[[], T], timeout: float = 30, what: str = "condition", interval: float = 0.3) -> T:
    """Poll `check` until it returns a truthy value without raising; AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = check()
            if value:
                return value
            last = value
        except Exception as exc:  # noqa: BLE001 - kept for the failure message
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")
        time.sleep(interval)


def wait_for(fetch: Callable[[], T], predicate: Callable[[T], object], timeout: float = 30,
             what: str = "condition") -> T:
    """Poll `fetch` until `predicate` holds for its value; return that value."""
    box: list[T] = []

    def check() -> bool:
        box[:] = [fetch()]
        return bool(predicate(box[0]))

    eventually(check, timeout=timeout, what=what)
    return box[0]


def get_json(url: str, timeout: float = 5) -> Any:
    """GET `url` and decode its JSON body (also for error statuses)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read() or b"null")


def hit(url: str, count: int) -> tuple[Counter[str], list[dict]]:
    """GET the demo app `count` times; (hits per instance among successes, every answer)."""
    answers = [get_json(url) for _ in range(count)]
    seen = Counter(a["instance"] for a in answers if isinstance(a, dict) and "hits" in a)
    return seen, answers


def status(url: str) -> dict:
    """`waypost up`'s /v1/waypost/status."""
    return get_json(url.rstrip("/") + "/v1/waypost/status")


def instances(status_doc: dict, service: str) -> list[dict]:
    """The catalog instances of `service` in a status document."""
    for svc in status_doc.get("services", []):
        if svc["name"] == service:
            return svc["instances"]
    return []
