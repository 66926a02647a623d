"""Catalog URLs, listen addresses and WAYPOST_* environment defaults."""

from __future__ import annotations

import argparse

import pytest

from waypost.cli import apply_env_defaults
from waypost.config import CatalogConfig, ConfigError, parse_hostport


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("consul://10.0.0.5:8500", "http://10.0.0.5:8500"),
        ("http://catalog", "http://catalog:8500"),
        ("https://consul.example:8501", "https://consul.example:8501"),
        ("127.0.0.1:18500", "http://127.0.0.1:18500"),
        ("consul://[::1]:8500", "http://[::1]:8500"),
    ],
)
def test_catalog_url_forms(url: str, expected: str) -> None:
    assert CatalogConfig.from_url(url).url == expected


def test_catalog_defaults_from_consul_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "10.9.9.9:8500")
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "tok")
    cfg = CatalogConfig.from_url(None)
    assert (cfg.url, cfg.token) == ("http://10.9.9.9:8500", "tok")


@pytest.mark.parametrize("url", ["ftp://x:1", "consul://host:notaport", "consul://:8500"])
def test_bad_catalog_url_names_the_flag(url: str) -> None:
    with pytest.raises(ConfigError, match="--catalog"):
        CatalogConfig.from_url(url)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:8600", ("127.0.0.1", 8600)), ("[::1]:53", ("::1", 53)), ("0.0.0.0", ("0.0.0.0", 99)),
     (":8500", ("127.0.0.1", 8500))],
)
def test_parse_hostport(text: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(text, default_port=99) == expected


@pytest.mark.parametrize("text", ["127.0.0.1:http", "1.2.3.4:70000", "[::1"])
def test_parse_hostport_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="--listen"):
        parse_hostport(text)


def test_env_defaults_apply_to_every_kind_of_flag() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--listen", default="127.0.0.1:1")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--cleanup", action="store_true")
    p.add_argument("--route", action="append")
    apply_env_defaults(p, {"WAYPOST_LISTEN": "127.0.0.2:2", "WAYPOST_WORKERS": "4", "WAYPOST_CLEANUP": "yes",
                           "WAYPOST_ROUTE": "6379=redis 8080=api"})
    args = p.parse_args([])
    assert (args.listen, args.workers, args.cleanup, args.route) == ("127.0.0.2:2", 4, True,
                                                                     ["6379=redis", "8080=api"])
    assert p.parse_args(["--workers", "2"]).workers == 2  # the flag wins over the environment


@pytest.mark.parametrize(("env", "match"), [({"WAYPOST_CLEANUP": "maybe"}, "WAYPOST_CLEANUP"),
                                             ({"WAYPOST_WORKERS": "many"}, "WAYPOST_WORKERS")])
def test_bad_env_values_name_the_variable(env: dict[str, str], match: str) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--cleanup", action="store_true")
    with pytest.raises(ConfigError, match=match):
        apply_env_defaults(p, env)


def test_parse_hostport_error_shows_the_flags_own_port() -> None:
    with pytest.raises(ConfigError, match=r"--http 'bad': no port; write HOST:PORT, e.g. 127.0.0.1:8500"):
        parse_hostport("bad", flag="--http", example_port=8500)


# ---- gliderlabs registry URIs -----------------------------------------------------------------


@pytest.fixture
def no_consul_tls_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("CONSUL_CACERT", "CONSUL_TLSCERT", "CONSUL_TLSKEY", "CONSUL_HTTP_SSL_VERIFY"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize(("url", "expected"), [("consul-tls://consul.example:8501", "https://consul.example:8501"),
                                               ("consul-tls://consul.example", "https://consul.example:443")])
def test_consul_tls_is_https(url: str, expected: str, no_consul_tls_env, caplog) -> None:
    caplog.set_level("WARNING", logger="waypost.config")
    cfg = CatalogConfig.from_url(url)
    assert (cfg.url, cfg.ca_file, cfg.verify) == (expected, None, True)
    assert not caplog.records


def test_consul_tls_reads_the_ca_from_consul_cacert(no_consul_tls_env) -> None:
    no_consul_tls_env.setenv("CONSUL_CACERT", "/certs/ca.pem")
    cfg = CatalogConfig.from_url("consul-tls://10.0.0.5:8501")
    assert (cfg.scheme, cfg.host, cfg.port, cfg.ca_file) == ("https", "10.0.0.5", 8501, "/certs/ca.pem")
    assert CatalogConfig.from_url("consul-tls://10.0.0.5:8501", ca_file="/flag/ca.pem").ca_file == "/flag/ca.pem"


@pytest.mark.parametrize("names", [("CONSUL_TLSCERT",), ("CONSUL_TLSKEY",), ("CONSUL_TLSCERT", "CONSUL_TLSKEY")])
def test_consul_tls_client_certificates_are_not_silently_ignored(names: tuple[str, ...], no_consul_tls_env,
                                                                 caplog) -> None:
    caplog.set_level("WARNING", logger="waypost.config")
    for name in names:
        no_consul_tls_env.setenv(name, f"/certs/{name.lower()}.pem")
    assert CatalogConfig.from_url("consul-tls://10.0.0.5:8501").url == "https://10.0.0.5:8501"
    (message,) = [r.getMessage() for r in caplog.records]
    assert all(name in message for name in names) and "not supported yet" in message
    assert "verify_incoming" in message and "consul://127.0.0.1:8500" in message  # what to do instead


def test_client_certificate_variables_only_matter_to_consul_tls(no_consul_tls_env, caplog) -> None:
    caplog.set_level("WARNING", logger="waypost.config")
    no_consul_tls_env.setenv("CONSUL_TLSCERT", "/certs/cert.pem")
    CatalogConfig.from_url("https://10.0.0.5:8501")  # gliderlabs reads them for consul-tls only
    CatalogConfig.from_url("consul://10.0.0.5:8500")
    assert not caplog.records


@pytest.mark.parametrize("url", ["consul-unix:///var/run/consul/consul.sock", "consul-unix://consul.sock"])
def test_consul_unix_says_unix_sockets_are_not_supported(url: str) -> None:
    with pytest.raises(ConfigError, match=r"--catalog .*unix sockets are not supported.*consul://HOST:PORT"):
        CatalogConfig.from_url(url)


@pytest.mark.parametrize(("url", "named"), [("consul://10.0.0.5:8500?prefix=svc", "query 'prefix=svc'"),
                                            ("consul://10.0.0.5:8500/?prefix=svc", "query 'prefix=svc'"),
                                            ("consul://10.0.0.5:8500/services", "path '/services'"),
                                            ("consul-tls://10.0.0.5:8501/a?b=c", "path '/a', query 'b=c'")])
def test_dropped_path_or_query_is_named_in_a_warning(url: str, named: str, no_consul_tls_env, caplog) -> None:
    caplog.set_level("WARNING", logger="waypost.config")
    cfg = CatalogConfig.from_url(url)
    assert cfg.host == "10.0.0.5"
    (message,) = [r.getMessage() for r in caplog.records]
    assert url in message and named in message and "ignored" in message


@pytest.mark.parametrize("url", ["consul://10.0.0.5:8500", "consul://10.0.0.5:8500/", "10.0.0.5:8500",
                                 "https://10.0.0.5:8501/"])
def test_plain_urls_warn_about_nothing(url: str, no_consul_tls_env, caplog) -> None:
    caplog.set_level("WARNING", logger="waypost.config")
    CatalogConfig.from_url(url)
    assert not caplog.records
