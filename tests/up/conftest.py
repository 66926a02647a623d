"""Fixtures for `waypost up` tests: Docker helpers and a running `waypost up` process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.dockerkit import SESSION, docker_fixtures
from tests.ports import free_port

# A label key of this session's own, so a waypost running elsewhere on the host (another test run,
# an example stack) never attaches to these tests' containers, nor ours to theirs.
CONNECT_LABEL = f"waypost.test-{SESSION}.connect"

docker_client, busybox_image, docker_cleanup = docker_fixtures()


@dataclass
class UpProcess:
    proc: subprocess.Popen
    http: str
    dns_port: int
    log_path: str

    def status(self) -> dict:
        with urllib.request.urlopen(self.http + "/v1/waypost/status", timeout=5) as resp:
            return json.loads(resp.read())

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as fh:
            return fh.read()


def start_up(tmp_path, *extra: str, internal: bool = True) -> UpProcess:
    """`waypost up` on free ports (with `--internal` unless told otherwise: container addresses
    need no published ports), returned once it printed its start-up summary."""
    http_port, dns_port = free_port(), free_port()
    log_path = str(tmp_path / f"up-{http_port}.log")
    out = open(log_path, "w")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [sys.executable, "-m", "waypost", "up", "--http", f"127.0.0.1:{http_port}", "--dns",
         f"127.0.0.1:{dns_port}", "--node", "uptest", *(["--internal"] if internal else []), "--inject-label", CONNECT_LABEL,
         *extra],
        stdout=out, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    up = UpProcess(proc, f"http://127.0.0.1:{http_port}", dns_port, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, up.log()
        if "ambassadors" in up.log():  # the start-up summary's last line
            return up
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("waypost up did not print its summary:\n" + up.log())


def stop_up(up: UpProcess, sig: int = signal.SIGINT) -> int:
    if up.proc.poll() is None:
        up.proc.send_signal(sig)
        try:
            up.proc.wait(20)
        except subprocess.TimeoutExpired:
            up.proc.kill()
            up.proc.wait()
    return up.proc.returncode


@pytest.fixture
def waypost_up(tmp_path, docker_cleanup) -> Iterator[UpProcess]:
    up = start_up(tmp_path)
    yield up
    stop_up(up)
