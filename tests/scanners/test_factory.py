from __future__ import annotations

import pytest

from mailmoat.config import ScannerKind
from mailmoat.scanners.bayes import MemoryTokenStore
from mailmoat.scanners.builtin import BuiltinScanner
from mailmoat.scanners.factory import build_scanner, parse_address
from mailmoat.scanners.rspamd import RspamdScanner
from mailmoat.scanners.spamd import SpamdScanner


async def test_each_kind_builds_its_scanner() -> None:
    store = MemoryTokenStore()
    builtin = build_scanner("builtin", store=store, threshold=6.5)
    assert isinstance(builtin, BuiltinScanner)
    assert builtin.store is store and builtin.threshold == 6.5

    spamd = build_scanner("spamd", store=None, spamd_address="10.0.0.5:1783", timeout=3)
    assert isinstance(spamd, SpamdScanner)
    assert (spamd.host, spamd.port, spamd.timeout) == ("10.0.0.5", 1783, 3)

    rspamd = build_scanner("rspamd", store=None, rspamd_url="http://rs.internal:11333/")
    assert isinstance(rspamd, RspamdScanner)
    assert rspamd.url == "http://rs.internal:11333/checkv2"
    await rspamd.close()

    assert build_scanner("none", store=store) is None


def test_the_settings_enum_is_accepted() -> None:
    assert isinstance(build_scanner(ScannerKind.BUILTIN, store=MemoryTokenStore()), BuiltinScanner)
    assert build_scanner(ScannerKind.NONE, store=None) is None


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown scanner"):
        build_scanner("clamav", store=None)
    with pytest.raises(ValueError, match="token store"):
        build_scanner("builtin", store=None)
    with pytest.raises(ValueError, match="bad port"):
        build_scanner("spamd", store=None, spamd_address="localhost:http")


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:783", ("127.0.0.1", 783)),
        ("spamd.internal", ("spamd.internal", 783)),
        ("[::1]:1783", ("::1", 1783)),
        ("[::1]", ("::1", 783)),
        ("::1", ("::1", 783)),
        (" spamd:7830 ", ("spamd", 7830)),
    ],
)
def test_parse_address(address: str, expected: tuple[str, int]) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["", ":783", "host:0", "host:70000", "[::1]:x"])
def test_parse_address_rejects(address: str) -> None:
    with pytest.raises(ValueError):
        parse_address(address)
