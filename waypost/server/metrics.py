"""The embedded catalog's Prometheus metrics, read from the store when Prometheus scrapes.

Served on ``/v1/agent/metrics?format=prometheus`` (Consul's path, so an existing scrape config
works) and, under ``waypost up``, on its ``/metrics`` too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric

from waypost.catalog.model import CRITICAL, MAINTENANCE, PASSING, WARNING
from waypost.server.store import Store

CHECK_STATES = (PASSING, WARNING, CRITICAL, MAINTENANCE)


class CatalogCollector:
    """Sizes and state of one store: what the catalog holds and how many watchers wait on it."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        store = self.store
        yield GaugeMetricFamily("waypost_catalog_index", "The catalog's current raft-style index (X-Consul-Index)",
                                value=store.index)
        yield GaugeMetricFamily("waypost_catalog_nodes", "Registered nodes", value=len(store.nodes))
        yield GaugeMetricFamily("waypost_catalog_services", "Service names with at least one instance",
                                value=sum(1 for keys in store.by_name.values() if keys))
        yield GaugeMetricFamily("waypost_catalog_service_instances", "Registered service instances",
                                value=len(store.services))
        statuses = Counter(str(check.get("Status", "")) for check in store.checks.values())
        checks = GaugeMetricFamily("waypost_catalog_checks", "Health checks by status", labels=["status"])
        for state in CHECK_STATES:
            checks.add_metric([state], statuses.get(state, 0))
        yield checks
        yield GaugeMetricFamily("waypost_catalog_kv_keys", "Keys in the KV store", value=len(store.kv))
        yield GaugeMetricFamily("waypost_catalog_blocking_queries", "Blocking queries waiting for a change",
                                value=store.waiter_count())


def catalog_registry(store: Store) -> CollectorRegistry:
    """A registry holding just the catalog collector for `store`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CatalogCollector(store))
    return registry
