"""Waiting for a condition in async tests, with a failure message that says what never happened."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 15.0, what: str = "",
                     interval: float = 0.05) -> Any:
    """Poll `check` until it returns something truthy and return that; fail after `timeout` with
    the last value seen."""
    deadline = time.monotonic() + timeout
    value: Any = None
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what or check}; last value {value!r}")
