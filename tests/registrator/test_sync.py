"""Reconciler unit tests with an in-memory catalog and engine: what gets written, and when."""

from __future__ import annotations

import asyncio
import logging

import pytest

from waypost.catalog.model import CRITICAL, PASSING, ServiceDef
from waypost.registrator.metadata import MARKER_CONTAINER, MARKER_NODE, docker_check_id
from waypost.registrator.options import RegistratorOptions
from waypost.registrator.sync import Reconciler

from .fakes import FakeCatalog, FakeDocker, inspect_doc

HOST = "192.0.2.10"
P80 = {"80/tcp": [("0.0.0.0", "32768")]}


def cid(n: int) -> str:
    return f"{n:02d}" * 32


@pytest.fixture
def catalog() -> FakeCatalog:
    return FakeCatalog()


@pytest.fixture
def engine() -> FakeDocker:
    return FakeDocker()


def make(catalog: FakeCatalog, engine: FakeDocker, **kw) -> Reconciler:
    kw.setdefault("node", "n1")
    return Reconciler(catalog, engine, RegistratorOptions(**kw), default_ip=HOST, min_backoff=0.01, max_backoff=0.05)


def add(engine: FakeDocker, n: int, **kw) -> str:
    kw.setdefault("published", P80)
    return engine.add(inspect_doc(name=f"c{n}", cid=cid(n), **kw))


async def test_full_sync_registers_running_and_second_sync_writes_nothing(catalog, engine) -> None:
    add(engine, 1)
    add(engine, 2, image="redis:7")
    stopped = add(engine, 3)
    engine.set_running(stopped, False)
    rec = make(catalog, engine)
    await rec.full_sync()
    assert sorted(catalog.services) == ["n1:c1:80", "n1:c2:80"]
    assert catalog.services["n1:c2:80"].name == "redis"
    catalog.writes.clear()
    await rec.full_sync()
    assert catalog.writes == []


async def test_restarted_registrator_creates_no_duplicates_and_removes_missed_die(catalog, engine) -> None:
    a, b = add(engine, 1), add(engine, 2)
    await make(catalog, engine).full_sync()
    engine.set_running(b, False)  # died while no registrator was running
    add(engine, 3)  # started while no registrator was running
    catalog.writes.clear()
    await make(catalog, engine).full_sync()  # a fresh process: no memory, only the catalog's Meta
    assert sorted(catalog.writes) == [("deregister", "n1:c2:80"), ("register", "n1:c3:80")]
    assert catalog.services["n1:c1:80"].meta_dict[MARKER_CONTAINER] == a


async def test_other_nodes_and_foreign_services_are_never_touched(catalog, engine) -> None:
    other = ServiceDef("n2:c9:80", "x", "10.0.0.2", 80, meta=((MARKER_CONTAINER, cid(9)), (MARKER_NODE, "n2")))
    foreign = ServiceDef("hand-made", "y", "10.0.0.3", 81)
    legacy_other_host = ServiceDef("n2:old:80", "z", "10.0.0.4", 82)
    for svc in (other, foreign, legacy_other_host):
        await catalog.register(svc)
    catalog.writes.clear()
    await make(catalog, engine, cleanup=True).full_sync()
    assert catalog.writes == []


async def test_cleanup_removes_this_nodes_legacy_gliderlabs_ids_only(catalog, engine) -> None:
    add(engine, 1)
    for sid in ("n1:gone:80", "n1:gone:53:udp", "n1:c1:80"):
        await catalog.register(ServiceDef(sid, "legacy", "10.0.0.1", 80))  # no Meta marker
    await make(catalog, engine).full_sync()
    assert "n1:gone:80" in catalog.services  # without --cleanup: left alone
    await make(catalog, engine, cleanup=True).full_sync()
    assert "n1:gone:80" not in catalog.services and "n1:gone:53:udp" not in catalog.services
    assert catalog.services["n1:c1:80"].meta_dict[MARKER_NODE] == "n1"  # re-registered as ours


async def test_die_deregisters_and_on_success_keeps_failures(catalog, engine) -> None:
    c1, c2, c3 = add(engine, 1), add(engine, 2), add(engine, 3)
    rec = make(catalog, engine, deregister="on-success")
    await rec.full_sync()
    engine.set_running(c1, False, exit_code=0)
    engine.set_running(c2, False, exit_code=2)
    engine.set_running(c3, False, exit_code=137)  # killed by a signal: removed like gliderlabs
    for c in (c1, c2, c3):
        await rec.kick(c)
    assert sorted(catalog.services) == ["n1:c2:80"]
    await rec.full_sync()
    assert sorted(catalog.services) == ["n1:c2:80"]  # kept across syncs without --cleanup
    del engine.containers[c2]  # `docker rm`
    await rec.kick(c2)
    assert catalog.services == {}


async def test_on_success_kept_registration_removed_by_cleanup_sync(catalog, engine) -> None:
    c1 = add(engine, 1)
    rec = make(catalog, engine, deregister="on-success", cleanup=True)
    await rec.full_sync()
    engine.set_running(c1, False, exit_code=1)
    await rec.kick(c1)
    assert "n1:c1:80" in catalog.services  # the die event keeps it
    await rec.full_sync()
    assert catalog.services == {}


async def test_always_mode_deregisters_failures(catalog, engine) -> None:
    c1 = add(engine, 1)
    rec = make(catalog, engine)
    await rec.full_sync()
    engine.set_running(c1, False, exit_code=1)
    await rec.kick(c1)
    assert catalog.services == {}


async def test_quick_die_start_ends_registered(catalog, engine) -> None:
    c1 = add(engine, 1)
    rec = make(catalog, engine)
    await rec.full_sync()
    engine.delay = 0.05
    engine.set_running(c1, False)
    first = rec.kick(c1)  # "die": its inspect is in flight…
    await asyncio.sleep(0.01)
    engine.set_running(c1, True)
    second = rec.kick(c1)  # …when "start" arrives: ordered after it, not in parallel
    assert first is second
    await second
    assert "n1:c1:80" in catalog.services


async def test_events_of_one_container_coalesce(catalog, engine) -> None:
    c1 = add(engine, 1)
    rec = make(catalog, engine)
    engine.delay = 0.02
    tasks = [rec.kick(c1) for _ in range(50)]
    await tasks[-1]
    assert engine.inspects <= 2
    assert catalog.writes == [("register", "n1:c1:80")]


async def test_catalog_errors_are_retried(catalog, engine, caplog) -> None:
    c1 = add(engine, 1)
    rec = make(catalog, engine)
    catalog.fail_next = 3
    with caplog.at_level(logging.WARNING):
        await asyncio.wait_for(rec.kick(c1), 5)
    assert "n1:c1:80" in catalog.services
    assert rec.errors == 3
    assert sum("retrying" in r.message for r in caplog.records) == 1  # one warning per failure streak


async def test_catalog_down_during_sync_then_back(catalog, engine) -> None:
    add(engine, 1)
    rec = make(catalog, engine)
    catalog.down = True
    sync = asyncio.create_task(rec.full_sync())
    await asyncio.sleep(0.2)
    assert not sync.done()
    catalog.down = False
    await asyncio.wait_for(sync, 5)
    assert "n1:c1:80" in catalog.services


async def test_catalog_restart_without_state_is_repaired_by_sync(catalog, engine) -> None:
    add(engine, 1, health="healthy")
    add(engine, 2)
    rec = make(catalog, engine)
    await rec.full_sync()
    catalog.wipe()
    await rec.full_sync()
    assert sorted(catalog.services) == ["n1:c1:80", "n1:c2:80"]
    assert catalog.status(docker_check_id("n1:c1:80")) == PASSING


async def test_health_change_is_a_ttl_update_not_a_reregistration(catalog, engine) -> None:
    c1 = add(engine, 1, health="starting")
    rec = make(catalog, engine)
    await rec.full_sync()
    check = docker_check_id("n1:c1:80")
    assert catalog.status(check) == CRITICAL
    catalog.writes.clear()
    engine.containers[c1]["State"]["Health"]["Status"] = "healthy"
    await rec.kick(c1)
    assert catalog.writes == [("update_ttl", f"{check}={PASSING}")]
    engine.containers[c1]["State"]["Health"]["Status"] = "unhealthy"
    await rec.kick(c1)
    assert catalog.status(check) == CRITICAL
    await rec.full_sync()  # a fresh view from the catalog agrees: nothing to write
    assert len(catalog.writes) == 2


async def test_health_status_drift_in_catalog_is_repaired_by_sync(catalog, engine) -> None:
    add(engine, 1, health="healthy")
    rec = make(catalog, engine)
    await rec.full_sync()
    catalog.checks[docker_check_id("n1:c1:80")]["Status"] = CRITICAL  # e.g. TTL expired
    await make(catalog, engine).full_sync()
    assert catalog.status(docker_check_id("n1:c1:80")) == PASSING


async def test_pause_unpause_without_healthcheck(catalog, engine) -> None:
    c1 = add(engine, 1)
    rec = make(catalog, engine)
    await rec.full_sync()
    engine.containers[c1]["State"]["Paused"] = True
    await rec.kick(c1)
    assert catalog.status(docker_check_id("n1:c1:80")) == CRITICAL
    engine.containers[c1]["State"]["Paused"] = False
    await rec.kick(c1)
    assert "n1:c1:80" in catalog.services and catalog.checks == {}


async def test_pause_unpause_with_healthcheck_only_updates_ttl(catalog, engine) -> None:
    c1 = add(engine, 1, health="healthy")
    rec = make(catalog, engine)
    await rec.full_sync()
    catalog.writes.clear()
    engine.containers[c1]["State"]["Paused"] = True
    await rec.kick(c1)
    engine.containers[c1]["State"]["Paused"] = False
    await rec.kick(c1)
    check = docker_check_id("n1:c1:80")
    assert catalog.writes == [("update_ttl", f"{check}={CRITICAL}"), ("update_ttl", f"{check}={PASSING}")]


async def test_rename_moves_the_registration(catalog, engine) -> None:
    c1 = add(engine, 1)
    rec = make(catalog, engine)
    await rec.full_sync()
    engine.containers[c1]["Name"] = "/renamed"
    await rec.kick(c1)
    assert sorted(catalog.services) == ["n1:renamed:80"]


async def test_duplicate_service_id_does_not_flap(catalog, engine, caplog) -> None:
    c1 = add(engine, 1, labels={"SERVICE_ID": "same"})
    add(engine, 2, labels={"SERVICE_ID": "same"})
    rec = make(catalog, engine)
    await rec.full_sync()
    owner = catalog.services["same"].meta_dict[MARKER_CONTAINER]
    catalog.writes.clear()
    for _ in range(3):
        await rec.full_sync()
    assert catalog.writes == []
    assert any("already registered" in r.message for r in caplog.records)
    engine.set_running(owner, False)
    await rec.kick(owner)
    await rec.idle()
    assert catalog.services["same"].meta_dict[MARKER_CONTAINER] != owner
    assert owner in (c1, cid(2))


async def test_bad_metadata_warns_once_and_registers(catalog, engine, caplog) -> None:
    add(engine, 1, labels={"SERVICE_CHECK_HTTP": "/h", "SERVICE_CHECK_INTERVAL": "often"})
    add(engine, 2)
    rec = make(catalog, engine)
    with caplog.at_level(logging.WARNING):
        await rec.full_sync()
        await rec.full_sync()
    warnings = [r.message for r in caplog.records if "SERVICE_CHECK_INTERVAL" in r.message]
    assert len(warnings) == 1 and "c1" in warnings[0]
    assert sorted(catalog.services) == ["n1:c1:80", "n1:c2:80"]
    assert catalog.services["n1:c1:80"].checks[0].interval == "10s"


async def test_docker_down_during_reconcile_is_retried(catalog, engine) -> None:
    c1 = add(engine, 1)
    rec = make(catalog, engine)
    engine.down = True
    task = rec.kick(c1)
    await asyncio.sleep(0.1)
    engine.down = False
    await asyncio.wait_for(task, 5)
    assert "n1:c1:80" in catalog.services


async def test_deregister_all_removes_only_ours(catalog, engine) -> None:
    add(engine, 1)
    await catalog.register(ServiceDef("foreign", "f", "10.0.0.1", 1))
    rec = make(catalog, engine)
    await rec.full_sync()
    await rec.deregister_all()
    assert sorted(catalog.services) == ["foreign"]


async def test_deregister_all_also_removes_our_writes_it_never_saw_answered(catalog, engine) -> None:
    add(engine, 1)
    rec = make(catalog, engine)
    await rec.full_sync()
    # landed in the catalog, but the answer never reached us (cancelled at exit, say)
    await catalog.register(ServiceDef("n1:c2:80", "c2", HOST, 1, meta=((MARKER_NODE, "n1"),)))
    await catalog.register(ServiceDef("n2:c3:80", "c3", HOST, 2, meta=((MARKER_NODE, "n2"),)))
    await rec.deregister_all()
    assert sorted(catalog.services) == ["n2:c3:80"]  # ours are gone, another node's stay


async def test_exit_with_a_registration_in_flight_leaks_nothing(catalog, engine) -> None:
    c1 = add(engine, 1)
    rec = make(catalog, engine)
    catalog.server_delay = 0.3
    rec.kick(c1)
    await asyncio.sleep(0.05)  # the register is on its way
    await rec.close(grace=2.0)  # what Registrator.stop does with --deregister-on-exit
    await rec.deregister_all()
    await asyncio.gather(*catalog.in_flight)
    assert catalog.services == {}
    assert catalog.writes == [("register", "n1:c1:80"), ("deregister", "n1:c1:80")]


async def test_refresh_docker_checks(catalog, engine) -> None:
    add(engine, 1, health="healthy")
    rec = make(catalog, engine)
    await rec.full_sync()
    catalog.writes.clear()
    await rec.refresh_docker_checks(max_age=3600)
    assert catalog.writes == []
    await rec.refresh_docker_checks(max_age=-1)
    assert catalog.writes == [("update_ttl", f"{docker_check_id('n1:c1:80')}={PASSING}")]


async def test_close_cancels_pending_work(catalog, engine) -> None:
    c1 = add(engine, 1)
    rec = make(catalog, engine)
    catalog.down = True
    task = rec.kick(c1)
    await asyncio.sleep(0.05)
    await rec.close()
    assert task.done()


def test_node_must_be_resolved(catalog, engine) -> None:
    with pytest.raises(ValueError):
        Reconciler(catalog, engine, RegistratorOptions())


async def test_rejected_registration_is_one_warning_not_a_retry_loop(catalog, engine, caplog) -> None:
    """A 400 from the catalog (Consul refusing something in a container's metadata) is not retried
    in a loop; other containers register normally; the next sync tries once more."""
    add(engine, 1)
    add(engine, 2)
    catalog.reject.add("n1:c1:80")
    rec = make(catalog, engine)
    with caplog.at_level(logging.WARNING, logger="waypost.registrator.sync"):
        await rec.full_sync()
        await asyncio.sleep(0.3)  # a retry loop (backoff 0.01-0.05 s) would write many times here
    assert "n1:c2:80" in catalog.services and "n1:c1:80" not in catalog.services
    assert catalog.writes.count(("rejected", "n1:c1:80")) == 1
    assert rec.catalog_ok
    assert sum("rejected its registration" in r.getMessage() and cid(1)[:12] in r.getMessage()
               for r in caplog.records) == 1
    catalog.reject.clear()
    await rec.full_sync()
    assert "n1:c1:80" in catalog.services


async def test_a_registration_the_catalog_dropped_is_restored(catalog, engine) -> None:
    """The catalog reaped the service while the container was paused (DeregisterCriticalServiceAfter):
    the next check update finds it gone and the service is registered again."""
    c1 = add(engine, 1, health="healthy")
    rec = make(catalog, engine)
    await rec.full_sync()
    engine.containers[c1]["State"]["Paused"] = True
    await rec.kick(c1)
    await catalog.deregister("n1:c1:80")  # reaped behind the registrator's back
    engine.containers[c1]["State"]["Paused"] = False
    await rec.kick(c1)
    async with asyncio.timeout(3):
        while "n1:c1:80" not in catalog.services:
            await asyncio.sleep(0.01)
    assert catalog.status(docker_check_id("n1:c1:80")) == PASSING


async def test_maintenance_mode_is_not_undone_by_resyncs(catalog, engine) -> None:
    add(engine, 1)
    rec = make(catalog, engine)
    await rec.full_sync()
    catalog.checks["_service_maintenance:n1:c1:80"] = {"CheckID": "_service_maintenance:n1:c1:80",
                                                     "ServiceID": "n1:c1:80", "Status": CRITICAL}
    catalog.writes.clear()
    await rec.full_sync()
    assert catalog.writes == []  # nothing re-registered: the operator's maintenance stays


async def test_an_acl_refusal_does_not_hold_up_full_syncs(catalog, engine, monkeypatch) -> None:
    from consul.exceptions import ACLPermissionDenied

    add(engine, 1)
    forbidden = add(engine, 2, labels={"SERVICE_NAME": "secret"})
    real = catalog.register

    async def register(service: ServiceDef) -> None:
        if service.name == "secret":
            raise ACLPermissionDenied("Permission denied")
        await real(service)

    monkeypatch.setattr(catalog, "register", register)
    rec = make(catalog, engine)
    async with asyncio.timeout(5):
        await rec.full_sync()
        await rec.full_sync()  # a second sync is not stuck behind the refused container
    assert sorted(catalog.services) == ["n1:c1:80"] and forbidden in engine.containers

