"""The injector's event handling: unlabelled containers cost no Docker call."""

from __future__ import annotations

import asyncio

from waypost.ambassador.connect import LABEL
from waypost.ambassador.inject import Injector
from waypost.docker_events import CONTAINER, DockerEvent


class CountingDocker:
    """Stands in for DockerAPI: records inspects, reports every container as gone."""

    def __init__(self) -> None:
        self.inspected: list[str] = []

    async def inspect(self, cid: str) -> None:
        self.inspected.append(cid)

    async def running(self) -> list[tuple[str, str]]:
        return []

    async def close(self) -> None:
        pass


async def test_only_labelled_or_attached_containers_are_inspected() -> None:
    injector = Injector(catalog=None)  # type: ignore[arg-type] - no route is ever attached here
    injector.docker = CountingDocker()  # type: ignore[assignment]
    consumer = asyncio.create_task(injector._consume())
    try:
        events = [
            DockerEvent(kind=CONTAINER, action="start", container_id="plain", attributes={"name": "web"}),
            DockerEvent(kind=CONTAINER, action="start", container_id="client",
                        attributes={"name": "app", LABEL: "redis"}),
            DockerEvent(kind=CONTAINER, action="die", container_id="legacy"),  # no attributes: check anyway
        ]
        for event in events:
            injector._queue.put_nowait(event)
        async with asyncio.timeout(5):
            while len(injector.docker.inspected) < 2 or not injector._queue.empty():  # type: ignore[attr-defined]
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert injector.docker.inspected == ["client", "legacy"]  # type: ignore[attr-defined]
    finally:
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
