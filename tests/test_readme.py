"""The README's commands: every `waypost …` line parses with the real CLI, the two set-up commands
are the ones .ci/run uses, and the walkthrough runs for real (tests/up and tests/examples run the
compose files)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from waypost.cli import build_parser

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
