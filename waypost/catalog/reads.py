"""The catalog reads both clients offer, built on two fetches each client implements.

:class:`~waypost.catalog.CatalogClient` (py-consul) and :class:`~waypost.catalog.reader.CatalogReader`
(h11) differ only in how they GET ``/v1/health/service/<name>`` and ``/v1/catalog/services``;
instances, service lists and their watches are defined once, here.
"""

from __future__ import annotations

from typing import Any

from waypost.catalog.model import Instance, instances_from_health
from waypost.catalog.watch import Watch


def _service_tags(raw: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    return {name: tuple(tags or ()) for name, tags in raw.items()}


class CatalogReads:
    """``instances``, ``services``, ``watch`` and ``watch_services`` over two abstract fetches."""

    async def _health_service(self, service: str, tag: str | None, passing_only: bool, index: int = 0,
                              wait: str | None = None) -> tuple[int, list[dict[str, Any]]]:
        """``/v1/health/service/<service>``: (X-Consul-Index, entries); blocking when `index` is set."""
        raise NotImplementedError

    async def _catalog_services(self, index: int = 0, wait: str | None = None) -> tuple[int, dict[str, Any]]:
        """``/v1/catalog/services``: (X-Consul-Index, {name: tags}); blocking when `index` is set."""
        raise NotImplementedError

    async def instances(self, service: str, tag: str | None = None, passing_only: bool = True) -> list[Instance]:
        """The service's instances now (one non-blocking read)."""
        _, data = await self._health_service(service, tag, passing_only)
        return instances_from_health(data)

    async def services(self) -> dict[str, list[str]]:
        """Every service name in the catalog with the union of its tags."""
        _, data = await self._catalog_services()
        return data

    def watch(
        self, service: str, tag: str | None = None, passing_only: bool = True, wait: str = "30s"
    ) -> Watch[list[Instance]]:
        """An async iterator of the service's instance set, waking on every change."""

        async def fetch(index: int, wait_: str) -> tuple[int, Any]:
            return await self._health_service(service, tag, passing_only, index, wait_)

        label = service + (f"#{tag}" if tag else "")
        return Watch(label, fetch, instances_from_health, wait=wait)

    def watch_services(self, wait: str = "30s") -> Watch[dict[str, tuple[str, ...]]]:
        """An async iterator of all service names (with tags), waking on every change."""
        return Watch("services", self._catalog_services, _service_tags, wait=wait)
