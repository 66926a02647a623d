"""The catalog client: the only code that speaks to the catalog (embedded or Consul).

``CatalogClient`` (py-consul on aiohttp) is imported on first use, so processes that only read the
catalog through :mod:`waypost.catalog.reader` never load aiohttp or py-consul.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from waypost.catalog.model import (
    CRITICAL,
    PASSING,
    WARNING,
    CheckDef,
    Instance,
    ServiceDef,
    instances_from_health,
)
from waypost.catalog.watch import Watch

if TYPE_CHECKING:
    from waypost.catalog.client import CatalogClient, CatalogError

__all__ = [
    "CRITICAL", "PASSING", "WARNING", "CatalogClient", "CatalogError", "CheckDef", "Instance",
    "ServiceDef", "Watch", "instances_from_health",
]


def __getattr__(name: str) -> Any:
    if name in ("CatalogClient", "CatalogError"):
        from waypost.catalog import client

        return getattr(client, name)
    raise AttributeError(f"module 'waypost.catalog' has no attribute {name!r}")
