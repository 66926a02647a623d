"""The `waypost` command line: one argparse tree, environment defaults, one event loop.

Each subcommand lives in its component as a module with ``add_arguments(parser)`` and
``async run(args) -> int``; this module only wires them up, reads ``WAYPOST_<FLAG>`` environment
defaults, sets up logging and the loop, and turns SIGINT/SIGTERM into a clean exit.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys
from collections.abc import Sequence

from waypost import __version__
from waypost.config import ConfigError
from waypost.logs import setup_logging

log = logging.getLogger("waypost")

# subcommand → (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "up": ("waypost.up", "everything on one Docker host: catalog, registrator, DNS, ambassador injection"),
    "catalog": ("waypost.server.cli", "run the embedded Consul-compatible catalog"),
    "ambassador": ("waypost.ambassador.cli", "TCP load balancer: sidecar routes, or --inject into labelled containers"),
    "dns": ("waypost.dns.cli", "serve Consul-style DNS names from the catalog"),
    "registrator": ("waypost.registrator.cli", "register this Docker host's containers in the catalog"),
}

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}


def env_name(dest: str) -> str:
    return "WAYPOST_" + dest.upper()


def apply_env_defaults(parser: argparse.ArgumentParser, environ: dict[str, str] | None = None) -> None:
    """Let every optional flag default from ``WAYPOST_<FLAG>`` (dashes become underscores).

    Repeatable flags take a whitespace-separated list; on/off flags take 1/0, true/false, yes/no.
    A value that cannot be used raises :class:`ConfigError` naming the variable.
    """
    env = os.environ if environ is None else environ
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "version"):
            continue
        name = env_name(action.dest)
        if action.help and action.help != argparse.SUPPRESS:
            action.help += f" [env {name}]"
        if name not in env:
            continue
        raw = env[name]
        if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
            word = raw.strip().lower()
            if word not in TRUE_WORDS | FALSE_WORDS:
                raise ConfigError(f"{name}={raw!r}: use 1 or 0 (true/false) for {action.option_strings[0]}")
            on = word in TRUE_WORDS
            action.default = on if isinstance(action, argparse._StoreTrueAction) else not on
        elif isinstance(action, argparse._AppendAction):
            action.default = [action.type(v) if action.type else v for v in raw.split()]
        else:
            try:
                action.default = action.type(raw) if action.type else raw
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{name}={raw!r}: not a valid {action.option_strings[0]} ({exc})") from None
            if action.choices is not None and action.default not in action.choices:
                allowed = ", ".join(map(str, action.choices))
                raise ConfigError(f"{name}={raw!r}: {action.option_strings[0]} must be one of {allowed}")
        action.required = False


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("logging")
    group.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                       help="log level (default: info)")
    group.add_argument("--log-format", default="text", choices=["text", "json"],
                       help="log lines as text or one JSON object each (default: text)")


class HelpFormatter(argparse.HelpFormatter):
    """Shows a flag's default when it has a meaningful one the help text doesn't already mention."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text or default in (None, "", False, []) or default is argparse.SUPPRESS
                or not action.option_strings):
            return text
        return text + " (default: %(default)s)"


def build_parser(environ: dict[str, str] | None = None, only: str | None = None) -> argparse.ArgumentParser:
    """The whole command tree, with environment defaults applied.

    With `only`, just that subcommand's module is imported and given its flags (the others are
    listed by name): a sidecar ambassador then doesn't pay for the catalog server, DNS and Docker
    SDK imports in memory.
    """
    parser = argparse.ArgumentParser(
        prog="waypost",
        description="Service discovery and routing for Docker hosts: an embedded Consul-compatible "
        "catalog, a registrator, a DNS server and ambassadors. Every flag also reads WAYPOST_<FLAG>.",
    )
    parser.add_argument("--version", action="version", version=f"waypost {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_text, description=help_text)
            continue
        module = importlib.import_module(module_name)
        sp = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip().splitlines()[0],
                            formatter_class=HelpFormatter)
        module.add_arguments(sp)
        add_common_arguments(sp)
        apply_env_defaults(sp, environ)
        sp.set_defaults(_module=module_name)
    return parser


def install_uvloop() -> bool:
    """Use uvloop's event loop (waypost's :class:`~waypost.eventloop.Loop`) where it imports."""
    from waypost.eventloop import install

    return install()


async def _run_until_signalled(args: argparse.Namespace) -> int:
    module = importlib.import_module(args._module)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    stopping = False

    def stop(signame: str) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            log.info("received %s, stopping", signame)
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, sig.name)
    try:
        return int(await module.run(args) or 0)
    except asyncio.CancelledError:
        if stopping:
            return 0
        raise


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `waypost` console script."""
    words = list(sys.argv[1:] if argv is None else argv)
    only = next((w for w in words if not w.startswith("-")), None)
    try:
        parser = build_parser(only=only if only in SUBCOMMANDS else None)
        args = parser.parse_args(words)
    except ConfigError as exc:
        print(f"waypost: error: {exc}", file=sys.stderr)
        sys.exit(2)
    setup_logging(args.log_level, args.log_format)
    install_uvloop()
    try:
        code = asyncio.run(_run_until_signalled(args))
    except ConfigError as exc:
        log.error("%s", exc)
        code = 2
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)
