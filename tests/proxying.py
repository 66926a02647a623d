"""Helpers for tests that push TCP through an in-process ambassador (tests/ambassador, tests/faults)."""

from __future__ import annotations

import asyncio

import pytest

from waypost.ambassador import Ambassador, Options


@pytest.fixture
async def ambassador_factory():
    """Start an in-process Ambassador; every one is stopped at the end of the test."""
    made: list[Ambassador] = []

    async def make(routes=(), catalog=None, **options) -> Ambassador:  # type: ignore[no-untyped-def]
        amb = Ambassador(routes, catalog, Options(**options))
        await amb.start()
        made.append(amb)
        return amb

    yield make
    for amb in made:
        await amb.stop()


async def ask(port: int, line: bytes = b"hello\n", timeout: float = 5.0) -> bytes:
    """One short connection: send a line, read the answer line."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(line)
            return await reader.readline()
        finally:
            writer.close()



async def open_and_echo(port: int, line: bytes, expect: bytes,
                        timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """Connect, send `line` and read one line back: the open connection when the answer is `expect`,
    else None (refused, reset, timed out or wrong answer; the connection is closed)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionError:  # reset so fast that the connect itself reports it
        return None
    writer.write(line)
    try:
        answer = await asyncio.wait_for(reader.readline(), timeout)
    except (ConnectionError, TimeoutError):
        answer = b""
    if answer == expect:
        return reader, writer
    writer.close()
    return None
