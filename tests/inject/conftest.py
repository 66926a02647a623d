"""Fixtures for injection tests: Docker helpers, a registrator (internal IPs) and an injector."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.dockerkit import docker_fixtures
from waypost.ambassador.inject import Injector
from waypost.ambassador.routes import Options
from waypost.registrator import Registrator, RegistratorOptions

docker_client, busybox_image, docker_cleanup = docker_fixtures()


@pytest.fixture
async def registrator(catalog_client, docker_cleanup) -> AsyncIterator[Registrator]:
    """Registers this host's containers at their bridge IPs, so the host can reach them."""
    reg = Registrator(catalog_client, RegistratorOptions(node="injecttest", internal=True, retry_interval=0.2))
    await reg.start()
    await reg.first_sync.wait()
    yield reg
    await reg.stop()


@pytest.fixture
async def injector(catalog_client, registrator) -> AsyncIterator[Injector]:
    inj = Injector(catalog_client, Options(strict_services=False, wait_for_backends=5, connect_timeout=1))
    assert await inj.start(), inj.unavailable
    await inj.synced.wait()
    yield inj
    await inj.stop()
