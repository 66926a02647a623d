"""The catalog client: the only code that speaks to the catalog (embedded or Consul)."""

from waypost.catalog.client import CatalogClient, CatalogError, instances_from_health
from waypost.catalog.model import CRITICAL, PASSING, WARNING, CheckDef, Instance, ServiceDef
from waypost.catalog.watch import Watch

__all__ = [
    "CRITICAL", "PASSING", "WARNING", "CatalogClient", "CatalogError", "CheckDef", "Instance",
    "ServiceDef", "Watch", "instances_from_health",
]
