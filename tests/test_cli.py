"""The `waypost` command line as a user runs it: help, flags from the environment, clean stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.ports import free_port
from waypost.cli import SUBCOMMANDS


def waypost(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "waypost", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_help_lists_every_subcommand() -> None:
    out = waypost("--help")
    assert out.returncode == 0
    for name in SUBCOMMANDS:
        assert name in out.stdout


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_each_subcommand_has_complete_help(command: str) -> None:
    out = waypost(command, "--help")
    assert out.returncode == 0, out.stderr
    assert "--log-format" in out.stdout and "[env WAYPOST_LOG_FORMAT]" in out.stdout


def test_bad_flag_value_names_the_flag() -> None:
    out = waypost("catalog", "--listen", "127.0.0.1:notaport")
    assert out.returncode == 2
    assert "--listen" in out.stderr and "Traceback" not in out.stderr


def test_bad_env_value_names_the_variable() -> None:
    out = waypost("catalog", env={"WAYPOST_LOG_FORMAT": "yaml", "WAYPOST_LISTEN": f"127.0.0.1:{free_port()}"})
    assert out.returncode == 2 and "WAYPOST_LOG_FORMAT" in out.stderr and "Traceback" not in out.stderr


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} never answered")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_with_env_configured_listen(sig: signal.Signals) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "waypost", "catalog", "--log-format", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "WAYPOST_LISTEN": f"127.0.0.1:{port}"})
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/status/leader", proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert '"level": "info"' in err  # --log-format json gives one JSON object per line
