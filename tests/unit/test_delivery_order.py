"""The order in which a message tries a domain's downstream addresses."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from mailmoat.domain.downstream import DownstreamAddress, delivery_order


def mx(target: str, priority: int = 10, weight: int = 10) -> DownstreamAddress:
    return DownstreamAddress(priority=priority, weight=weight, port=25, target=target)


def test_lower_priority_numbers_come_first_whatever_the_weights() -> None:
    addresses = [mx("c.", 30, 100), mx("a.", 10, 1), mx("b.", 20, 50)]
    for seed in range(20):
        order = delivery_order(addresses, random.Random(seed))
        assert [a.target for a in order] == ["a.", "b.", "c."]


def test_every_address_of_a_priority_comes_before_the_next_priority() -> None:
    addresses = [mx("a1.", 10, 5), mx("b.", 20), mx("a2.", 10, 5), mx("a3.", 10, 90)]
    for seed in range(50):
        order = [a.target for a in delivery_order(addresses, random.Random(seed))]
        assert sorted(order[:3]) == ["a1.", "a2.", "a3."]
        assert order[3] == "b."


@pytest.mark.parametrize(("weights", "expected"), [((40, 10), 0.8), ((1, 1), 0.5), ((3, 1), 0.75)])
def test_the_first_choice_is_proportional_to_weight(
    weights: tuple[int, int], expected: float
) -> None:
    rng = random.Random(7)
    addresses = [mx("heavy.", weight=weights[0]), mx("light.", weight=weights[1])]
    draws = 20_000
    firsts = Counter(delivery_order(addresses, rng)[0].target for _ in range(draws))
    assert firsts["heavy."] / draws == pytest.approx(expected, abs=0.015)


def test_weight_zero_comes_after_the_weighted_addresses_of_its_priority() -> None:
    addresses = [mx("zero.", weight=0), mx("some.", weight=1), mx("later.", 20, 0)]
    for seed in range(30):
        order = [a.target for a in delivery_order(addresses, random.Random(seed))]
        assert order == ["some.", "zero.", "later."]


def test_a_group_of_weight_zero_is_tried_in_random_order() -> None:
    addresses = [mx("x.", weight=0), mx("y.", weight=0)]
    firsts = Counter(
        delivery_order(addresses, random.Random(seed))[0].target for seed in range(400)
    )
    assert 120 < firsts["x."] < 280


def test_nothing_is_lost_or_repeated() -> None:
    addresses = [mx(f"h{i}.", priority=i % 3, weight=i) for i in range(10)]
    order = delivery_order(addresses, random.Random(1))
    assert sorted(a.target for a in order) == sorted(a.target for a in addresses)
    assert delivery_order([]) == []
