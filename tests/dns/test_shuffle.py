"""Answer order: every query gets a fresh shuffle (as Consul's), so every instance gets its turn.

Asked over real UDP. The counts are chosen so a fair shuffle fails these checks with a probability
below 1e-5, while the 8 fixed orderings Waypost used to rotate through fail them every time.
"""

from __future__ import annotations

from collections import Counter

from tests.dns.helpers import ask, inst
from waypost.dns import CatalogView


def many(n: int) -> CatalogView:
    view = CatalogView()
    view.apply("many", [inst(f"m-{i}", "many", f"10.2.{i // 200}.{i % 200 + 1}", 9000 + i, node=f"n{i}")
                        for i in range(n)])
    return view


def addresses(msg) -> list[str]:  # type: ignore[no-untyped-def]
    return [r.to_text() for rrset in msg.answer for r in rrset]


async def test_every_instance_comes_first_under_a_record_limit(make_dns) -> None:
    server = await make_dns(many(40), a_record_limit=3)
    first: Counter[str] = Counter()
    seen: set[str] = set()
    answers: set[tuple[str, ...]] = set()
    for _ in range(600):
        got = addresses(await ask(server, "many.service.consul"))
        assert len(got) == 3 and len(set(got)) == 3
        first[got[0]] += 1
        seen.update(got)
        answers.add(tuple(got))
    assert len(first) == 40  # every instance is sometimes the one a client connects to
    assert len(seen) == 40  # and none is left out of the limited answers
    assert len(answers) > 200  # fresh subsets (59,280 ordered triples are possible), not a fixed few


async def test_four_instances_come_in_all_24_orders(make_dns) -> None:
    server = await make_dns(many(4))
    orders = {tuple(addresses(await ask(server, "many.service.consul"))) for _ in range(400)}
    assert len(orders) == 24


async def test_order_after_the_first_record_varies_too(make_dns) -> None:
    server = await make_dns(many(6))
    after: dict[str, set[tuple[str, ...]]] = {}
    for _ in range(400):
        got = addresses(await ask(server, "many.service.consul", use_edns=0))
        assert len(got) == 6
        after.setdefault(got[0], set()).add(tuple(got[1:]))
    # failover spreads: the instances a client tries next differ between answers with the same first
    assert len(after) == 6 and all(len(rest) >= 5 for rest in after.values())


async def test_truncated_srv_answers_cover_every_instance(make_dns) -> None:
    server = await make_dns(many(40))
    targets: set[str] = set()
    for _ in range(600):
        msg = await ask(server, "many.service.consul", "SRV")  # no EDNS: 512 bytes hold 12 of 40
        got = [r.target.to_text() for rrset in msg.answer for r in rrset]
        assert 0 < len(got) < 40
        targets.update(got)
    assert len(targets) == 40
