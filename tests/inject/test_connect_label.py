"""The waypost.connect label and the hosts-file lines it turns into."""

from __future__ import annotations

import pytest

from waypost.ambassador.connect import MAX_ROUTES, ConnectSpec, parse_connect_label
from waypost.ambassador.hostsfile import allocate, read_waypost_lines, render, update_file


def test_label_forms() -> None:
    specs, warnings = parse_connect_label("redis, api:8080,db:5432@pg,web#v2")
    assert warnings == []
    assert specs == [
        ConnectSpec("redis", None, "redis"),
        ConnectSpec("api", 8080, "api"),
        ConnectSpec("db", 5432, "pg"),
        ConnectSpec("web", None, "web", "v2"),
    ]


@pytest.mark.parametrize(
    ("entry", "culprit"),
    [("redis:0", "port"), ("redis:99999", "port"), ("redis:abc", "port"), ("bad name", "host name"),
     ("x@", "service"), ("a;rm -rf /", "host name"), ("\u2603", "host name"), ("a" * 300, "host name"),
     ("db#", "tag"), ("cache\n:6379@redis", "host name"), ("db@pg\n#v2", "service"), ("db:5\u00b2", "port")],
)
def test_bad_entries_warn_and_others_still_work(entry: str, culprit: str) -> None:
    specs, warnings = parse_connect_label(f"redis,{entry},api:80")
    assert [s.name for s in specs] == ["redis", "api"]
    assert len(warnings) == 1 and culprit in warnings[0] and "waypost.connect" in warnings[0]


def test_duplicate_name_warns() -> None:
    specs, warnings = parse_connect_label("redis,redis:6380")
    assert [s.port for s in specs] == [None] and "twice" in warnings[0]


def test_hosts_lines_are_reused_never_duplicated(tmp_path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1\tlocalhost\n172.17.0.5\tabc123\n")
    wanted = allocate(["redis", "api"], read_waypost_lines(hosts.read_text()))
    assert wanted == {"redis": "127.127.0.2", "api": "127.127.0.3"}
    assert update_file(str(hosts), wanted)
    first = hosts.read_text()
    assert first.startswith("127.0.0.1\tlocalhost\n172.17.0.5\tabc123\n")
    # a restart reads the file back, gets the same addresses, and changes nothing
    again = allocate(["api", "redis"], read_waypost_lines(first))
    assert again == wanted
    assert not update_file(str(hosts), again)
    assert hosts.read_text().count("redis") == 1
    # a route removed from the label loses its line; the new one takes a free address
    update_file(str(hosts), allocate(["api", "db"], read_waypost_lines(first)))
    text = hosts.read_text()
    assert "redis" not in text and "127.127.0.3\tapi" in text and "127.127.0.2\tdb" in text


def test_render_with_no_routes_removes_our_lines() -> None:
    assert render("127.0.0.1 localhost\n127.127.0.2\tredis\t# waypost\n", {}) == "127.0.0.1 localhost\n"


def test_too_many_routes_are_capped_with_one_warning() -> None:
    specs, warnings = parse_connect_label(",".join(f"s{i}" for i in range(MAX_ROUTES + 500)))
    assert len(specs) == MAX_ROUTES
    assert len(warnings) == 1 and f"only the first {MAX_ROUTES}" in warnings[0]


def test_a_line_rewritten_inside_the_container_is_not_trusted(tmp_path) -> None:
    """The container can edit its hosts file: a marked line pointing outside 127.127/16 gets a fresh
    address (and its line is rewritten) instead of making the injector listen there."""
    text = ("127.0.0.1\tlocalhost\n0.0.0.0\tredis\t# waypost\nnonsense\tapi\t# waypost\n"
            "127.127.0.3\tdb\t# waypost\n")
    existing = read_waypost_lines(text)
    assert existing == {"db": "127.127.0.3"}
    wanted = allocate(["redis", "api", "db"], existing)
    assert wanted == {"redis": "127.127.0.2", "api": "127.127.0.4", "db": "127.127.0.3"}
    hosts = tmp_path / "hosts"
    hosts.write_text(text)
    update_file(str(hosts), wanted)
    assert hosts.read_text() == ("127.0.0.1\tlocalhost\n127.127.0.2\tredis\t# waypost\n"
                                 "127.127.0.3\tdb\t# waypost\n127.127.0.4\tapi\t# waypost\n")
