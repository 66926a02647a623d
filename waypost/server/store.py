"""The catalog's authoritative in-memory state: nodes, services, checks, KV, raft-ish indexes, waiters.

Every mutation runs synchronously on the event loop inside one :class:`_Tx`, which allocates the next
index, records which per-resource indexes it moved, the rows persistence must write, and then wakes
exactly the blocking queries that watch those resources. Writes that change nothing allocate no index
(so a registrator re-syncing identical state does not wake watchers), as Consul does.

Records are kept as dicts already shaped like Consul's JSON (``ID``, ``Service``, ``Tags``…) so the
HTTP layer mostly copies them out.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

PASSING = "passing"
WARNING = "warning"
CRITICAL = "critical"
VALID_STATUSES = (PASSING, WARNING, CRITICAL)

TABLES = ("nodes", "services", "checks", "kvs")
SERF_CHECK_ID = "serfHealth"  # written by Consul's leader, never part of the agent's local state
KV_TOMBSTONE_LIMIT = 10_000

NodeKey = str  # lower-cased node name (Consul's node index is case-insensitive)
ServiceKey = tuple[str, str]  # (node key, service ID)
CheckKey = tuple[str, str]  # (node key, check ID)


@dataclass(slots=True)
class Change:
    """What one committed mutation did: its index and the rows persistence must write."""

    index: int
    ops: list[tuple[str, str, Any]] = field(default_factory=list)


def service_key_name(name: str) -> str:
    return name.lower()


class _Tx:
    """One atomic mutation: the next index, touched resources, rows to persist."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.index = store.index + 1
        self.ops: list[tuple[str, str, Any]] = []
        self.keys: set[str] = set()
        self.dirty = False

    def touch_table(self, table: str) -> None:
        self.dirty = True
        self.store.tables[table] = self.index
        self.keys.add("t:" + table)
        self.ops.append(("meta", "table:" + table, self.index))

    def touch_service_name(self, name: str) -> None:
        """Move the per-service-name index (what health/service and catalog/service block on)."""
        lname = service_key_name(name)
        self.keys.add("s:" + lname)
        self.store.health_changed(lname)
        if self.store.by_name.get(lname):
            self.store.service_index[lname] = self.index
            self.ops.append(("meta", "service:" + lname, self.index))
        else:
            # The last instance went away: Consul drops the name's index and records an extinction index.
            if self.store.service_index.pop(lname, None) is not None:
                self.ops.append(("meta", "service:" + lname, None))
            self.store.extinction = self.index
            self.ops.append(("meta", "extinction", self.index))

    def touch_node_services(self, node: NodeKey) -> None:
        store = self.store
        for name in {store.services[(node, sid)]["Service"] for sid in store._node_services.get(node, ())}:
            self.touch_service_name(name)

    def put(self, kind: str, key: str, row: Any) -> None:
        self.dirty = True
        self.ops.append((kind, key, row))

    def finish(self) -> Change | None:
        if not self.dirty:
            return None
        store = self.store
        store.index = self.index
        self.ops.append(("meta", "index", self.index))
        store._notify(self.keys)
        change = Change(self.index, self.ops)
        for listener in store.listeners:
            listener(change)
        return change


def _row_key(node: str, ident: str) -> str:
    return f"{node}\x00{ident}"


def _check_order(chk: dict[str, Any]) -> tuple[str, str]:
    return chk["CheckID"].lower(), chk["CheckID"]


class Store:
    """Nodes, services, checks and KV entries with Consul's indexing and blocking-query wake-ups."""

    def __init__(self, datacenter: str, node_name: str, node_address: str, node_id: str) -> None:
        self.datacenter = datacenter
        self.node_name = node_name
        self.node_key: NodeKey = node_name.lower()
        self.node_address = node_address
        self.node_id = node_id
        self.index = 0
        self.nodes: dict[NodeKey, dict[str, Any]] = {}
        self.services: dict[ServiceKey, dict[str, Any]] = {}
        self.by_name: dict[str, set[ServiceKey]] = {}
        self.checks: dict[CheckKey, dict[str, Any]] = {}
        self.check_defs: dict[CheckKey, dict[str, Any]] = {}
        # secondary indexes so per-service reads and writes never scan the whole catalog
        self._node_services: dict[NodeKey, set[str]] = {}
        self._node_checks: dict[NodeKey, set[str]] = {}  # every check ID on the node
        self._svc_checks: dict[ServiceKey, set[str]] = {}  # check IDs attached to one service
        self.local_check_changes: set[str] = set()  # local check IDs the check runner must look at
        # persisted TTL clocks of local checks ({"Deadline": wall-clock seconds, "Output": …}), as loaded
        self.ttl_state: dict[str, dict[str, Any]] = {}
        self.kv: dict[str, dict[str, Any]] = {}
        self._kv_sorted: list[str] | None = None
        self.kv_tombstones: dict[str, int] = {}
        self.tables: dict[str, int] = dict.fromkeys(TABLES, 0)
        self.service_index: dict[str, int] = {}
        self.extinction = 0
        # per service name, a token that changes with anything its health/service answer shows,
        # including what moves no index (output-only updates, a check leaving the service)
        self.health_gen: dict[str, int] = {}
        self._health_counter = 0
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self.listeners: list[Callable[[Change], None]] = []

    # ---- blocking-query support ---------------------------------------------------------------

    def _notify(self, keys: Iterable[str]) -> None:
        for key in keys:
            for fut in self._waiters.pop(key, ()):
                if not fut.done():
                    fut.set_result(None)

    async def wait_for_change(self, keys: Iterable[str], timeout: float) -> None:
        """Sleep until a mutation touches one of ``keys`` or ``timeout`` seconds pass."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        keys = tuple(keys)
        for key in keys:
            self._waiters.setdefault(key, set()).add(fut)
        timer = loop.call_later(max(timeout, 0.0), lambda: fut.done() or fut.set_result(None))
        try:
            await fut
        finally:
            timer.cancel()
            for key in keys:
                waiters = self._waiters.get(key)
                if waiters is not None:
                    waiters.discard(fut)
                    if not waiters:
                        del self._waiters[key]

    def health_changed(self, lname: str) -> None:
        """Mark the health/service answer of service name ``lname`` (lower-cased) as changed."""
        if self.by_name.get(lname):
            self._health_counter += 1
            self.health_gen[lname] = self._health_counter
        else:
            # an absent name always answers [], so token 0 stays valid for it
            self.health_gen.pop(lname, None)

    def health_generation(self, name: str) -> int:
        """The token :meth:`health_changed` moves for ``name``; 0 while no instance exists."""
        return self.health_gen.get(service_key_name(name), 0)

    def _health_changed_for_check(self, node: NodeKey, chk: dict[str, Any]) -> None:
        """A check's row changed without moving an index: mark every answer that shows it."""
        if chk.get("ServiceID"):
            svc = self.services.get((node, chk["ServiceID"]))
            if svc is not None:
                self.health_changed(service_key_name(svc["Service"]))
            return
        for sid in self._node_services.get(node, ()):
            self.health_changed(service_key_name(self.services[(node, sid)]["Service"]))

    def waiter_count(self) -> int:
        return sum(len(v) for v in self._waiters.values())

    def table_index(self, *tables: str) -> int:
        return max(self.tables[t] for t in tables)

    def service_name_index(self, name: str, with_checks: bool) -> int:
        """Consul's maxIndexForService: the name's own index, else the extinction index."""
        lname = service_key_name(name)
        idx = self.service_index.get(lname)
        if idx is not None:
            return idx
        if self.extinction:
            return self.extinction
        return self.table_index("nodes", "services", "checks") if with_checks else self.table_index(
            "nodes", "services")

    # ---- lookups ------------------------------------------------------------------------------

    def node(self, name: str) -> dict[str, Any] | None:
        return self.nodes.get(name.lower())

    def node_services(self, node: NodeKey) -> dict[str, dict[str, Any]]:
        return {sid: self.services[(node, sid)] for sid in self._node_services.get(node, ())}

    def all_node_checks(self, node: NodeKey) -> dict[str, dict[str, Any]]:
        return {cid: self.checks[(node, cid)] for cid in self._node_checks.get(node, ())}

    def local_services(self) -> dict[str, dict[str, Any]]:
        return self.node_services(self.node_key)

    def local_checks(self) -> dict[str, dict[str, Any]]:
        """The agent's own checks: its node's checks except serfHealth, which Consul's leader owns."""
        checks = self.all_node_checks(self.node_key)
        checks.pop(SERF_CHECK_ID, None)
        return checks

    def is_local_check(self, check_id: str) -> bool:
        """Whether the agent endpoints know ``check_id`` (see :meth:`local_checks`)."""
        return check_id != SERF_CHECK_ID and (self.node_key, check_id) in self.checks

    def instances(self, name: str) -> list[tuple[ServiceKey, dict[str, Any]]]:
        keys = self.by_name.get(service_key_name(name), ())
        return sorted(((k, self.services[k]) for k in keys), key=lambda kv: (kv[0][0], kv[0][1]))

    def node_checks(self, node: NodeKey) -> list[dict[str, Any]]:
        """Checks of the node itself (no ServiceID): they count for every service on it."""
        return [c for c in self.all_node_checks(node).values() if not c["ServiceID"]]

    def service_checks(self, node: NodeKey, service_id: str) -> list[dict[str, Any]]:
        return [self.checks[(node, cid)] for cid in self._svc_checks.get((node, service_id), ())]

    def health_entry_checks(self, node: NodeKey, service_id: str) -> list[dict[str, Any]]:
        """The checks of one health entry in Consul's order: the node's checks, then the service's,
        each by case-insensitive check ID (the order of Consul's check index)."""
        return sorted(self.node_checks(node), key=_check_order) + sorted(
            self.service_checks(node, service_id), key=_check_order)

    def _index_check(self, ckey: CheckKey, chk: dict[str, Any] | None, old: dict[str, Any] | None) -> None:
        node, cid = ckey
        if old is not None and old.get("ServiceID"):
            ids = self._svc_checks.get((node, old["ServiceID"]))
            if ids is not None:
                ids.discard(cid)
                if not ids:
                    del self._svc_checks[(node, old["ServiceID"])]
        if chk is None:
            ids = self._node_checks.get(node)
            if ids is not None:
                ids.discard(cid)
                if not ids:
                    del self._node_checks[node]
            return
        self._node_checks.setdefault(node, set()).add(cid)
        if chk.get("ServiceID"):
            self._svc_checks.setdefault((node, chk["ServiceID"]), set()).add(cid)

    def _index_service(self, skey: ServiceKey, present: bool) -> None:
        node, sid = skey
        if present:
            self._node_services.setdefault(node, set()).add(sid)
            return
        ids = self._node_services.get(node)
        if ids is not None:
            ids.discard(sid)
            if not ids:
                del self._node_services[node]

    # ---- nodes --------------------------------------------------------------------------------

    def ensure_node(self, name: str, address: str, node_id: str = "", tagged: dict[str, str] | None = None,
                    meta: dict[str, str] | None = None, tx: _Tx | None = None) -> Change | None:
        own = tx is None
        tx = tx or _Tx(self)
        key = name.lower()
        old = self.nodes.get(key)
        rec = {
            "ID": node_id or (old["ID"] if old else ""),
            "Node": name,
            "Address": address,
            "Datacenter": self.datacenter,
            "TaggedAddresses": tagged if tagged is not None else (
                {"lan": address, "lan_ipv4": address, "wan": address, "wan_ipv4": address}),
            "Meta": meta if meta is not None else (old["Meta"] if old else {"consul-network-segment": ""}),
        }
        if old is not None and all(old[k] == rec[k] for k in rec):
            return tx.finish() if own else None
        rec["CreateIndex"] = old["CreateIndex"] if old else tx.index
        rec["ModifyIndex"] = tx.index
        self.nodes[key] = rec
        tx.put("node", key, rec)
        tx.touch_table("nodes")
        tx.touch_node_services(key)
        return tx.finish() if own else None

    def deregister_node(self, name: str) -> Change | None:
        key = name.lower()
        if key not in self.nodes:
            return None
        tx = _Tx(self)
        for cid in list(self._node_checks.get(key, ())):
            self._remove_check(tx, (key, cid))
        for sid in list(self._node_services.get(key, ())):
            self._remove_service(tx, (key, sid))
        del self.nodes[key]
        tx.put("node", key, None)
        tx.touch_table("nodes")
        return tx.finish()

    # ---- services -----------------------------------------------------------------------------

    def _put_service(self, tx: _Tx, node: NodeKey, svc: dict[str, Any]) -> bool:
        """Insert or replace one service record; False when identical to what is stored."""
        skey = (node, svc["ID"])
        old = self.services.get(skey)
        if old is not None and all(old.get(k) == v for k, v in svc.items()):
            return False
        rec = dict(svc)
        rec["Node"] = self.nodes[node]["Node"]
        rec["CreateIndex"] = old["CreateIndex"] if old else tx.index
        rec["ModifyIndex"] = tx.index
        if old is not None and service_key_name(old["Service"]) != service_key_name(rec["Service"]):
            self._unindex_name(skey, old["Service"])
            tx.touch_service_name(old["Service"])
        self.services[skey] = rec
        self._index_service(skey, True)
        self.by_name.setdefault(service_key_name(rec["Service"]), set()).add(skey)
        tx.put("service", _row_key(node, rec["ID"]), rec)
        tx.touch_table("services")
        tx.touch_service_name(rec["Service"])
        if old is not None and (old["Tags"] != rec["Tags"] or old["Service"] != rec["Service"]):
            # checks carry ServiceName/ServiceTags copies; keep them in step
            for cid in self._svc_checks.get(skey, ()):
                ckey = (node, cid)
                chk = self.checks[ckey]
                chk.update(ServiceName=rec["Service"], ServiceTags=list(rec["Tags"]), ModifyIndex=tx.index)
                tx.put("check", _row_key(*ckey), {"check": chk, "def": self.check_defs.get(ckey)})
                tx.touch_table("checks")
        return True

    def _unindex_name(self, skey: ServiceKey, name: str) -> None:
        keys = self.by_name.get(service_key_name(name))
        if keys is not None:
            keys.discard(skey)
            if not keys:
                del self.by_name[service_key_name(name)]

    def _remove_service(self, tx: _Tx, skey: ServiceKey) -> None:
        svc = self.services.pop(skey)
        self._index_service(skey, False)
        self._unindex_name(skey, svc["Service"])
        tx.put("service", _row_key(*skey), None)
        tx.touch_table("services")
        tx.touch_service_name(svc["Service"])

    def register_service(self, node: str, svc: dict[str, Any],
                         checks: list[tuple[dict[str, Any], dict[str, Any] | None]],
                         replace_existing_checks: bool = False) -> Change | None:
        """Agent-style registration of one service with its checks on ``node`` (must exist)."""
        nkey = node.lower()
        tx = _Tx(self)
        self._put_service(tx, nkey, svc)
        new_ids = {chk["CheckID"] for chk, _ in checks}
        if replace_existing_checks:
            for cid in list(self._svc_checks.get((nkey, svc["ID"]), ())):
                if cid not in new_ids and not cid.startswith("_service_maintenance:"):
                    self._remove_check(tx, (nkey, cid))
        for chk, definition in checks:
            self._put_check(tx, nkey, chk, definition, keep_status=True)
        return tx.finish()

    def deregister_service(self, node: str, service_id: str) -> Change | None:
        nkey = node.lower()
        skey = (nkey, service_id)
        if skey not in self.services:
            return None
        tx = _Tx(self)
        for cid in list(self._svc_checks.get(skey, ())):
            self._remove_check(tx, (nkey, cid))
        self._remove_service(tx, skey)
        return tx.finish()

    # ---- checks -------------------------------------------------------------------------------

    def _put_check(self, tx: _Tx, node: NodeKey, chk: dict[str, Any], definition: dict[str, Any] | None,
                   keep_status: bool = False) -> bool:
        ckey = (node, chk["CheckID"])
        old = self.checks.get(ckey)
        rec = dict(chk)
        rec["Node"] = self.nodes[node]["Node"]
        if rec.get("ServiceID"):
            svc = self.services.get((node, rec["ServiceID"]))
            if svc is not None:
                rec["ServiceName"] = svc["Service"]
                rec["ServiceTags"] = list(svc["Tags"])
        if old is not None and keep_status and not chk.get("_explicit_status"):
            # re-registration keeps the live status, so a resync does not flap health
            rec["Status"] = old["Status"]
            rec["Output"] = old["Output"]
        rec.pop("_explicit_status", None)
        if old is not None and self.check_defs.get(ckey) == definition and all(
                old.get(k) == v for k, v in rec.items()):
            return False
        rec["CreateIndex"] = old["CreateIndex"] if old else tx.index
        rec["ModifyIndex"] = tx.index
        if old is not None and old.get("ServiceID") != rec.get("ServiceID"):
            # Consul moves only the new owner's index, but the old owner's answer changes too
            self._health_changed_for_check(node, old)
        self.checks[ckey] = rec
        self._index_check(ckey, rec, old)
        if node == self.node_key:
            self.local_check_changes.add(ckey[1])
            self._drop_ttl_state(tx, ckey)
        if definition is None:
            self.check_defs.pop(ckey, None)
        else:
            self.check_defs[ckey] = definition
        tx.put("check", _row_key(*ckey), {"check": rec, "def": definition})
        tx.touch_table("checks")
        self._touch_for_check(tx, node, rec)
        return True

    def _touch_for_check(self, tx: _Tx, node: NodeKey, chk: dict[str, Any]) -> None:
        if chk.get("ServiceID"):
            svc = self.services.get((node, chk["ServiceID"]))
            if svc is not None:
                tx.touch_service_name(svc["Service"])
        else:
            tx.touch_node_services(node)

    def _remove_check(self, tx: _Tx, ckey: CheckKey) -> None:
        chk = self.checks.pop(ckey)
        self._index_check(ckey, None, chk)
        if ckey[0] == self.node_key:
            self.local_check_changes.add(ckey[1])
            self._drop_ttl_state(tx, ckey)
        self.check_defs.pop(ckey, None)
        tx.put("check", _row_key(*ckey), None)
        tx.touch_table("checks")
        self._touch_for_check(tx, ckey[0], chk)

    def _drop_ttl_state(self, tx: _Tx, ckey: CheckKey) -> None:
        """A (re)registered or removed check restarts its TTL clock, so its saved deadline goes."""
        self.ttl_state.pop(ckey[1], None)
        tx.ops.append(("ttl", _row_key(*ckey), None))

    def register_check(self, node: str, chk: dict[str, Any], definition: dict[str, Any] | None) -> Change | None:
        tx = _Tx(self)
        self._put_check(tx, node.lower(), chk, definition)
        return tx.finish()

    def deregister_check(self, node: str, check_id: str) -> Change | None:
        ckey = (node.lower(), check_id)
        if ckey not in self.checks:
            return None
        tx = _Tx(self)
        self._remove_check(tx, ckey)
        return tx.finish()

    def set_check_status(self, node: str, check_id: str, status: str, output: str,
                         ttl_deadline: float | None = None) -> Change | None:
        """A check's new result. Output-only changes are kept without moving any index, like
        Consul's deferred output sync, so chatty HTTP bodies do not wake every watcher.

        ``ttl_deadline`` (wall-clock seconds) is a TTL check's new expiry: it is persisted with the
        output even when nothing else changes (then the Change moves no index), as Consul's
        persistCheckState, so a restart knows whether the TTL ran out meanwhile."""
        ckey = (node.lower(), check_id)
        chk = self.checks.get(ckey)
        if chk is None:
            return None
        ttl_op = None if ttl_deadline is None else (
            "ttl", _row_key(*ckey), {"Deadline": ttl_deadline, "Output": output})
        if chk["Status"] == status:
            if chk["Output"] != output:
                chk["Output"] = output
                self._health_changed_for_check(ckey[0], chk)
            return None if ttl_op is None else Change(self.index, [ttl_op])
        tx = _Tx(self)
        chk["Status"] = status
        chk["Output"] = output
        chk["ModifyIndex"] = tx.index
        tx.put("check", _row_key(*ckey), {"check": chk, "def": self.check_defs.get(ckey)})
        if ttl_op is not None:
            tx.ops.append(ttl_op)
        tx.touch_table("checks")
        self._touch_for_check(tx, ckey[0], chk)
        return tx.finish()

    # ---- catalog/register ---------------------------------------------------------------------

    def catalog_register(self, node: str, address: str, node_id: str, tagged: dict[str, str] | None,
                         meta: dict[str, str] | None, skip_node_update: bool, svc: dict[str, Any] | None,
                         checks: list[dict[str, Any]]) -> Change | None:
        tx = _Tx(self)
        nkey = node.lower()
        if nkey not in self.nodes or not skip_node_update:
            self.ensure_node(node, address, node_id, tagged, meta, tx=tx)
        if svc is not None:
            self._put_service(tx, nkey, svc)
        for chk in checks:
            self._put_check(tx, nkey, chk, self.check_defs.get((nkey, chk["CheckID"])), keep_status=False)
        return tx.finish()

    # ---- KV -----------------------------------------------------------------------------------

    def kv_sorted_keys(self) -> list[str]:
        if self._kv_sorted is None:
            self._kv_sorted = sorted(self.kv)
        return self._kv_sorted

    def kv_prefix(self, prefix: str) -> list[dict[str, Any]]:
        keys = self.kv_sorted_keys()
        start = bisect.bisect_left(keys, prefix)
        out = []
        for key in keys[start:]:
            if not key.startswith(prefix):
                break
            out.append(self.kv[key])
        return out

    def kv_prefix_index(self, prefix: str) -> int:
        idx = max((e["ModifyIndex"] for e in self.kv_prefix(prefix)), default=0)
        for key, tomb in self.kv_tombstones.items():
            if tomb > idx and key.startswith(prefix):
                idx = tomb
        return idx or self.tables["kvs"]

    def kv_put(self, key: str, value: bytes, flags: int, cas: int | None) -> tuple[bool, Change | None]:
        """Set ``key`` (check-and-set when ``cas`` is given). Like Consul's kvsSetTxn, a write that
        changes neither value nor flags succeeds without writing: no index, nobody woken."""
        old = self.kv.get(key)
        if cas is not None:
            if cas == 0 and old is not None:
                return False, None
            if cas != 0 and (old is None or old["ModifyIndex"] != cas):
                return False, None
        encoded = base64.b64encode(value).decode() if value else None
        if old is not None and old["Flags"] == flags and old["Value"] == encoded:
            return True, None
        tx = _Tx(self)
        rec = {
            "LockIndex": 0,
            "Key": key,
            "Flags": flags,
            "Value": encoded,
            "CreateIndex": old["CreateIndex"] if old else tx.index,
            "ModifyIndex": tx.index,
        }
        if old is None:
            self._kv_sorted = None
        self.kv[key] = rec
        self.kv_tombstones.pop(key, None)
        tx.put("kv", key, rec)
        tx.touch_table("kvs")
        return True, tx.finish()

    def kv_delete(self, key: str, recurse: bool, cas: int | None) -> tuple[bool, Change | None]:
        if cas is not None:
            old = self.kv.get(key)
            if old is None:
                return True, None  # Consul's kvsDeleteCASTxn: a missing key counts as deleted, any index
            if old["ModifyIndex"] != cas:
                return False, None
        victims = [e["Key"] for e in self.kv_prefix(key)] if recurse else ([key] if key in self.kv else [])
        if not victims:
            return True, None
        tx = _Tx(self)
        for victim in victims:
            del self.kv[victim]
            self.kv_tombstones[victim] = tx.index
            tx.put("kv", victim, None)
        if len(self.kv_tombstones) > KV_TOMBSTONE_LIMIT:
            for old_key in sorted(self.kv_tombstones, key=self.kv_tombstones.__getitem__)[:KV_TOMBSTONE_LIMIT // 2]:
                del self.kv_tombstones[old_key]
        self._kv_sorted = None
        tx.touch_table("kvs")
        return True, tx.finish()

    # ---- restore ------------------------------------------------------------------------------

    def load(self, rows: dict[str, list[tuple[str, Any]]]) -> None:
        """Restore persisted rows (see :mod:`waypost.server.persist`) before serving."""
        for key, value in rows.get("meta", []):
            if key == "index":
                self.index = max(self.index, int(value))
            elif key == "extinction":
                self.extinction = int(value)
            elif key.startswith("table:") and key[6:] in self.tables:
                self.tables[key[6:]] = int(value)
            elif key.startswith("service:"):
                self.service_index[key[8:]] = int(value)
        for key, rec in rows.get("node", []):
            self.nodes[key] = rec
        for key, rec in rows.get("service", []):
            node, _, sid = key.partition("\x00")
            if node in self.nodes:
                self.services[(node, sid)] = rec
                self._index_service((node, sid), True)
                self.by_name.setdefault(service_key_name(rec["Service"]), set()).add((node, sid))
        for key, row in rows.get("check", []):
            node, _, cid = key.partition("\x00")
            if node in self.nodes:
                self.checks[(node, cid)] = row["check"]
                self._index_check((node, cid), row["check"], None)
                if row.get("def") is not None:
                    self.check_defs[(node, cid)] = row["def"]
        for key, row in rows.get("ttl", []):
            node, _, cid = key.partition("\x00")
            if node == self.node_key and (node, cid) in self.checks:
                self.ttl_state[cid] = row
        for key, rec in rows.get("kv", []):
            self.kv[key] = rec
        self._kv_sorted = None
        # indexes must never be behind what the rows themselves carry
        for recs, table in ((self.nodes.values(), "nodes"), (self.services.values(), "services"),
                            (self.checks.values(), "checks"), (self.kv.values(), "kvs")):
            for rec in recs:
                self.tables[table] = max(self.tables[table], rec["ModifyIndex"])
                self.index = max(self.index, rec["ModifyIndex"])
        for lname, keys in self.by_name.items():
            idx = max(self.services[k]["ModifyIndex"] for k in keys)
            self.service_index[lname] = max(self.service_index.get(lname, 0), idx)
        for lname in [n for n in self.service_index if n not in self.by_name]:
            del self.service_index[lname]
