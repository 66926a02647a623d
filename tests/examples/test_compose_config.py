"""Every example's compose file is valid, uses the images users pull, and every `waypost` command
line in it is accepted by the real argument parser and configuration code.

Needs only the docker-compose binary (no engine). examples/multi-host can't run on one machine
without Consul, so this is its test; the others also run for real in the sibling modules.
"""

from __future__ import annotations

import os
import shlex
import subprocess

import pytest
import yaml

from tests.examples.compose import EXAMPLES, compose_command
from waypost.cli import build_parser

RUNNABLE = ("trainingwheels", "injected", "dns")
MULTI_HOST_ENV = {"HOST_IP": "10.0.0.11", "CONSUL_JOIN": "10.0.0.11"}
# Variables the tests set; cleared so the files' defaults are what is checked.
OVERRIDES = ("WAYPOST_IMAGE", "REDIS_IMAGE", "BASE_IMAGE", "CONSUL_IMAGE", "HOST_IP", "CONSUL_JOIN",
             "WAYPOST_HTTP_PORT", "WAYPOST_DNS_PORT", "FRONT_PORT", "FRONT_ADMIN_PORT", "CONSUL_SERVERS")


def compose_config(example: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in OVERRIDES}
    return subprocess.run([*compose_command(), "-f", str(EXAMPLES / example / "docker-compose.yml"), *args, "config"],
                          cwd=EXAMPLES / example, env={**clean, **env}, capture_output=True, text=True, timeout=60)


def services(example: str, *args: str, **env: str) -> dict[str, dict]:
    proc = compose_config(example, *args, **env)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)["services"]


def waypost_services(svcs: dict[str, dict]) -> dict[str, dict]:
    """Services running the Waypost image (built from the repository root)."""
    root = str(EXAMPLES.parent)
    return {name: s for name, s in svcs.items() if s.get("build", {}).get("context") == root}


def check_command(command: str | list[str]) -> list[str]:
    """Parse a compose `command:` like `waypost` would and build its configuration (nothing starts)."""
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    args = build_parser(environ={}).parse_args(argv)
    if args.command == "up":
        from waypost.up import Host

        Host(args)  # validates --http/--dns/--catalog/--ip and the registrator and ambassador options
    elif args.command == "ambassador":
        from waypost.ambassador.cli import options_from_args
        from waypost.ambassador.routes import parse_route
        from waypost.config import catalog_config_from_args

        assert args.route, command
        specs = [parse_route(r) for r in args.route]
        options_from_args(args)
        if any(s.service for s in specs):
            catalog_config_from_args(args)
    return argv


def example_args(example: str) -> tuple[tuple[str, ...], dict[str, str]]:
    if example == "multi-host":
        return ("--profile", "redis"), MULTI_HOST_ENV
    return (), {}


@pytest.mark.parametrize("example", [*RUNNABLE, "multi-host"])
def test_config_is_valid_and_uses_public_images(example: str) -> None:
    args, env = example_args(example)
    svcs = services(example, *args, **env)
    assert (EXAMPLES / example / "README.md").is_file()
    assert svcs["cache"]["image"] == "redis:7"
    for name, svc in svcs.items():
        if "build" in svc:
            assert svc["build"]["args"]["BASE_IMAGE"] == "python:3.12-slim", name
    assert waypost_services(svcs)["waypost"]["volumes"][0].startswith("/var/run/docker.sock:/var/run/docker.sock")


@pytest.mark.parametrize("example", [*RUNNABLE, "multi-host"])
def test_every_waypost_command_parses(example: str) -> None:
    args, env = example_args(example)
    commands = {name: check_command(svc["command"]) for name, svc in waypost_services(services(example, *args, **env)).items()}
    assert commands["waypost"][0] == "up"
    assert all(argv[0] in ("up", "ambassador") for argv in commands.values()), commands


def test_injected_host_mode_settings() -> None:
    svcs = services("injected")
    up = svcs["waypost"]
    assert up["pid"] == "host" and up["network_mode"] == "host" and "SYS_ADMIN" in up["cap_add"]
    assert svcs["web"]["labels"]["waypost.connect"] == "redis"
    assert "sidecar" not in " ".join(svcs) and all("network_mode" not in s or s["network_mode"] == "host"
                                                   for s in svcs.values())


def test_trainingwheels_sidecars_share_their_apps_namespace() -> None:
    svcs = services("trainingwheels")
    for web in ("web1", "web2"):
        sidecar = svcs[f"{web}-ambassador"]
        assert sidecar["network_mode"] == f"service:{web}"
        assert "127.127.0.2:6379=redis" in sidecar["command"]
        assert "redis:127.127.0.2" in svcs[web]["extra_hosts"]


def test_dns_clients_use_waypost_dns() -> None:
    svcs = services("dns")
    address = svcs["waypost"]["networks"]["default"]["ipv4_address"]
    assert "--dns 0.0.0.0:53" in svcs["waypost"]["command"]
    for name in ("webapp", "client"):
        assert svcs[name]["dns"] == [address] and svcs[name]["dns_search"] == ["service.consul"]


def test_multi_host_uses_consul_on_every_host() -> None:
    svcs = services("multi-host", **MULTI_HOST_ENV)
    everywhere = {name for name, svc in svcs.items() if not svc.get("profiles")}
    assert everywhere == {"consul", "waypost", "web", "front"} and svcs["cache"]["profiles"] == ["redis"]
    assert svcs["consul"]["image"].startswith("hashicorp/consul:")
    consul = shlex.split(svcs["consul"]["command"])
    assert consul[:2] == ["agent", "-server"] and "-bind=10.0.0.11" in consul and "-retry-join=10.0.0.11" in consul
    up = shlex.split(svcs["waypost"]["command"])
    assert up[up.index("--catalog") + 1] == "consul://127.0.0.1:8500" and up[up.index("--ip") + 1] == "10.0.0.11"
    assert "--internal" not in up, "across hosts, services are reached at HOST_IP and published ports"
    assert svcs["waypost"]["pid"] == "host" and "SYS_ADMIN" in svcs["waypost"]["cap_add"]
    assert svcs["web"]["labels"] == {"SERVICE_NAME": "web", "waypost.connect": "redis"}
    assert "consul://127.0.0.1:8500" in svcs["front"]["command"]
    assert str(svcs["cache"]["ports"][0]["published"]) == "6379"


def test_multi_host_names_the_missing_variable() -> None:
    proc = compose_config("multi-host")
    assert proc.returncode != 0 and "HOST_IP" in proc.stderr
