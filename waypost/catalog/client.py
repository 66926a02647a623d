"""The one place that speaks HTTP to the catalog (embedded or a Consul agent), via py-consul."""

from __future__ import annotations

import json
import logging
from typing import Any

import consul
import consul.aio
from consul.callback import CB

from waypost.catalog.model import ServiceDef, path_segment
from waypost.catalog.reads import CatalogReads
from waypost.config import CatalogConfig

log = logging.getLogger("waypost.catalog")

CatalogError = consul.ConsulException


class CatalogClient(CatalogReads):
    """Async client for the subset of Consul's HTTP API Waypost uses.

    Writes go to the local agent (``/v1/agent/...``) the way registrator does; reads use health
    endpoints so callers only see instances with their check status.
    """

    def __init__(self, config: CatalogConfig | None = None) -> None:
        self.config = config or CatalogConfig.from_url()
        verify: bool | str = self.config.verify
        if self.config.ca_file and self.config.verify:
            verify = self.config.ca_file
        self.consul = consul.aio.Consul(
            host=self.config.host,
            port=self.config.port,
            scheme=self.config.scheme,
            token=self.config.token,
            verify=verify,
            # every watch holds one connection in a blocking query; aiohttp's default cap of 100
            # would stall the 101st watch for a whole wait (py-consul ignores 0, so a big number)
            connections_limit=100_000,
        )
        self._http = self.consul.http

    @property
    def url(self) -> str:
        return self.config.url

    def _headers(self) -> dict[str, str]:
        return self.consul.prepare_headers()

    async def close(self) -> None:
        await self.consul.close()

    async def __aenter__(self) -> CatalogClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- agent -------------------------------------------------------------------------------

    async def agent_self(self) -> dict[str, Any]:
        """`/v1/agent/self`: the agent's config (node name, datacenter) and member info."""
        return await self.consul.agent.self()

    async def node_name(self) -> str:
        """The catalog node this agent registers services on."""
        info = await self.agent_self()
        return info["Config"]["NodeName"]

    async def register(self, service: ServiceDef, replace_existing_checks: bool = True) -> None:
        """Register (or replace) one service instance with its checks on the local agent."""
        params = [("replace-existing-checks", "true")] if replace_existing_checks else []
        await self._http.put(
            CB.boolean(),
            "/v1/agent/service/register",
            params=params,
            data=json.dumps(service.to_consul()),
            headers=self._headers(),
        )

    async def deregister(self, service_id: str) -> None:
        """Remove one service instance (and its checks) from the local agent."""
        await self._http.put(
            CB.boolean(), f"/v1/agent/service/deregister/{path_segment(service_id)}", headers=self._headers()
        )

    async def update_ttl(self, check_id: str, status: str, output: str = "") -> bool:
        """Set a TTL check to passing, warning or critical (`/v1/agent/check/update/:id`); False when
        the agent has no such check (it was deregistered or reaped behind our back)."""
        return await self._http.put(
            CB.boolean(),
            f"/v1/agent/check/update/{path_segment(check_id)}",
            data=json.dumps({"Status": status, "Output": output}),
            headers=self._headers(),
        )

    async def local_services(self, filter_expr: str | None = None) -> dict[str, ServiceDef]:
        """This agent's registered services by ID (`/v1/agent/services`)."""
        raw = await self.consul.agent.services(filter_expr=filter_expr)
        return {sid: ServiceDef.from_agent_service(svc) for sid, svc in (raw or {}).items()}

    async def local_checks(self) -> dict[str, dict[str, Any]]:
        """This agent's checks by ID (`/v1/agent/checks`)."""
        return await self.consul.agent.checks() or {}

    # ---- reads -------------------------------------------------------------------------------

    async def _health_service(
        self, service: str, tag: str | None, passing_only: bool, index: int = 0, wait: str | None = None
    ) -> tuple[int, list[dict[str, Any]]]:
        idx, data = await self.consul.health.service(
            service, index=index or None, wait=wait, passing=passing_only, tag=tag
        )
        return int(idx), data or []

    async def _catalog_services(self, index: int = 0, wait: str | None = None) -> tuple[int, dict[str, Any]]:
        idx, data = await self.consul.catalog.services(index=index or None, wait=wait)
        return int(idx), data or {}
