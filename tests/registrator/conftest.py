"""Fixtures for registrator tests: Docker helpers from tests.dockerkit and a registrator factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.dockerkit import docker_fixtures
from waypost.registrator import Registrator, RegistratorOptions

docker_client, busybox_image, docker_cleanup = docker_fixtures()


@pytest.fixture
async def start_registrator(catalog_client, docker_cleanup) -> AsyncIterator[Callable[..., Any]]:
    """Factory: ``await start_registrator(**options)`` → a started :class:`Registrator` (stopped after)."""
    started: list[Registrator] = []

    async def start(client=None, **kw: Any) -> Registrator:
        kw.setdefault("node", "testnode")
        kw.setdefault("retry_interval", 0.2)
        registrator = Registrator(client or catalog_client, RegistratorOptions(**kw))
        await registrator.start()
        started.append(registrator)
        await registrator.first_sync.wait()
        return registrator

    try:
        yield start
    finally:
        for registrator in started:
            await registrator.stop()
