"""The registrator's Prometheus metrics, read from its status when Prometheus scrapes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

# (status key, metric name, help, counter?)
_FIELDS: tuple[tuple[str, str, str, bool], ...] = (
    ("docker_connected", "docker_connected", "1 while the Docker event stream is connected", False),
    ("docker_connections", "docker_connections", "Connections made to the Docker engine (reconnects after the first)",
     True),
    ("catalog_reachable", "catalog_reachable", "1 while the catalog answers", False),
    ("events", "docker_events", "Docker events handled", True),
    ("services", "services", "Services this registrator has registered", False),
    ("containers", "containers", "Containers with registered services", False),
    ("syncs", "syncs", "Full reconciliations of Docker against the catalog", True),
    ("last_sync", "last_sync_timestamp_seconds", "When the last full reconciliation ended (Unix time)", False),
    ("writes", "catalog_writes", "Registrations, deregistrations and check updates written", True),
    ("errors", "catalog_errors", "Catalog calls that failed (rejected, refused, or retried)", True),
    ("metadata_warnings", "metadata_warnings", "Warnings about containers' SERVICE_ settings", True),
)


class RegistratorCollector:
    """Exposes a registrator's ``status()`` numbers as ``waypost_registrator_*`` metrics."""

    def __init__(self, status: Callable[[], dict[str, Any]]) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        status = self.status()
        for key, name, doc, counter in _FIELDS:
            value = float(status.get(key) or 0)
            family = CounterMetricFamily if counter else GaugeMetricFamily
            yield family(f"waypost_registrator_{name}", doc, value=value)


def registrator_registry(status: Callable[[], dict[str, Any]]) -> CollectorRegistry:
    """A registry holding just the registrator collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RegistratorCollector(status))
    return registry
