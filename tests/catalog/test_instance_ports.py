"""Which port an injected ambassador listens on for a `waypost.connect` entry without a port."""

from __future__ import annotations

import pytest

from waypost.catalog.model import CONTAINER_PORT_META, Instance


def entry(port: int, meta: dict[str, str] | None = None) -> dict:
    return {"Node": {"Node": "n1", "Address": "10.0.0.1"},
            "Service": {"ID": "x", "Service": "redis", "Port": port, "Meta": meta or {}}, "Checks": []}


def test_a_published_port_dials_the_containers_own_port() -> None:
    inst = Instance.from_health_entry(entry(32768, {CONTAINER_PORT_META: "6379", "team": "a"}))
    assert inst.port == 32768  # where traffic goes
    assert inst.dial_port == 6379  # what the unchanged app dials


def test_registrations_by_other_tools_dial_the_registered_port() -> None:
    assert Instance.from_health_entry(entry(6379)).dial_port == 6379


@pytest.mark.parametrize("bad", ["", "0", "65536", "80x", "-1", "٣"])
def test_a_bad_container_port_meta_falls_back_to_the_registered_port(bad: str) -> None:
    assert Instance.from_health_entry(entry(5432, {CONTAINER_PORT_META: bad})).dial_port == 5432
