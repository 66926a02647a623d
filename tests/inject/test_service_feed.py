"""ServiceFeed.first_port: the port an injected route without one listens on, and the log line a
route waiting for a service with no instance leaves (else the app's refused connects are a mystery)."""

from __future__ import annotations

import asyncio

from waypost.ambassador.inject import ServiceFeed
from waypost.catalog.model import CONTAINER_PORT_META, Instance


class ScriptedCatalog:
    """A catalog whose watch answers each list put on `answers`, in order."""

    def __init__(self) -> None:
        self.answers: asyncio.Queue[list[Instance]] = asyncio.Queue()

    async def watch(self, service: str, tag: str | None, passing_only: bool = True):
        while True:
            yield await self.answers.get()


def redis(port: int, container_port: str | None = None) -> Instance:
    meta = ((CONTAINER_PORT_META, container_port),) if container_port else ()
    return Instance(id=f"r{port}", service="redis", address="10.0.0.7", port=port, meta=meta)


async def test_first_port_waits_says_so_once_then_gives_the_containers_port() -> None:
    catalog = ScriptedCatalog()
    feed = ServiceFeed(catalog)  # type: ignore[arg-type]
    feed.subscribe("redis", None, lambda _i: None)
    said: list[str] = []
    task = asyncio.create_task(feed.first_port("redis", None, lambda: said.append("waiting")))
    await asyncio.sleep(0.01)
    assert said == [] and not task.done()  # the catalog has not answered yet: nothing to say
    await catalog.answers.put([])
    await asyncio.sleep(0.01)
    await catalog.answers.put([])
    await asyncio.sleep(0.01)
    assert said == ["waiting"] and not task.done()  # no instance: said once, still waiting
    await catalog.answers.put([redis(32768, "6379")])
    assert await asyncio.wait_for(task, 2) == 6379
    assert said == ["waiting"]
    feed.unsubscribe("redis", None, next(iter(feed._subs[("redis", None)])))


async def test_first_port_of_a_known_service_is_immediate_and_silent() -> None:
    catalog = ScriptedCatalog()
    feed = ServiceFeed(catalog)  # type: ignore[arg-type]
    callback = lambda _i: None  # noqa: E731
    feed.subscribe("redis", None, callback)
    await catalog.answers.put([redis(6380)])
    said: list[str] = []
    assert await asyncio.wait_for(feed.first_port("redis", None, lambda: said.append("waiting")), 2) == 6380
    assert said == []
    feed.unsubscribe("redis", None, callback)
