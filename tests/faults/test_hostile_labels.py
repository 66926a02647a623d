"""Hostile container metadata: what a container on this host can put in its labels and env vars.

Behaviour documented here (see registrator/metadata.py):

- every bad value gives a warning naming the container and the variable, and a sanitized
  registration; nothing raises, nothing a Consul agent would reject reaches the catalog;
- names and tags must be printable and at most 255 characters, else the name falls back to the
  default (image name) and the tag is dropped; a name Consul's DNS cannot serve (anything but
  letters, digits and '-', or over 63 characters) is registered verbatim with a warning, as Consul
  itself warns; shell/template "injection" strings are plain data and are never executed;
- ``SERVICE_ID`` goes into catalog URL paths, so anything but ``[A-Za-z0-9_.:@~+=-]`` (e.g. path
  traversal) falls back to the default ID;
- warnings quote values (control characters escaped, no log injection), cut them, and are capped
  per container.

First the pure ``describe()``, then the reconciler against the real embedded catalog (fake engine),
then a few containers on the real dockerd next to a good one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import dockerkit as dk
from tests.polling import eventually
from tests.registrator.fakes import FakeDocker, inspect_doc
from waypost.catalog import CatalogClient
from waypost.catalog.model import ServiceDef
from waypost.registrator import Registrator, RegistratorOptions
from waypost.registrator.metadata import MARKER_CONTAINER, MAX_WARNINGS, describe
from waypost.registrator.sync import Reconciler

HOST = "192.0.2.10"
CONTAINER = "web.1"
P80 = {"80/tcp": [("0.0.0.0", "32768")]}
MB = 1024 * 1024

# ---- what a Consul agent (and a sane catalog) accepts ---------------------------------------------

_META_KEY = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.:@~+=-]{1,256}$")
_GO_DURATION = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
GO_MAX_DURATION = (2**63 - 1) / 1e9


def go_duration_ok(text: str) -> bool:
    """Go's time.ParseDuration accepts it (ASCII digits, known units, no overflow)."""
    pos, total = 0, 0.0
    while pos < len(text):
        m = _GO_DURATION.match(text, pos)
        if not m:
            return False
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return pos > 0 and total <= GO_MAX_DURATION


def problems(svc: ServiceDef) -> list[str]:
    """Why a Consul agent would reject this registration, or why it is unsafe to store; [] if fine."""
    out = []
    body = svc.to_consul()
    if not svc.name or len(svc.name) > 255 or not svc.name.isprintable():
        out.append(f"name {svc.name[:40]!r}")
    if not _SAFE_ID.match(svc.id) or set(svc.id) == {"."}:
        out.append(f"id {svc.id[:60]!r} is not URL-path safe")
    if not 0 <= svc.port <= 65535:
        out.append(f"port {svc.port}")
    if svc.address in ("0.0.0.0", "::"):
        out.append("unspecified address")
    if len(svc.tags) > 64 or any(len(t) > 255 or not t.isprintable() for t in svc.tags):
        out.append("tags")
    meta = svc.meta_dict
    if len(meta) > 64:
        out.append("more than 64 meta pairs")
    for key, value in meta.items():
        if not _META_KEY.match(key) or key.startswith("consul-") or len(value) > 512:
            out.append(f"meta {key[:40]!r}")
    for check in body.get("Checks", []):
        for field in ("Interval", "Timeout", "TTL", "DeregisterCriticalServiceAfter"):
            if field in check and not go_duration_ok(check[field]):
                out.append(f"check {field} {check[field][:40]!r}")
        if check.get("Status", "passing") not in ("passing", "warning", "critical"):
            out.append("check status")
        if "HTTP" in check and (" " in check["HTTP"] or not check["HTTP"].isprintable()):
            out.append(f"check URL {check['HTTP'][:60]!r}")
    if len(json.dumps(body)) > 64 * 1024:
        out.append(f"registration body is {len(json.dumps(body))} bytes")
    return out


def assert_sane_warnings(warnings: tuple[str, ...], container: str = CONTAINER) -> None:
    assert len(warnings) <= MAX_WARNINGS
    for warning in warnings:
        assert container in warning, warning
        assert warning.isprintable(), f"raw control characters reach the log: {warning!r}"
        assert len(warning) < 1000, f"{len(warning)}-character warning"


def describe_labels(labels: dict[str, str] | None = None, env: dict[str, str] | None = None, **kw: Any):
    options = RegistratorOptions(node="node1", **kw)
    result = describe(inspect_doc(labels=labels, env=env, published=P80), options, host_ip=HOST)
    for svc in result.services:
        assert problems(svc) == [], svc
    assert_sane_warnings(result.warnings)
    return result


def only(result: Any) -> ServiceDef:
    assert len(result.services) == 1, result
    return result.services[0]


def warned(result: Any, *needles: str) -> bool:
    return any(all(n in w for n in needles) for w in result.warnings)


# ---- names ----------------------------------------------------------------------------------------


def test_dns_safe_name_registers_without_warning() -> None:
    result = describe_labels({"SERVICE_NAME": "api-v2"})
    assert only(result).name == "api-v2" and result.warnings == ()


def test_one_megabyte_name_falls_back_to_image_name_with_short_warning() -> None:
    result = describe_labels({"SERVICE_NAME": "x" * MB})
    assert only(result).name == "web"
    assert warned(result, "label SERVICE_NAME", f"({MB} characters)", "using 'web'")


@pytest.mark.parametrize("name", ["\x1b[31mred\x1b[0m", "two\nlines", "tab\there", "bidi\u202eevil", "nul-like\x7f"])
def test_control_characters_in_name_fall_back_to_image_name(name: str) -> None:
    result = describe_labels({"SERVICE_NAME": name})
    assert only(result).name == "web"
    assert warned(result, "SERVICE_NAME", repr(name)[1:-1][:20])  # escaped, not raw


@pytest.mark.parametrize("name", ["; rm -rf /", "$(id)", "`id`", "{{ template }}", "'\"quoted\"'", "../../etc",
                                  "café-☕", "under_score", "dotted.name", "x" * 64])
def test_dns_unsafe_name_is_registered_verbatim_with_dns_warning(name: str) -> None:
    result = describe_labels({"SERVICE_NAME": name})
    assert only(result).name == name  # plain data: never executed, never rendered
    assert warned(result, "SERVICE_NAME", "will not be discoverable via DNS")


def test_default_name_that_dns_cannot_serve_is_warned_too() -> None:
    result = describe(inspect_doc(image="team/my_app:1", published=P80), RegistratorOptions(node="n"), HOST)
    assert only(result).name == "my_app"
    assert warned(result, "the default name", "SERVICE_NAME")


# ---- service IDs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("sid", ["../../etc", "x/../../../../kv/pwned", "..", ".", "a b", "a?b#c", "%2e%2e",
                                 "$(id)", "id\nwith-newline", "ü-id", "x" * 257])
def test_unsafe_service_id_falls_back_to_default_id(sid: str) -> None:
    result = describe_labels({"SERVICE_ID": sid})
    assert only(result).id == f"node1:{CONTAINER}:80"
    assert warned(result, "label SERVICE_ID", "not usable as a service ID")


def test_safe_custom_service_id_is_kept() -> None:
    result = describe_labels({"SERVICE_ID": "web.1:api@eu+blue=1~x"})
    assert only(result).id == "web.1:api@eu+blue=1~x" and result.warnings == ()


# ---- tags -----------------------------------------------------------------------------------------


def test_hostile_tags_are_dropped_or_kept_as_plain_data() -> None:
    tags = ",".join(["ok", "\x1b[1mbold", "line\nbreak", "t" * 1000, "$(id)", "; rm -rf /", "'quoted'",
                     "{{ template }}", "{{.Config.Hostname}}"])
    result = describe_labels({"SERVICE_TAGS": tags})
    assert only(result).tags == ("ok", "$(id)", "; rm -rf /", "'quoted'", "abc123")
    assert warned(result, "SERVICE_TAGS", "bold")
    assert warned(result, "SERVICE_TAGS", "(1000 characters)")
    assert warned(result, "SERVICE_TAGS", "bad template")


def test_template_pulling_in_a_huge_label_is_dropped() -> None:
    result = describe_labels({"BIG": "y" * MB, "SERVICE_TAGS": '{{index .Config.Labels "BIG"}},fine'})
    assert only(result).tags == ("fine",)
    assert warned(result, "SERVICE_TAGS", "not usable")


def test_thousands_of_tags_are_capped() -> None:
    result = describe_labels({"SERVICE_TAGS": ",".join(f"t{i}" for i in range(5000))})
    assert len(only(result).tags) == 64
    assert warned(result, "5000 tags", "first 64")


# ---- keys, ports, meta ----------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["SERVICE_0_NAME", "SERVICE_65536_NAME", "SERVICE_99999999999999999999_NAME",
                                 "SERVICE_" + "9" * 5000 + "_NAME", "SERVICE_8080_NAME"])
def test_port_specific_key_for_bogus_port_is_ignored_with_warning(key: str) -> None:
    result = describe_labels({key: "other"})
    assert only(result).name == "web"
    assert warned(result, "port")
    assert all(len(w) < 1000 for w in result.warnings)


@pytest.mark.parametrize("key", ["SERVICE_²_NAME", "SERVICE_٣_NAME", "SERVICE_８０_NAME"])
def test_non_ascii_digit_port_keys_are_not_port_keys(key: str) -> None:
    # int("²") raises and int("٣") == 3: neither may be treated as a port number
    result = describe_labels({key: "other"})
    assert only(result).name == "web"
    assert warned(result, "Meta key")


def test_thousands_of_service_keys_give_capped_warnings_and_valid_meta() -> None:
    labels = {f"SERVICE_K{i}": "v" for i in range(3000)}
    labels.update({f"SERVICE_{70000 + i}_NAME": "x" for i in range(3000)})
    labels["SERVICE_NAME"] = "crowded"
    started = time.monotonic()
    result = describe_labels(labels)
    assert time.monotonic() - started < 5
    svc = only(result)
    assert svc.name == "crowded"
    assert len(svc.meta_dict) == 64  # 61 from labels + Waypost's three markers
    assert len(result.warnings) == MAX_WARNINGS
    assert warned(result, "more metadata warnings")


def test_meta_values_and_keys() -> None:
    result = describe_labels({"SERVICE_HUGE": "z" * MB, "SERVICE_" + "A" * 100_000: "v",
                              "SERVICE_ESC": "\x1b[31m", "SERVICE_CONSUL-X": "v"})
    meta = only(result).meta_dict
    assert "huge" not in meta and "consul-x" not in meta
    assert meta["esc"] == "\x1b[31m"  # Consul accepts any value up to 512 bytes; it is stored as data
    assert warned(result, "SERVICE_HUGE", "longer than 512")
    assert warned(result, "SERVICE_AAAA", "(100008 characters)")


def test_same_hostile_values_from_env_vars() -> None:
    result = describe_labels(env={"SERVICE_NAME": "a\nb", "SERVICE_ID": "../x", "SERVICE_TAGS": "\x1b,ok"})
    svc = only(result)
    assert (svc.name, svc.id, svc.tags) == ("web", f"node1:{CONTAINER}:80", ("ok",))
    assert warned(result, "env SERVICE_NAME") and warned(result, "env SERVICE_ID")


# ---- checks and addresses -------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/health\r\nX-Injected: 1", "/a b", "/" + "p" * MB])
def test_check_http_path_that_is_not_a_path_registers_no_check(path: str) -> None:
    result = describe_labels({"SERVICE_CHECK_HTTP": path})
    assert only(result).checks == ()
    assert warned(result, "SERVICE_CHECK_HTTP", "not a URL path")


@pytest.mark.parametrize("interval", ["99999999999999999999h", "١٠s", "1e9s", "9" * 400 + "h"])
def test_out_of_range_or_non_ascii_durations_use_the_default(interval: str) -> None:
    result = describe_labels({"SERVICE_CHECK_TCP": "true", "SERVICE_CHECK_INTERVAL": interval})
    assert only(result).checks[0].interval == "10s"
    assert warned(result, "SERVICE_CHECK_INTERVAL", "not a duration")


@pytest.mark.parametrize("ip", ["0.0.0.0", "::", "not-an-ip", "1.2.3.4\n5.6.7.8"])
def test_unusable_ip_from_label_keeps_the_default_address(ip: str) -> None:
    result = describe_labels({"ip": ip}, use_ip_from_label="ip")
    assert only(result).address == HOST
    assert warned(result, "label ip=", "not a usable IP address")


# ---- anything at all ------------------------------------------------------------------------------

HOSTILE_VALUES = ["", " ", "x" * 70_000, "\x1b[2J", "a\nb", "\t", "$(id)", "; rm -rf /", "../../etc",
                  "{{ template }}", "{{.Id}}", '{{index .Config.Labels "SERVICE_NAME"}}', "{{", "}}", "'\"",
                  "0.0.0.0", "99999999999999999999h", "1s", "true", "/ok", "\u202e", "%00"]
KEYS = ["NAME", "ID", "TAGS", "IGNORE", "CHECK_HTTP", "CHECK_HTTPS", "CHECK_TCP", "CHECK_TTL", "CHECK_INTERVAL",
        "CHECK_TIMEOUT", "CHECK_INITIAL_STATUS", "CHECK_DEREGISTER_AFTER", "CHECK_TLS_SKIP_VERIFY", "CHECK_SCRIPT",
        "REGION", "80_NAME", "80_ID", "80_TAGS", "0_NAME", "81_NAME"]
label_keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=12)).map(lambda k: "SERVICE_" + k)
label_values = st.one_of(st.sampled_from(HOSTILE_VALUES), st.text(max_size=40))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(labels=st.dictionaries(label_keys, label_values, max_size=12),
       env=st.dictionaries(label_keys, label_values, max_size=4))
def test_any_labels_give_acceptable_registrations_and_sane_warnings(labels: dict[str, str],
                                                                     env: dict[str, str]) -> None:
    env = {k: v for k, v in env.items() if "=" not in k}
    describe_labels(labels, env)  # asserts no exception, problems() == [], sane warnings


# ---- the reconciler against the real embedded catalog ---------------------------------------------

GOOD = "0" * 64
HOSTILE_LABELS = [
    {"SERVICE_NAME": "x" * MB, "SERVICE_TAGS": "ok,\x1b[31mred,line\nbreak,$(id),{{ template }},; rm -rf /"},
    {"SERVICE_ID": "x/../../../../kv/pwned", "SERVICE_CHECK_HTTP": "/h\r\nX-Injected: 1"},
    {"SERVICE_ID": "../../../agent/service/deregister/good", "SERVICE_CHECK_TCP": "true",
     "SERVICE_CHECK_INTERVAL": "99999999999999999999h"},
    {**{f"SERVICE_K{i}": "v" for i in range(2000)}, **{f"SERVICE_{70000 + i}_NAME": "n" for i in range(2000)},
     "SERVICE_²_NAME": "sup", "SERVICE_NAME": "$(reboot)"},
]


async def test_reconciler_hostile_neighbours_do_not_affect_the_good_container(catalog_server, catalog_client,
                                                                              caplog) -> None:
    engine = FakeDocker()
    engine.add(inspect_doc(name="good", cid=GOOD, labels={"SERVICE_NAME": "good", "SERVICE_ID": "good"},
                           published=P80))
    hostile = [engine.add(inspect_doc(name=f"evil{n}", cid=f"{n + 1:02d}" * 32, labels=labels, published=P80))
               for n, labels in enumerate(HOSTILE_LABELS)]
    rec = Reconciler(catalog_client, engine, RegistratorOptions(node="n1"), default_ip=HOST, min_backoff=0.01,
                     max_backoff=0.05)
    with caplog.at_level(logging.WARNING, logger="waypost.registrator"):
        await asyncio.wait_for(rec.full_sync(), 30)
    assert rec.errors == 0, "the catalog rejected a registration"
    services = await catalog_client.local_services()
    assert services["good"].name == "good" and services["good"].port == 32768
    owners = {s.meta_dict[MARKER_CONTAINER] for s in services.values()}
    assert owners == {GOOD, *hostile}  # every hostile container still registered, sanitized
    for svc in services.values():
        assert problems(svc) == [], svc
    for record in caplog.records:
        assert record.getMessage().isprintable() and len(record.getMessage()) < 1000
    # their deregistration goes to their own IDs: nothing else is touched
    for cid in hostile:
        engine.set_running(cid, False)
        await rec.reconcile(cid)
    assert set(await catalog_client.local_services()) == {"good"}
    assert catalog_server.store.kv == {}
    assert rec.errors == 0


# ---- real dockerd -----------------------------------------------------------------------------------


async def _run(image: str, **kwargs: Any) -> Any:
    container = await asyncio.to_thread(dk.run, dk.client(), image, ("sleep", "3600"), **kwargs)
    await asyncio.to_thread(container.reload)
    return container


async def _of(client: CatalogClient, container: Any) -> dict[str, ServiceDef]:
    return {sid: s for sid, s in (await client.local_services()).items()
            if s.meta_dict.get(MARKER_CONTAINER) == container.id}


@pytest.mark.docker
async def test_docker_hostile_containers_next_to_a_good_one(catalog_server, catalog_client, busybox_image,
                                                            docker_cleanup, caplog) -> None:
    registrator = Registrator(catalog_client, RegistratorOptions(node="faultnode", retry_interval=0.2))
    await registrator.start()
    try:
        await registrator.first_sync.wait()
        with caplog.at_level(logging.WARNING, logger="waypost.registrator"):
            evil_labels = await _run(busybox_image, ports={"80/tcp": None}, extra_labels={
                "SERVICE_NAME": "n" * MB, "SERVICE_ID": "x/../../../../kv/pwned",
                "SERVICE_TAGS": "ok,\x1b[31mred,line\nbreak,$(id),{{ template }},; rm -rf /",
                "SERVICE_CHECK_HTTP": "/h\r\nX-Injected: 1", "SERVICE_99999_NAME": "x"})
            evil_env = await _run(busybox_image, ports={"80/tcp": None}, environment={
                **{f"SERVICE_K{i}": "v" for i in range(1500)}, "SERVICE_NAME": "tab\there",
                "SERVICE_ID": "../../../agent/service/deregister/good", "SERVICE_CHECK_TCP": "true",
                "SERVICE_CHECK_INTERVAL": "99999999999999999999h"})
            good = await _run(busybox_image, ports={"80/tcp": None}, extra_labels={"SERVICE_NAME": "good"})
            (svc,) = (await eventually(lambda: _of(catalog_client, good), 15, "the good container")).values()
            assert svc.name == "good"
            (bad1,) = (await eventually(lambda: _of(catalog_client, evil_labels), 15, "evil_labels")).values()
            (bad2,) = (await eventually(lambda: _of(catalog_client, evil_env), 15, "evil_env")).values()
        assert (bad1.name, bad1.id, bad1.tags) == ("busybox", f"faultnode:{evil_labels.name}:80",
                                                   ("ok", "$(id)", "; rm -rf /"))
        assert (bad2.name, bad2.id) == ("busybox", f"faultnode:{evil_env.name}:80")
        for service in (await catalog_client.local_services()).values():
            assert problems(service) == [], service
        messages = [r.getMessage() for r in caplog.records]
        assert any(evil_labels.name in m and "SERVICE_ID" in m for m in messages)
        assert any(evil_env.name in m and "1439 skipped" in m for m in messages)
        assert all(m.isprintable() and len(m) < 1000 for m in messages)
        assert registrator.status()["errors"] == 0
        # the hostile containers go away: only their own registrations are removed
        for container in (evil_labels, evil_env):
            await asyncio.to_thread(container.remove, force=True)
        await eventually(lambda: _gone(catalog_client, evil_labels, evil_env), 15, "hostile deregistrations")
        assert await _of(catalog_client, good)
        assert catalog_server.store.kv == {}
        # the registrator keeps running: a new container is still registered
        late = await _run(busybox_image, ports={"80/tcp": None})
        await eventually(lambda: _of(catalog_client, late), 15, "a container started afterwards")
    finally:
        await registrator.stop()


async def _gone(client: CatalogClient, *containers: Any) -> bool:
    for container in containers:
        if await _of(client, container):
            return False
    return True
