"""Test prerequisites: skip with the fixing command locally, fail under CI=true."""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def missing(reason: str, fix: str) -> None:
    """Skip (locally) or fail (under CI=true) because a prerequisite is missing."""
    message = f"{reason}; fix: {fix}"
    if IN_CI:
        pytest.fail(f"prerequisite missing under CI=true: {message}", pytrace=False)
    pytest.skip(message)


def require_tool(tool: str, apt_package: str | None = None) -> str:
    """Return the path of `tool`, or skip/fail naming the apt package that provides it."""
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin:/usr/local/sbin")
    if path is None:
        missing(f"{tool} is not installed", f"apt-get install -y {apt_package or tool}")
    return path  # type: ignore[return-value]


def require_docker() -> None:
    """Skip/fail unless a Docker engine answers on DOCKER_HOST or the default socket."""
    try:
        import docker

        client = docker.from_env(timeout=5)
        client.ping()
        client.close()
    except Exception as exc:  # noqa: BLE001 - any failure means no usable engine
        missing(f"no Docker engine answers ({exc.__class__.__name__})",
                "apt-get install -y docker.io && (dockerd >/var/log/dockerd.log 2>&1 &)")
