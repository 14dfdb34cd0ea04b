"""Downstream targets and records (mailmoat.domain.downstream)."""

from __future__ import annotations

import pytest

from mailmoat.domain.downstream import DownstreamAddress, normalize_target, validate_downstream
from mailmoat.domain.names import InvalidName

# 253 characters: the longest host name; with its final dot, 254.
LONG_HOST = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("mx.example.com.", "mx.example.com."),
        ("mx.example.com", "mx.example.com"),
        ("MX.Example.COM.", "mx.example.com."),
        ("  mx.example.com.  ", "mx.example.com."),
        ("mx.bücher.example.", "mx.xn--bcher-kva.example."),
        ("mx.xn--bcher-kva.example", "mx.xn--bcher-kva.example"),
        ("192.0.2.25", "192.0.2.25"),
        ("[192.0.2.25]", "192.0.2.25"),
        ("[ 192.0.2.25 ]", "192.0.2.25"),
        ("2001:db8::25", "2001:db8::25"),
        ("[2001:DB8::25]", "2001:db8::25"),
        ("2001:0DB8:0000::0025", "2001:db8::25"),
        (LONG_HOST + ".", LONG_HOST + "."),
    ],
)
def test_normalize_target(raw: str, expected: str) -> None:
    assert normalize_target(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "mx",
        "mx.",
        "mx..example.com",
        "mx.example.com..",
        ".mx.example.com",
        "[mx.example.com]",
        "mx.example.com:25",
        "smtp://mx.example.com",
        "mx example.com",
        "-mx.example.com",
        "999.0.0.1",
        "a" * 256,
        LONG_HOST + "e.",
    ],
)
def test_normalize_target_rejects(raw: str) -> None:
    with pytest.raises(InvalidName):
        normalize_target(raw)


def record(**changes: object) -> DownstreamAddress:
    values: dict[str, object] = {
        "priority": 10,
        "weight": 50,
        "port": 25,
        "target": "MX.Example.com.",
    }
    values.update(changes)
    return DownstreamAddress(**values)  # type: ignore[arg-type]


def test_validate_downstream_normalises_the_target() -> None:
    assert validate_downstream(record()) == DownstreamAddress(10, 50, 25, "mx.example.com.")


@pytest.mark.parametrize(
    "changes",
    [
        {"port": 1},
        {"port": 65535},
        {"port": 587},
        {"priority": 0},
        {"priority": 65535},
        {"weight": 0},
        {"weight": 65535},
        {"target": "[192.0.2.1]"},
    ],
)
def test_validate_downstream_accepts_bounds(changes: dict[str, object]) -> None:
    result = validate_downstream(record(**changes))
    for field, value in changes.items():
        if field != "target":
            assert getattr(result, field) == value


@pytest.mark.parametrize(
    "changes",
    [
        {"port": 0},
        {"port": 65536},
        {"port": -25},
        {"priority": -1},
        {"priority": 65536},
        {"weight": -1},
        {"weight": 65536},
        {"target": ""},
        {"target": "not a host"},
    ],
)
def test_validate_downstream_rejects(changes: dict[str, object]) -> None:
    with pytest.raises(InvalidName):
        validate_downstream(record(**changes))
