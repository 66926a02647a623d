"""`waypost dns` flags: defaults, parsing, and bad values rejected with the flag named."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import sys

import pytest

from tests.dns.helpers import records
from tests.ports import free_port
from waypost.config import ConfigError
from waypost.dns import cli


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults_match_consul() -> None:
    config = cli.config_from_args(parse())
    assert config.listen == ("127.0.0.1", 8600)
    assert config.domain == "consul" and config.datacenter == "dc1"
    assert config.service_ttl == 0 and config.node_ttl == 0 and config.soa_min_ttl == 0
    assert config.recursors == () and config.a_record_limit == 0 and not config.only_passing
    assert ipaddress.ip_network("127.0.0.0/8") in config.allow_recursion_from


def test_flags_are_parsed() -> None:
    config = cli.config_from_args(parse(
        "--listen", "0.0.0.0:53", "--domain", "Waypost.Internal.", "--datacenter", "east",
        "--recursor", "10.0.0.2", "--recursor", "[fd00::53]:5353", "--allow-recursion-from", "10.1.0.0/16",
        "--only-passing", "--service-ttl", "30", "--service-ttl", "web=5", "--service-ttl", "api*=7",
        "--node-ttl", "10", "--soa-min-ttl", "60", "--a-record-limit", "3",
    ))
    assert config.listen == ("0.0.0.0", 53)
    assert config.domain == "waypost.internal" and config.datacenter == "east"
    assert config.recursors == (("10.0.0.2", 53), ("fd00::53", 5353))
    assert config.allow_recursion_from == (ipaddress.ip_network("10.1.0.0/16"),)
    assert config.only_passing
    assert (config.ttl_for("web"), config.ttl_for("apigw"), config.ttl_for("other")) == (5, 7, 30)
    assert (config.node_ttl, config.soa_min_ttl, config.a_record_limit) == (10, 60, 3)


def test_recurse_uses_resolv_conf(monkeypatch) -> None:
    monkeypatch.setattr(cli, "resolv_conf_nameservers", lambda: (("10.9.9.9", 53),))
    assert cli.config_from_args(parse("--recurse")).recursors == (("10.9.9.9", 53),)
    monkeypatch.setattr(cli, "resolv_conf_nameservers", lambda: ())
    with pytest.raises(ConfigError, match="--recurse"):
        cli.config_from_args(parse("--recurse"))


@pytest.mark.parametrize("argv, flag", [
    (["--listen", "127.0.0.1"], "--listen"),
    (["--listen", "127.0.0.1:99999"], "--listen"),
    (["--domain", "bad_domain!"], "--domain"),
    (["--domain", ""], "--domain"),
    (["--recursor", "dns.google"], "--recursor"),
    (["--recursor", "1.1.1.1:x"], "--recursor"),
    (["--allow-recursion-from", "10.0.0.0/33"], "--allow-recursion-from"),
    (["--service-ttl", "soon"], "--service-ttl"),
    (["--service-ttl", "web=-1"], "--service-ttl"),
    (["--service-ttl", "=5"], "--service-ttl"),
    (["--node-ttl", "1h"], "--node-ttl"),
    (["--soa-min-ttl", "-5"], "--soa-min-ttl"),
    (["--a-record-limit", "many"], "--a-record-limit"),
    (["--workers", "0"], "--workers"),
    (["--workers", "2", "--listen", "127.0.0.1:0"], "--workers"),
    (["--recursor-timeout", "0"], "--recursor-timeout"),
    (["--datacenter", "a b"], "--datacenter"),
])
def test_bad_values_name_the_flag(argv: list[str], flag: str) -> None:
    with pytest.raises(ConfigError) as err:
        cli.config_from_args(parse(*argv))
    assert flag in str(err.value)


def test_worker_command_line_repeats_the_settings() -> None:
    argv = cli._worker_argv(parse("--listen", "127.0.0.1:8600", "--recursor", "10.0.0.2", "--only-passing",
                                  "--service-ttl", "web=5", "--catalog", "consul://c:8500"))
    assert argv[1:4] == ["-m", "waypost", "dns"] and "--reuse-port" in argv
    assert argv[argv.index("--listen") + 1] == "127.0.0.1:8600"
    assert argv[argv.index("--recursor") + 1] == "10.0.0.2" and "--only-passing" in argv
    assert argv[argv.index("--service-ttl") + 1] == "web=5"
    assert argv[argv.index("--catalog") + 1] == "consul://c:8500"


async def test_workers_share_the_port(catalog_client, catalog_server) -> None:
    """`--workers 2` runs a second process on the same port (SO_REUSEPORT); both answer."""
    from waypost.cli import SUBCOMMANDS

    if "dns" not in SUBCOMMANDS:
        pytest.skip("waypost/cli.py does not register the dns subcommand yet: add "
                    "\"dns\": (\"waypost.dns.cli\", ...) to SUBCOMMANDS")
    import dns.asyncquery
    import dns.message

    from waypost.catalog import ServiceDef

    await catalog_client.register(ServiceDef(id="w-1", name="w", address="10.7.7.7", port=1))
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "waypost", "dns", "--catalog", catalog_server.url, "--listen", f"127.0.0.1:{port}",
        "--workers", "2", env=dict(os.environ), stderr=asyncio.subprocess.PIPE)
    try:
        answered_by_ports: set[int] = set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        # different source ports hash to different workers; both must give the right answer
        while len(answered_by_ports) < 8:
            assert loop.time() < deadline, "workers never answered"
            q = dns.message.make_query("w.service.consul", "A")
            src = free_port()
            try:
                msg = await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=1, source_port=src)
            except Exception:
                await asyncio.sleep(0.2)
                continue
            if records(msg) == ["10.7.7.7"]:
                answered_by_ports.add(src)
        workers = [p for p in os.listdir("/proc") if p.isdigit() and _is_worker(p, port)]
        assert len(workers) == 2, workers
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
    await asyncio.sleep(0.5)
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _is_worker(p, port)], "worker left behind"


def _is_worker(pid: str, port: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmd = fh.read().split(b"\0")
    except OSError:
        return False
    return b"dns" in cmd and f"127.0.0.1:{port}".encode() in cmd
