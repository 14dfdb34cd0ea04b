"""Downstream servers saved in the console pass the address policy."""

from __future__ import annotations

import html
from collections.abc import Callable

import pytest

from mailmoat.domain.addresses import AddressPolicy
from tests.console.conftest import DOMAIN, Console, ConsoleFactory, World


@pytest.fixture
async def console(open_console: ConsoleFactory, world: World) -> Console:
    return await open_console()


async def targets(world: World) -> list[str]:
    response = await world.api.get(f"/domains/{DOMAIN}/downstream-address")
    assert response.status_code == 200, response.text
    return [r["target"] for r in response.json()["records"]]


@pytest.mark.parametrize(
    ("target", "port", "why"),
    [
        ("127.0.0.1", "25", "127.0.0.1 is a loopback address"),
        ("169.254.169.254", "80", "169.254.169.254 is a link-local address"),
        ("::ffff:10.0.0.1", "25", "::ffff:a00:1 (10.0.0.1) is a private address"),
    ],
)
async def test_inside_addresses_get_a_clear_error(
    world: World,
    console: Console,
    set_targets: Callable[[AddressPolicy], None],
    target: str,
    port: str,
    why: str,
) -> None:
    set_targets(AddressPolicy())
    before = await targets(world)
    form = {"target_0": "mx1.example.net", "port_0": "25", "target_1": target, "port_1": port}
    response = await console.post("/settings/downstreams", form)
    assert response.status_code == 400, response.text
    text = html.unescape(response.text)
    assert "That did not work" in text
    assert why in text and "not allowed by the operator" in text
    assert await targets(world) == before


async def test_mailmoats_own_listener_is_refused_even_when_inside_is_allowed(
    world: World, console: Console, set_targets: Callable[[AddressPolicy], None]
) -> None:
    set_targets(AddressPolicy(allow_private=True, smtp_listeners=frozenset({("127.0.0.1", 25)})))
    response = await console.post("/settings/downstreams", {"target_0": "127.0.0.1"})
    assert response.status_code == 400, response.text
    assert "own SMTP listener" in html.unescape(response.text)
    response = await console.post(
        "/settings/downstreams", {"target_0": "127.0.0.1", "port_0": "2525"}
    )
    assert response.status_code == 303, response.text
    assert await targets(world) == ["127.0.0.1"]
