"""Fixtures for the fault suite: Docker helpers from tests.dockerkit and the in-process ambassador
factory shared with tests/ambassador (the catalog fixtures come from tests/conftest.py)."""

from __future__ import annotations

from tests.dockerkit import docker_fixtures
from tests.proxying import ambassador_factory  # noqa: F401 - a fixture, used by name

docker_client, busybox_image, docker_cleanup = docker_fixtures()
