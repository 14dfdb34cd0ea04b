"""The `mailmoat` command: customers, keys, and serve on a fresh data dir."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from mailmoat.cli import app
from tests.served import KEY_PATTERN, free_port, serve

runner = CliRunner()


def mailmoat(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_customer_create_prints_json_and_rejects_duplicates(data_dir: Path) -> None:
    code, out, _ = mailmoat(
        "customers", "create", "acme", "--domain-limit", "5",
        "--protected-address-limit", "20", "--subscription", "acme-gold",
        "--data-dir", str(data_dir),
    )  # fmt: skip
    assert code == 0
    created = json.loads(out)
    assert created["handle"] == "acme"
    assert created["subscriptions"] == [
        {
            "handle": "acme-gold",
            "active": True,
            "domainLimit": 5,
            "protectedAddressLimit": 20,
            "domains": 0,
        }
    ]
    code, _, err = mailmoat("customers", "create", "acme", "--data-dir", str(data_dir))
    assert code == 1
    assert "already exists" in err
    code, out, _ = mailmoat("customers", "list", "--json", "--data-dir", str(data_dir))
    assert [c["handle"] for c in json.loads(out)] == ["acme"]


@pytest.mark.parametrize("handle", ["Upper", "has space", "bad!char", ""])
def test_customer_handle_must_be_simple(data_dir: Path, handle: str) -> None:
    code, _, err = mailmoat("customers", "create", handle, "--data-dir", str(data_dir))
    assert code == 1
    assert "invalid handle" in err


def test_keys_lifecycle_against_a_real_server(data_dir: Path) -> None:
    assert mailmoat("customers", "create", "acme", "--data-dir", str(data_dir))[0] == 0
    code, out, _ = mailmoat(
        "keys", "create", "--customer", "acme", "--description", "ci", "--data-dir", str(data_dir)
    )
    assert code == 0
    key = out.strip()
    assert out == key + "\n" and KEY_PATTERN.fullmatch(key)

    code, listing, _ = mailmoat("keys", "list", "--customer", "acme", "--data-dir", str(data_dir))
    assert code == 0 and "ci" in listing and key not in listing

    with serve(data_dir, env={"MAILMOAT_KEY_CACHE_SECONDS": "1"}) as served:
        assert served.api_key == ""  # not a first start: no key printed
        url = f"{served.base_url}/inbound/v1/subscriptions"
        subs = httpx.get(url, headers={"X-API-Key": key})
        assert subs.status_code == 200
        assert [s["handle"] for s in subs.json()] == ["acme"]
        keys = httpx.get(f"{served.base_url}/inbound/v1/api-keys", headers={"X-API-Key": key})
        key_id = keys.json()[0]["id"]
        assert mailmoat("keys", "delete", key_id, "--data-dir", str(data_dir))[0] == 0
        # Deleted by another process: the server trusts its cache for at most 1 s.
        deadline = time.monotonic() + 5
        while httpx.get(url, headers={"X-API-Key": key}).status_code != 401:
            assert time.monotonic() < deadline, "deleted key still accepted after 5 s"
            time.sleep(0.2)


def test_keys_for_unknown_customer_fail(data_dir: Path) -> None:
    code, out, err = mailmoat("keys", "create", "--customer", "ghost", "--data-dir", str(data_dir))
    assert code == 1 and out == "" and "not found" in err
    code, _, err = mailmoat("keys", "delete", "nope", "--data-dir", str(data_dir))
    assert code == 1 and "not found" in err


def test_settings_come_from_the_environment(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILMOAT_DATA_DIR", str(data_dir))
    assert mailmoat("customers", "create", "envco")[0] == 0
    assert (data_dir / "mailmoat.db").exists()


def test_invalid_listen_address_is_a_clear_error(data_dir: Path) -> None:
    code, _, err = mailmoat("serve", "--data-dir", str(data_dir), "--api-listen", "nowhere")
    assert code == 2
    assert "HOST:PORT" in err


def test_first_start_prints_one_usable_key_once(data_dir: Path) -> None:
    with serve(data_dir) as served:
        assert served.api_key
        assert "API      : http://127.0.0.1:" in served.output
        response = httpx.get(
            f"{served.base_url}/inbound/v1/subscriptions", headers={"X-API-Key": served.api_key}
        )
        assert response.status_code == 200
        assert response.json()[0]["handle"] == "default"
        assert httpx.get(f"{served.base_url}/inbound/v1/docs").status_code == 200
    with serve(data_dir) as again:
        assert again.api_key == ""
        assert "First start" not in again.output


@pytest.mark.parametrize("role", ["smtp", "worker"])
def test_single_roles_start_and_stop_cleanly(data_dir: Path, role: str) -> None:
    smtp = f"127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "mailmoat", "serve", "--data-dir", str(data_dir)),
            *("--role", role, "--smtp-listen", smtp),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    seen = ""
    deadline = time.monotonic() + 30
    while f"role={role}" not in seen and time.monotonic() < deadline:
        seen += process.stdout.readline()
    time.sleep(1)
    assert process.poll() is None, seen + process.communicate()[0]
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=15)
    assert process.returncode == 0, seen + output
    assert f"role={role}" in seen
