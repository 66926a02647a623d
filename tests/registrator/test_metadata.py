"""Unit tests for the pure part: Docker inspect documents → service definitions."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from waypost.catalog.model import CRITICAL, PASSING
from waypost.registrator.metadata import (
    MARKER_CONTAINER,
    MARKER_CONTAINER_PORT,
    MARKER_NODE,
    TemplateError,
    bracket,
    describe,
    docker_check_id,
    image_basename,
    is_duration,
    metadata_check_id,
    render_template,
    split_escaped,
)
from waypost.registrator.options import RegistratorOptions

from .fakes import inspect_doc as container

HOST = "192.0.2.10"
CID = "c0ffee" * 10 + "abcd"  # inspect_doc's default Id


def opts(**kw: Any) -> RegistratorOptions:
    kw.setdefault("node", "node1")
    return RegistratorOptions(**kw)


def one(doc: dict[str, Any], **kw: Any):
    result = describe(doc, opts(**kw), host_ip=HOST)
    assert len(result.services) == 1, result
    return result.services[0]


PUBLISHED_80 = {"80/tcp": [("0.0.0.0", "32768"), ("::", "32768")]}


# ---- naming -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("redis", "redis"),
        ("redis:7", "redis"),
        ("library/redis:7-alpine", "redis"),
        ("gliderlabs/foobar", "foobar"),
        ("registry.example.com:5000/team/app:1.2", "app"),
        ("registry.example.com:5000/team/app", "app"),
        ("app@sha256:" + "a" * 64, "app"),
        ("team/app:1@sha256:" + "b" * 64, "app"),
        ("sha256:" + "c" * 64, ""),
    ],
)
def test_image_basename(image: str, expected: str) -> None:
    assert image_basename(image) == expected


def test_defaults_single_published_port() -> None:
    svc = one(container(published=PUBLISHED_80))
    assert svc.name == "web"
    assert svc.id == "node1:web.1:80"
    assert (svc.address, svc.port) == (HOST, 32768)
    assert svc.tags == ()
    assert svc.checks == ()
    # the container's own port rides along: an injected ambassador listens on it (the app dials 80, not 32768)
    assert svc.meta_dict == {MARKER_NODE: "node1", MARKER_CONTAINER: CID, MARKER_CONTAINER_PORT: "80"}


def test_image_id_falls_back_to_container_name() -> None:
    svc = one(container(image="sha256:" + "d" * 64, published=PUBLISHED_80))
    assert svc.name == "web.1"


def test_service_name_env_and_label() -> None:
    assert one(container(env={"SERVICE_NAME": "db"}, published=PUBLISHED_80)).name == "db"
    assert one(container(labels={"SERVICE_NAME": "db"}, published=PUBLISHED_80)).name == "db"


def test_label_wins_over_env() -> None:
    doc = container(env={"SERVICE_NAME": "from-env", "SERVICE_TAGS": "e"},
                    labels={"SERVICE_NAME": "from-label"}, published=PUBLISHED_80)
    svc = one(doc)
    assert svc.name == "from-label"
    assert svc.tags == ("e",)  # env still applies where no label overrides


def test_port_specific_wins_over_generic_even_from_env() -> None:
    doc = container(env={"SERVICE_80_NAME": "api"}, labels={"SERVICE_NAME": "generic"}, published=PUBLISHED_80)
    assert one(doc).name == "api"


def test_multi_port_suffix_and_ids() -> None:
    doc = container(image="progrium/nginx", name="nginx.0",
                    published={"443/tcp": [("0.0.0.0", "4443")], "80/tcp": [("0.0.0.0", "8000")]})
    services = describe(doc, opts(), HOST).services
    assert [(s.id, s.name, s.port) for s in services] == [
        ("node1:nginx.0:80", "nginx-80", 8000),
        ("node1:nginx.0:443", "nginx-443", 4443),
    ]


def test_multi_port_generic_name_still_suffixed_port_name_not() -> None:
    doc = container(env={"SERVICE_NAME": "www", "SERVICE_443_NAME": "https", "SERVICE_443_ID": "https.12345",
                         "SERVICE_443_SNI": "enabled", "SERVICE_TAGS": "www"},
                    published={"443/tcp": [("0.0.0.0", "4443")], "80/tcp": [("0.0.0.0", "8000")]})
    by_port = {s.port: s for s in describe(doc, opts(), HOST).services}
    assert by_port[8000].name == "www-80"
    assert by_port[4443].name == "https"
    assert by_port[4443].id == "https.12345"
    assert by_port[4443].meta_dict["sni"] == "enabled"
    assert "sni" not in by_port[8000].meta_dict
    assert by_port[8000].tags == by_port[4443].tags == ("www",)


def test_udp_port_gets_tag_and_id_suffix() -> None:
    doc = container(image="coredns", published={"53/udp": [("0.0.0.0", "5353")]},
                    env={"SERVICE_TAGS": "dns"})
    svc = one(doc)
    assert svc.id == "node1:web.1:53:udp"
    assert svc.tags == ("dns", "udp")


def test_tcp_and_udp_same_port_are_two_services() -> None:
    doc = container(image="coredns", published={"53/udp": [("0.0.0.0", "53")], "53/tcp": [("0.0.0.0", "53")]})
    services = describe(doc, opts(), HOST).services
    assert {s.id for s in services} == {"node1:web.1:53", "node1:web.1:53:udp"}
    assert {s.name for s in services} == {"coredns-53"}


# ---- ignore / explicit --------------------------------------------------------------------------


def test_ignore_whole_container() -> None:
    assert describe(container(labels={"SERVICE_IGNORE": "true"}, published=PUBLISHED_80), opts(), HOST).services == ()


def test_ignore_false_words_do_not_ignore() -> None:
    for word in ("false", "0", "no", ""):
        assert len(describe(container(env={"SERVICE_IGNORE": word}, published=PUBLISHED_80), opts(), HOST).services) == 1


def test_ignoring_one_port_keeps_the_others_name() -> None:
    # gliderlabs counts the ports before SERVICE_IGNORE: web-80 stays web-80 when 443 is ignored
    doc = container(env={"SERVICE_443_IGNORE": "1"},
                    published={"443/tcp": [("0.0.0.0", "4443")], "80/tcp": [("0.0.0.0", "8000")]})
    svc = one(doc)
    assert (svc.name, svc.port) == ("web-80", 8000)


def test_explicit_requires_a_name() -> None:
    doc = container(published={"443/tcp": [("0.0.0.0", "4443")], "80/tcp": [("0.0.0.0", "8000")]})
    assert describe(doc, opts(explicit=True), HOST).services == ()
    doc["Config"]["Labels"] = {"SERVICE_80_NAME": "http"}
    svc = one(doc, explicit=True)
    assert (svc.name, svc.port) == ("http", 8000)


def test_explicit_with_generic_name() -> None:
    assert one(container(env={"SERVICE_NAME": "x"}, published=PUBLISHED_80), explicit=True).name == "x"


# ---- addresses ----------------------------------------------------------------------------------


def test_unpublished_ports_skipped_without_internal() -> None:
    doc = container(exposed=["8080/tcp"], published=PUBLISHED_80)
    assert [s.port for s in describe(doc, opts(), HOST).services] == [32768]


def test_no_published_ports_no_services() -> None:
    assert describe(container(exposed=["80/tcp"]), opts(), HOST).services == ()


def test_internal_uses_exposed_ports_and_container_ip() -> None:
    doc = container(exposed=["8080/tcp"], published=PUBLISHED_80, ip="172.17.0.9")
    services = describe(doc, opts(internal=True), HOST).services
    assert [(s.address, s.port, s.name) for s in services] == [
        ("172.17.0.9", 80, "web-80"), ("172.17.0.9", 8080, "web-8080")]


def test_internal_chooses_network() -> None:
    nets = {"front": {"IPAddress": "10.1.0.2"}, "back": {"IPAddress": "10.2.0.2"}}
    doc = container(exposed=["80/tcp"], mode="front", networks=nets)
    assert one(doc, internal=True).address == "10.1.0.2"
    assert one(doc, internal=True, network="back").address == "10.2.0.2"


def test_internal_unknown_network_warns_and_falls_back() -> None:
    nets = {"front": {"IPAddress": "10.1.0.2"}}
    result = describe(container(exposed=["80/tcp"], mode="front", networks=nets),
                      opts(internal=True, network="nope"), HOST)
    assert result.services[0].address == "10.1.0.2"
    assert any("--network 'nope'" in w and "web.1" in w for w in result.warnings)


def test_internal_ipv6_only_network_and_bracketed_check() -> None:
    nets = {"v6": {"IPAddress": "", "GlobalIPv6Address": "fd00:1::5"}}
    doc = container(exposed=["80/tcp"], mode="v6", networks=nets, env={"SERVICE_CHECK_HTTP": "/health"})
    svc = one(doc, internal=True)
    assert svc.address == "fd00:1::5"
    assert svc.checks[0].target == "http://[fd00:1::5]:80/health"


def test_internal_container_network_mode_uses_peer_ip() -> None:
    doc = container(exposed=["80/tcp"], mode="container:" + "f" * 64, networks={})
    peer = container(name="pod", ip="172.17.0.77")
    result = describe(doc, opts(internal=True), HOST, peer=peer)
    assert result.services[0].address == "172.17.0.77"


def test_internal_without_an_ip_registers_nothing_and_says_why() -> None:
    # --network none: registering "" would make the catalog use the node's address with the
    # container's port, which points at whatever the host runs there
    none = describe(container(exposed=["80/tcp"], mode="none", networks={"none": {"IPAddress": ""}}),
                    opts(internal=True), HOST)
    assert none.services == ()
    assert any("no IP address" in w and "'none'" in w and "80" in w for w in none.warnings)
    # the container whose network it shares is gone (its inspect failed)
    orphan = describe(container(exposed=["8080/tcp"], mode="container:" + "f" * 64, networks={}),
                      opts(internal=True), HOST, peer=None)
    assert orphan.services == ()
    assert any("shares is gone" in w for w in orphan.warnings)


def test_container_network_mode_without_internal_warns() -> None:
    result = describe(container(exposed=["8080/tcp"], mode="container:" + "f" * 64, networks={}), opts(), HOST)
    assert result.services == ()
    assert any("--internal" in w and "ffffffffffff" in w for w in result.warnings)


def test_one_service_id_on_two_ports_registers_the_lowest_and_warns() -> None:
    doc = container(env={"SERVICE_ID": "api"},
                    published={"443/tcp": [("0.0.0.0", "8443")], "80/tcp": [("0.0.0.0", "8000")]})
    result = describe(doc, opts(), HOST)
    assert [(s.id, s.port) for s in result.services] == [("api", 8000)]
    assert any("SERVICE_ID" in w and "443" in w and "SERVICE_<port>_ID" in w for w in result.warnings)


def test_port_specific_check_kind_beats_a_generic_one() -> None:
    doc = container(env={"SERVICE_CHECK_HTTP": "/health", "SERVICE_443_CHECK_TCP": "true"},
                    published={"443/tcp": [("0.0.0.0", "8443")], "80/tcp": [("0.0.0.0", "8000")]})
    checks = {s.port: s.checks[0] for s in describe(doc, opts(), HOST).services}
    assert (checks[8000].kind, checks[8000].target) == ("http", f"http://{HOST}:8000/health")
    assert (checks[8443].kind, checks[8443].target) == ("tcp", f"{HOST}:8443")


def test_no_docker_health_leaves_healthcheck_out_but_not_pause() -> None:
    starting = container(published=PUBLISHED_80, health="starting")
    assert one(starting, docker_health=False).checks == ()
    assert [c.initial_status for c in one(starting).checks] == [CRITICAL]
    paused = container(published=PUBLISHED_80, health="healthy", paused=True)
    assert [c.initial_status for c in one(paused, docker_health=False).checks] == [CRITICAL]


def test_zero_binding_uses_host_ip_and_ip_flag_overrides() -> None:
    assert one(container(published=PUBLISHED_80)).address == HOST
    assert one(container(published=PUBLISHED_80), host_ip="198.51.100.7").address == "198.51.100.7"


def test_specific_binding_ip_is_used() -> None:
    doc = container(published={"80/tcp": [("192.0.2.44", "8080")]})
    assert (one(doc).address, one(doc).port) == ("192.0.2.44", 8080)


def test_ipv6_only_binding() -> None:
    doc = container(published={"80/tcp": [("fd00::2", "8080")]}, env={"SERVICE_CHECK_TCP": "true"})
    svc = one(doc)
    assert svc.address == "fd00::2"
    assert svc.checks[0].kind == "tcp" and svc.checks[0].target == "[fd00::2]:8080"


def test_ipv4_binding_preferred_over_ipv6_duplicate() -> None:
    doc = container(published={"80/tcp": [("::", "32769"), ("0.0.0.0", "32768")]})
    assert one(doc).port == 32768


def test_host_network_registers_exposed_ports_at_host_ip() -> None:
    doc = container(mode="host", exposed=["8080/tcp", "9090/tcp"])
    services = describe(doc, opts(), HOST).services
    assert [(s.address, s.port) for s in services] == [(HOST, 8080), (HOST, 9090)]
    assert [(s.address, s.port) for s in describe(doc, opts(internal=True), HOST).services] == [
        (HOST, 8080), (HOST, 9090)]
    assert describe(doc, opts(host_ip="198.51.100.1"), HOST).services[0].address == "198.51.100.1"


def test_use_ip_from_label() -> None:
    doc = container(published=PUBLISHED_80, labels={"ip": "10.9.8.7/24"})
    assert one(doc, use_ip_from_label="ip").address == "10.9.8.7"
    doc["Config"]["Labels"] = {"ip": "not-an-ip"}
    result = describe(doc, opts(use_ip_from_label="ip"), HOST)
    assert result.services[0].address == HOST
    assert any("label ip='not-an-ip'" in w for w in result.warnings)
    doc["Config"]["Labels"] = {}
    assert one(doc, use_ip_from_label="ip").address == HOST


def test_bad_host_port_skipped_with_warning() -> None:
    result = describe(container(published={"80/tcp": [("0.0.0.0", "x")], "81/tcp": [("0.0.0.0", "81")]}),
                      opts(), HOST)
    assert [s.port for s in result.services] == [81]
    assert any("bad host port" in w for w in result.warnings)


# ---- tags ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a,b", ["a", "b"]),
        ("master, backups", ["master", "backups"]),
        (r"/(;\,:-_)/", ["/(;,:-_)/"]),
        (r"a\,b,c", ["a,b", "c"]),
        (",,a,,", ["a"]),
        ("", []),
        ("\\", ["\\"]),
        (r"x\y", [r"x\y"]),
    ],
)
def test_split_escaped(text: str, expected: list[str]) -> None:
    assert split_escaped(text) == expected


def test_force_tags_appended_after_container_tags_deduplicated() -> None:
    svc = one(container(env={"SERVICE_TAGS": "a,b"}, published=PUBLISHED_80), tags=("b", "c"))
    assert svc.tags == ("a", "b", "c")


def test_templates_in_tags() -> None:
    doc = container(labels={"SERVICE_TAGS": "host-{{.Config.Hostname}},{{ index .Config.Labels \"zone\" }}",
                            "zone": "eu"}, published=PUBLISHED_80)
    assert one(doc, tags=("img={{.Config.Image}}",)).tags == ("host-abc123", "eu", "img=example/web:1.0")


@pytest.mark.parametrize("bad", ["{{.Nope}}", "{{.Config}}", "{{ call .X }}", "{{.Config.Hostname", "x}}"])
def test_render_template_errors(bad: str) -> None:
    with pytest.raises(TemplateError):
        render_template(bad, {"Config": {"Hostname": "h"}})


def test_bad_template_warns_and_skips_only_that_tag() -> None:
    result = describe(container(labels={"SERVICE_TAGS": "ok,{{.Nope.Field}}"}, published=PUBLISHED_80),
                      opts(), HOST)
    assert result.services[0].tags == ("ok",)
    assert any("label SERVICE_TAGS" in w and "bad template" in w and "web.1" in w for w in result.warnings)


# ---- meta ---------------------------------------------------------------------------------------


def test_meta_lower_cased_and_reserved_keys_excluded() -> None:
    env = {"SERVICE_REGION": "us2", "SERVICE_Team_Name": "core", "SERVICE_CHECK_HTTP": "/h",
           "SERVICE_CHECK_INTERVAL": "5s", "SERVICE_NAME": "n", "SERVICE_ID": "i", "SERVICE_TAGS": "t",
           "SERVICE_IGNORE": "0", "SERVICE_CHECK_WHATEVER": "x"}
    svc = one(container(env=env, published=PUBLISHED_80))
    assert svc.meta_dict == {"region": "us2", "team_name": "core", MARKER_NODE: "node1", MARKER_CONTAINER: CID,
                             MARKER_CONTAINER_PORT: "80"}


@pytest.mark.parametrize("key", ["SERVICE_A.B", "SERVICE_CONSUL-X", "SERVICE_WAYPOST-NODE", "SERVICE_" + "K" * 129])
def test_invalid_meta_keys_skipped_with_warning(key: str) -> None:
    result = describe(container(labels={key: "v", "SERVICE_OK": "1"}, published=PUBLISHED_80), opts(), HOST)
    meta = result.services[0].meta_dict
    assert meta["ok"] == "1"
    assert meta[MARKER_NODE] == "node1"
    assert len(meta) == 4  # ok + Waypost's three markers
    assert any(key in w and "web.1" in w for w in result.warnings)


def test_meta_value_too_long_skipped() -> None:
    result = describe(container(labels={"SERVICE_BIG": "x" * 600}, published=PUBLISHED_80), opts(), HOST)
    assert "big" not in result.services[0].meta_dict
    assert result.warnings


def test_too_many_meta_keys() -> None:
    labels = {f"SERVICE_K{i:03d}": "v" for i in range(70)}
    result = describe(container(labels=labels, published=PUBLISHED_80), opts(), HOST)
    assert len(result.services[0].meta_dict) == 64
    assert result.warnings


def test_ownership_marker_cannot_be_overridden() -> None:
    svc = one(container(labels={"SERVICE_WAYPOST-NODE": "other"}, published=PUBLISHED_80))
    assert svc.meta_dict[MARKER_NODE] == "node1"


# ---- checks -------------------------------------------------------------------------------------


def test_http_check() -> None:
    svc = one(container(env={"SERVICE_CHECK_HTTP": "/health", "SERVICE_CHECK_INTERVAL": "15s",
                             "SERVICE_CHECK_TIMEOUT": "1s"}, published=PUBLISHED_80))
    (check,) = svc.checks
    assert check.to_consul() == {"CheckID": metadata_check_id(svc.id), "Name": "Service 'web' check",
                                 "HTTP": f"http://{HOST}:32768/health", "Interval": "15s", "Timeout": "1s"}


def test_http_check_path_without_slash_and_default_interval() -> None:
    (check,) = one(container(env={"SERVICE_CHECK_HTTP": "ping"}, published=PUBLISHED_80)).checks
    assert check.target == f"http://{HOST}:32768/ping"
    assert check.interval == "10s"


def test_https_check_port_specific_with_skip_verify() -> None:
    doc = container(env={"SERVICE_443_CHECK_HTTPS": "/h", "SERVICE_443_CHECK_TLS_SKIP_VERIFY": "true"},
                    published={"443/tcp": [("0.0.0.0", "4443")], "80/tcp": [("0.0.0.0", "8000")]})
    by_port = {s.port: s for s in describe(doc, opts(), HOST).services}
    assert by_port[8000].checks == ()
    (check,) = by_port[4443].checks
    assert check.target == f"https://{HOST}:4443/h" and check.tls_skip_verify


def test_tcp_check_and_false_disables() -> None:
    (check,) = one(container(env={"SERVICE_CHECK_TCP": "true"}, published=PUBLISHED_80)).checks
    assert check.to_consul()["TCP"] == f"{HOST}:32768"
    assert one(container(env={"SERVICE_CHECK_TCP": "false"}, published=PUBLISHED_80)).checks == ()


def test_ttl_check_initial_status_and_deregister_after() -> None:
    (check,) = one(container(env={"SERVICE_CHECK_TTL": "30s", "SERVICE_CHECK_INITIAL_STATUS": "passing",
                                  "SERVICE_CHECK_DEREGISTER_AFTER": "90m"}, published=PUBLISHED_80)).checks
    assert check.to_consul() == {"CheckID": check.check_id, "Name": check.name, "TTL": "30s", "Status": "passing",
                                 "DeregisterCriticalServiceAfter": "90m"}


def test_http_takes_precedence_over_tcp() -> None:
    (check,) = one(container(env={"SERVICE_CHECK_TCP": "1", "SERVICE_CHECK_HTTP": "/"}, published=PUBLISHED_80)).checks
    assert check.kind == "http"


@pytest.mark.parametrize(
    ("key", "value", "default"),
    [
        ("SERVICE_CHECK_INTERVAL", "ten", "10s"),
        ("SERVICE_CHECK_INTERVAL", "10", "10s"),
        ("SERVICE_CHECK_INTERVAL", "0s", "10s"),
        ("SERVICE_80_CHECK_INTERVAL", "-5s", "10s"),
    ],
)
def test_bad_interval_warns_names_variable_and_uses_default(key: str, value: str, default: str) -> None:
    result = describe(container(labels={"SERVICE_CHECK_HTTP": "/h", key: value}, published=PUBLISHED_80),
                      opts(), HOST)
    assert result.services[0].checks[0].interval == default
    assert len(result.warnings) == 1
    assert f"label {key}={value!r}" in result.warnings[0] and "web.1" in result.warnings[0]


def test_bad_ttl_timeout_status_deregister() -> None:
    labels = {"SERVICE_CHECK_TTL": "soon", "SERVICE_CHECK_INITIAL_STATUS": "great",
              "SERVICE_CHECK_DEREGISTER_AFTER": "later"}
    result = describe(container(labels=labels, published=PUBLISHED_80), opts(), HOST)
    (check,) = result.services[0].checks
    assert (check.ttl, check.initial_status, check.deregister_after) == ("30s", "", "")
    assert len(result.warnings) == 3
    labels = {"SERVICE_CHECK_TCP": "1", "SERVICE_CHECK_TIMEOUT": "fast"}
    result = describe(container(labels=labels, published=PUBLISHED_80), opts(), HOST)
    assert result.services[0].checks[0].timeout == ""
    assert "SERVICE_CHECK_TIMEOUT" in result.warnings[0]


def test_script_check_unsupported_warns() -> None:
    result = describe(container(env={"SERVICE_CHECK_SCRIPT": "curl x"}, published=PUBLISHED_80), opts(), HOST)
    assert result.services[0].checks == ()
    assert "SERVICE_CHECK_SCRIPT" in result.warnings[0]


@pytest.mark.parametrize("text", ["10s", "1m30s", "500ms", "1.5h", "2h45m", "100us", "1µs"])
def test_durations_ok(text: str) -> None:
    assert is_duration(text)


@pytest.mark.parametrize("text", ["", "10", "s", "0s", "-1s", "1d", "10 s", "1m-3s"])
def test_durations_bad(text: str) -> None:
    assert not is_duration(text)


# ---- bad ports ----------------------------------------------------------------------------------


def test_port_out_of_range_key_warns_registration_still_happens() -> None:
    result = describe(container(labels={"SERVICE_99999_NAME": "x"}, published=PUBLISHED_80), opts(), HOST)
    assert result.services[0].name == "web"
    assert any("SERVICE_99999_NAME" in w and "out of range" in w and "web.1" in w for w in result.warnings)


def test_key_for_unknown_port_warns() -> None:
    result = describe(container(labels={"SERVICE_8080_NAME": "x"}, published=PUBLISHED_80), opts(), HOST)
    assert result.services[0].name == "web"
    assert any("SERVICE_8080_NAME" in w and "8080" in w for w in result.warnings)


def test_key_for_exposed_unpublished_port_is_fine() -> None:
    result = describe(container(labels={"SERVICE_8080_NAME": "x"}, exposed=["8080/tcp"], published=PUBLISHED_80),
                      opts(), HOST)
    assert result.warnings == ()


def test_leading_zero_port_key_matches() -> None:
    assert one(container(labels={"SERVICE_080_NAME": "z"}, published=PUBLISHED_80)).name == "z"


def test_generic_keys_with_underscore_are_not_port_keys() -> None:
    svc = one(container(labels={"SERVICE_MY_KEY": "v"}, published=PUBLISHED_80))
    assert svc.meta_dict["my_key"] == "v"


def test_malformed_inspect_fields_do_not_crash() -> None:
    doc = container(published=PUBLISHED_80)
    doc["Config"]["Env"] = ["NOEQUALS", "SERVICE_NAME=ok", "=x"]
    doc["Config"]["Labels"] = None
    doc["NetworkSettings"]["Ports"]["bogus/tcp"] = [{"HostIp": "0.0.0.0", "HostPort": "1"}]
    result = describe(doc, opts(), HOST)
    assert [s.name for s in result.services] == ["ok"]
    assert any("bogus" in w for w in result.warnings)
    assert describe({}, opts(), HOST).services == ()


# ---- docker state check -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("health", "paused", "status"),
    [("healthy", False, PASSING), ("unhealthy", False, CRITICAL), ("starting", False, CRITICAL),
     ("healthy", True, CRITICAL), (None, True, CRITICAL)],
)
def test_docker_state_check(health: str | None, paused: bool, status: str) -> None:
    svc = one(container(published=PUBLISHED_80, health=health, paused=paused))
    (check,) = svc.checks
    assert check.check_id == docker_check_id(svc.id)
    assert check.to_consul()["TTL"] and check.initial_status == status


def test_no_docker_check_without_healthcheck() -> None:
    assert one(container(published=PUBLISHED_80)).checks == ()


def test_docker_check_alongside_metadata_check() -> None:
    svc = one(container(published=PUBLISHED_80, health="healthy", env={"SERVICE_CHECK_TCP": "1"}))
    assert [c.kind for c in svc.checks] == ["tcp", "ttl"]
    assert len({c.check_id for c in svc.checks}) == 2


def test_bracket() -> None:
    assert bracket("::1") == "[::1]" and bracket("10.0.0.1") == "10.0.0.1"


# ---- properties ---------------------------------------------------------------------------------

_names = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=0, max_size=30)


@given(st.dictionaries(st.text(min_size=0, max_size=20).map(lambda s: "SERVICE_" + s), _names, max_size=8),
       st.dictionaries(st.text(min_size=0, max_size=20).map(lambda s: "SERVICE_" + s), _names, max_size=8))
def test_any_metadata_never_crashes_and_always_registers(labels: dict[str, str], env: dict[str, str]) -> None:
    labels = {k: v for k, v in labels.items() if "IGNORE" not in k.upper()}
    env = {k: v for k, v in env.items() if "IGNORE" not in k.upper() and "=" not in k}
    result = describe(container(labels=labels, env=env, published=PUBLISHED_80), opts(), HOST)
    assert len(result.services) == 1
    svc = result.services[0]
    assert svc.port == 32768 and svc.meta_dict[MARKER_NODE] == "node1"
    svc.to_consul()


@given(st.lists(st.text(alphabet="ab,\\ ", max_size=6), max_size=5))
def test_split_escaped_roundtrip(tags: list[str]) -> None:
    clean = [t.strip() for t in tags if t.strip() and "\\" not in t]
    assert split_escaped(",".join(t.replace(",", "\\,") for t in clean)) == clean


# ---- a container that wants registering but publishes nothing --------------------------------


def test_service_settings_without_a_published_port_say_how_to_fix_it() -> None:
    result = describe(container(env={"SERVICE_NAME": "redis"}, exposed=["6379/tcp"]), opts(), HOST)
    assert result.services == ()
    (warning,) = result.warnings
    assert "web.1" in warning and "6379" in warning and "-p 6379" in warning and "--internal" in warning


@pytest.mark.parametrize("case", ["no SERVICE_ settings", "SERVICE_IGNORE", "--internal", "published"])
def test_no_publish_warning_when_nothing_was_asked_or_something_is_registered(case: str) -> None:
    env = {} if case == "no SERVICE_ settings" else {"SERVICE_NAME": "redis"}
    if case == "SERVICE_IGNORE":
        env["SERVICE_IGNORE"] = "1"
    published = {"6379/tcp": [("0.0.0.0", "32768")]} if case == "published" else None
    result = describe(container(env=env, exposed=["6379/tcp"], published=published),
                      opts(internal=case == "--internal"), HOST)
    assert result.warnings == ()
    assert len(result.services) == (1 if case in ("--internal", "published") else 0)
