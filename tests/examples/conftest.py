"""Fixtures for the example tests: local images and a helper to bring an example up and down."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests import images
from tests.examples.compose import Compose, compose_command
from tests.tooling import require_docker


@pytest.fixture(scope="session")
def example_images() -> dict[str, str]:
    """Environment that points the compose files at locally built images."""
    require_docker()
    compose_command()
    return {"BASE_IMAGE": images.ensure_base(), "REDIS_IMAGE": images.ensure_redis(),
            "WAYPOST_IMAGE": images.ensure_waypost()}


@pytest.fixture
def example(example_images: dict[str, str]) -> Iterator[Callable[..., Compose]]:
    """``example(name, **env)`` → a :class:`Compose` for examples/<name>, torn down after the test."""
    stacks: list[Compose] = []

    def make(name: str, **env: str) -> Compose:
        stack = Compose(name, {**example_images, **env})
        stacks.append(stack)
        return stack

    try:
        yield make
    finally:
        for stack in stacks:
            print(f"--- {stack.project} logs ---\n{stack.logs(tail=200)}")  # shown when the test failed
            stack.down()
