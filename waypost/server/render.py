"""Consul's JSON shapes for the catalog's records (field names and order as Consul writes them)."""

from __future__ import annotations

from typing import Any

PROXY_EMPTY = {"Mode": "", "MeshGateway": {}, "Expose": {}}


def node_json(node: dict[str, Any]) -> dict[str, Any]:
    """A ``/v1/catalog/nodes`` element (and the ``Node`` of a health entry)."""
    return {
        "ID": node["ID"],
        "Node": node["Node"],
        "Address": node["Address"],
        "Datacenter": node["Datacenter"],
        "TaggedAddresses": node["TaggedAddresses"],
        "Meta": node["Meta"],
        "CreateIndex": node["CreateIndex"],
        "ModifyIndex": node["ModifyIndex"],
    }


def agent_service_json(svc: dict[str, Any], datacenter: str) -> dict[str, Any]:
    """An ``api.AgentService`` (``/v1/agent/services`` values, ``/v1/agent/service/:id``)."""
    out: dict[str, Any] = {
        "ID": svc["ID"],
        "Service": svc["Service"],
        "Tags": svc["Tags"],
        "Meta": svc["Meta"],
        "Port": svc["Port"],
        "Address": svc["Address"],
    }
    if svc.get("TaggedAddresses"):
        out["TaggedAddresses"] = svc["TaggedAddresses"]
    out["Weights"] = svc["Weights"]
    out["EnableTagOverride"] = svc["EnableTagOverride"]
    out["CreateIndex"] = svc["CreateIndex"]
    out["ModifyIndex"] = svc["ModifyIndex"]
    out["Datacenter"] = datacenter
    return out


def node_service_json(svc: dict[str, Any]) -> dict[str, Any]:
    """A ``structs.NodeService`` (the ``Service`` of a health entry, catalog/node's services)."""
    out: dict[str, Any] = {
        "ID": svc["ID"],
        "Service": svc["Service"],
        "Tags": svc["Tags"],
        "Address": svc["Address"],
    }
    if svc.get("TaggedAddresses"):
        out["TaggedAddresses"] = svc["TaggedAddresses"]
    out.update(
        Meta=svc["Meta"],
        Port=svc["Port"],
        Weights=svc["Weights"],
        EnableTagOverride=svc["EnableTagOverride"],
        Proxy=PROXY_EMPTY,
        Connect={},
        PeerName="",
        CreateIndex=svc["CreateIndex"],
        ModifyIndex=svc["ModifyIndex"],
    )
    return out


def catalog_service_json(node: dict[str, Any], svc: dict[str, Any]) -> dict[str, Any]:
    """A ``/v1/catalog/service/:name`` element (``structs.ServiceNode``)."""
    out: dict[str, Any] = {
        "ID": node["ID"],
        "Node": node["Node"],
        "Address": node["Address"],
        "Datacenter": node["Datacenter"],
        "TaggedAddresses": node["TaggedAddresses"],
        "NodeMeta": node["Meta"],
        "ServiceKind": "",
        "ServiceID": svc["ID"],
        "ServiceName": svc["Service"],
        "ServiceTags": svc["Tags"],
        "ServiceAddress": svc["Address"],
    }
    if svc.get("TaggedAddresses"):
        out["ServiceTaggedAddresses"] = svc["TaggedAddresses"]
    out.update(
        ServiceWeights=svc["Weights"],
        ServiceMeta=svc["Meta"],
        ServicePort=svc["Port"],
        ServiceSocketPath="",
        ServiceEnableTagOverride=svc["EnableTagOverride"],
        ServiceProxy=PROXY_EMPTY,
        ServiceConnect={},
        ServicePeerName="",
        CreateIndex=svc["CreateIndex"],
        ModifyIndex=svc["ModifyIndex"],
    )
    return out


def check_json(chk: dict[str, Any]) -> dict[str, Any]:
    """A ``structs.HealthCheck`` (stored records already have exactly these fields)."""
    return chk


def kv_json(entry: dict[str, Any]) -> dict[str, Any]:
    return entry
