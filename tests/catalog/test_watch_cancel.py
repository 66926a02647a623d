"""A cancelled watch stops, even when its blocking read finishes in the same instant.

That instant is the common case, not a corner: when a service leaves the catalog, the service-list
watch and the service's own watch wake together, and the consumer cancels the service's watch as
it reads the new list. Python 3.11's ``asyncio.wait_for`` returned the finished read instead of
raising, so the cancellation was lost and the watch went on polling a service nobody followed.
"""

from __future__ import annotations

import asyncio

import pytest

from waypost.catalog.watch import Watch


async def follow(watch: Watch, seen: list) -> None:
    async for value in watch:
        seen.append(value)


@pytest.mark.parametrize("yields_before_cancel", [0, 1, 2, 3])
async def test_cancel_while_the_read_completes(yields_before_cancel: int) -> None:
    answer = asyncio.Event()
    calls = 0

    async def fetch(index: int, wait: str) -> tuple[int, list[str]]:
        nonlocal calls
        calls += 1
        if calls == 1:
            return 1, ["a"]
        await answer.wait()  # the blocking read: answers when the catalog changes
        answer.clear()
        return index + 1, [f"change {calls}"]

    seen: list = []
    task = asyncio.get_running_loop().create_task(follow(Watch("svc", fetch, list), seen))
    for _ in range(5):
        await asyncio.sleep(0)
    assert seen == [["a"]] and calls == 2  # waiting in the second read
    answer.set()
    for _ in range(yields_before_cancel):
        await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=1.0)
    assert task in done, f"the watch kept running after cancel() ({calls} reads)"
    assert task.cancelled()
    assert calls <= 3


async def test_cancel_while_the_read_fails() -> None:
    """A read that fails as it is cancelled (the HTTP client closing) ends the watch, silently."""
    started = asyncio.Event()

    async def fetch(index: int, wait: str) -> tuple[int, list[str]]:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            raise ConnectionError("Connector is closed.") from None
        return 1, []

    task = asyncio.get_running_loop().create_task(follow(Watch("svc", fetch, list), []))
    await started.wait()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=1.0)
    assert task in done, "the watch caught the error and kept retrying after cancel()"
