"""gliderlabs/registrator's Go-style boolean flags: ``-internal=true`` … parse as Go's flag package does."""

from __future__ import annotations

import argparse

import pytest

from waypost.registrator import cli


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="registrator")
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def flags(args: argparse.Namespace) -> tuple[bool, bool, bool]:
    return args.internal, args.explicit, args.cleanup


TRUE_WORDS = ("1", "t", "T", "TRUE", "true", "True")
FALSE_WORDS = ("0", "f", "F", "FALSE", "false", "False")


@pytest.mark.parametrize("word", TRUE_WORDS + FALSE_WORDS)
@pytest.mark.parametrize("flag", ["internal", "explicit", "cleanup"])
@pytest.mark.parametrize("dashes", ["-", "--"])
def test_every_parsebool_word_on_every_spelling(word: str, flag: str, dashes: str) -> None:
    args = parse(f"{dashes}{flag}={word}", "consul://127.0.0.1:8500")
    assert getattr(args, flag) is (word in TRUE_WORDS)
    assert args.registry == "consul://127.0.0.1:8500"


@pytest.mark.parametrize("argv", [("-internal",), ("--internal",), ("-internal", "consul://h:8500"),
                                  ("consul://h:8500", "-internal")])
def test_bare_flag_still_means_true_and_never_takes_the_next_word(argv: tuple[str, ...]) -> None:
    args = parse(*argv)
    assert flags(args) == (True, False, False)
    assert args.registry == ("consul://h:8500" if len(argv) == 2 else None)


def test_a_gliderlabs_command_line_as_it_is() -> None:
    args = parse("-ip=192.0.2.10", "-internal=false", "-explicit=true", "-cleanup", "-resync=60",
                 "-tags=a,b", "consul://127.0.0.1:8500")
    assert flags(args) == (False, True, True)
    opts = cli.options_from_args(args)
    assert (opts.host_ip, opts.internal, opts.explicit, opts.cleanup, opts.resync, opts.tags) == (
        "192.0.2.10", False, True, True, 60.0, ("a", "b"))


@pytest.mark.parametrize(("argv", "internal"), [(("-internal=false", "-internal"), True),
                                                (("-internal", "-internal=0"), False),
                                                (("--internal=1", "-internal=f"), False),
                                                (("-internal=false", "--internal=true"), True)])
def test_the_last_occurrence_wins(argv: tuple[str, ...], internal: bool) -> None:
    assert parse(*argv).internal is internal


def test_explicit_value_beats_the_environment() -> None:
    from waypost.cli import build_parser

    parser = build_parser({"WAYPOST_INTERNAL": "1", "WAYPOST_CLEANUP": "1"}, only="registrator")
    args = parser.parse_args(["registrator", "-internal=false", "consul://127.0.0.1:8500"])
    assert (args.internal, args.cleanup, args.registry) == (False, True, "consul://127.0.0.1:8500")
    assert parser.parse_args(["registrator"]).internal is True  # no flag: the environment's value


@pytest.mark.parametrize("word", ["yes", "on", "", "2", "tRUE", "maybe"])
@pytest.mark.parametrize("spelling", ["-internal", "--cleanup"])
def test_bad_value_is_an_argparse_error_naming_flag_and_values(word: str, spelling: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse(f"{spelling}={word}")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {spelling}: invalid boolean value {word!r}" in err
    assert "1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False" in err


def test_words_after_double_dash_are_not_flags() -> None:
    rest, values = cli.split_go_bool_values(["-internal=1", "--", "-internal=maybe"], {"-internal": "internal"})
    assert (rest, values) == (["--", "-internal=maybe"], {"internal": True})

