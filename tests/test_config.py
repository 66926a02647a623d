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
