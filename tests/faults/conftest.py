"""Fixtures for the fault suite: Docker helpers from tests.dockerkit (the catalog fixtures come from
tests/conftest.py)."""

from __future__ import annotations

from tests.dockerkit import docker_fixtures

docker_client, busybox_image, docker_cleanup = docker_fixtures()
from tests.proxying import ambassador_factory  # noqa: E402,F401 - fixture shared with tests/ambassador
