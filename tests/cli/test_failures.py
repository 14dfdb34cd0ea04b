"""What the operator sees when a command fails: one line on stderr saying what failed,
where and what to do, a non-zero exit code, never a traceback or a password."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailmoat.cli import app
from tests.served import free_port, mailmoat_command

PASSWORD = "hunter2"
SECRET_KEY = "sk-0123456789abcdef-do-not-print"
DOWN = f"postgresql://mailmoat:{PASSWORD}@127.0.0.1:1/mailmoat"  # port 1 refuses at once
DOWN_SHOWN = "postgresql://mailmoat:***@127.0.0.1:1/mailmoat"
PG_URL = os.environ.get("MAILMOAT_TEST_DATABASE_URL")

runner = CliRunner()


def environment(**extra: str) -> dict[str, str]:
    """This environment without MAILMOAT_* variables, plus the secret key and ``extra``."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith("MAILMOAT_")}
    return {**kept, "COLUMNS": "200", "MAILMOAT_SECRET_KEY": SECRET_KEY, **extra}


def cli(*args: str, **env: str) -> tuple[int, str, str]:
    """``mailmoat ARGS`` through Typer's runner, MAILMOAT_* variables replaced by ``env``."""
    unset = {k: None for k in os.environ if k.startswith("MAILMOAT_")}
    result = runner.invoke(app, list(args), env={**unset, "MAILMOAT_SECRET_KEY": SECRET_KEY, **env})
    return result.exit_code, result.stdout, result.stderr


def process(*args: str, timeout: float = 60, **env: str) -> tuple[int, str, str]:
    """``mailmoat ARGS`` as its own process, as an operator runs it."""
    done = subprocess.run(
        [*mailmoat_command(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment(**env),
    )
    return done.returncode, done.stdout, done.stderr


def assert_one_line(code: int, out: str, err: str, *named: str) -> str:
    assert code != 0
    line = err.strip()
    assert len(err.strip().splitlines()) == 1, err
    assert line.startswith("error: ")
    for text in named:
        assert text in line
    for shown in (out, err):
        assert PASSWORD not in shown
        assert SECRET_KEY not in shown
        assert "Traceback" not in shown
    return line


COMMANDS = [
    ["customers", "create", "acme"],
    ["customers", "list"],
    ["customers", "list", "--json"],
    ["keys", "create", "--customer", "acme"],
    ["keys", "list", "--customer", "acme"],
    ["keys", "delete", "0123"],
    ["queue"],
    ["queue", "retry", "--all"],
    ["queue", "drop", "--domain", "example.com"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_says_in_one_line_that_the_database_is_down(
    command: list[str], data_dir: Path
) -> None:
    code, out, err = cli(*command, "--data-dir", str(data_dir), "--database-url", DOWN)
    line = assert_one_line(code, out, err, "cannot use the database", DOWN_SHOWN)
    assert "MAILMOAT_DATABASE_URL" in line  # what to do
    assert code == 1


def test_the_database_url_from_the_environment_is_masked_too(data_dir: Path) -> None:
    code, out, err = cli(
        "customers", "list", MAILMOAT_DATA_DIR=str(data_dir), MAILMOAT_DATABASE_URL=DOWN
    )
    assert_one_line(code, out, err, DOWN_SHOWN)


def test_a_command_run_by_hand_prints_no_traceback_and_no_secret(tmp_path: Path) -> None:
    code, out, err = process(
        "customers", "list", "--data-dir", str(tmp_path / "var"), "--database-url", DOWN
    )
    assert_one_line(code, out, err, "cannot use the database", DOWN_SHOWN)


def test_debug_shows_a_plain_traceback_still_without_the_password(tmp_path: Path) -> None:
    code, out, err = process(
        "--debug", "customers", "list", "--data-dir", str(tmp_path / "var"),
        "--database-url", DOWN,
    )  # fmt: skip
    assert code == 1
    assert "Traceback (most recent call last)" in err
    assert "ConnectionRefusedError" in err  # what the driver said, for diagnosis
    assert err.strip().splitlines()[-1].startswith("error: cannot use the database")
    assert PASSWORD not in out + err and SECRET_KEY not in out + err
    assert "│" not in err and "self = " not in err  # no local variables


@pytest.mark.parametrize(
    ("url", "named"),
    [
        (f"mysql://mailmoat:{PASSWORD}@127.0.0.1/mailmoat", "unsupported database URL"),
        (f"postgresql://mailmoat:{PASSWORD}@127.0.0.1:port/mailmoat", "does not parse"),
        (f"postgresql//mailmoat:{PASSWORD}@127.0.0.1/mailmoat", "does not parse"),
    ],
)
def test_a_malformed_database_url_is_a_bad_setting(url: str, named: str, data_dir: Path) -> None:
    code, out, err = cli("customers", "list", "--data-dir", str(data_dir), "--database-url", url)
    assert_one_line(code, out, err, "invalid setting --database-url", named)
    assert code == 2
    code, out, err = cli("keys", "list", "--customer", "a", MAILMOAT_DATABASE_URL=url)
    assert_one_line(code, out, err, "invalid setting MAILMOAT_DATABASE_URL", named)


def test_a_data_dir_that_cannot_be_created(tmp_path: Path) -> None:
    occupied = tmp_path / "a-file"
    occupied.write_text("not a directory")
    code, out, err = cli("customers", "list", "--data-dir", str(occupied / "var"))
    assert_one_line(code, out, err, "cannot create the data directory", str(occupied), "--data-dir")
    assert code == 1


def test_an_sqlite_file_that_cannot_be_opened(tmp_path: Path) -> None:
    occupied = tmp_path / "a-file"
    occupied.write_text("not a directory")
    url = f"sqlite:///{occupied}/mailmoat.db"
    code, out, err = cli(
        "queue", "--data-dir", str(tmp_path / "var"), "--database-url", url
    )  # fmt: skip
    assert_one_line(code, out, err, "cannot open the SQLite database", "--data-dir")


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("MAILMOAT_SMTP_TIMEOUT", "soon", "invalid setting MAILMOAT_SMTP_TIMEOUT: "),
        ("MAILMOAT_DELIVERY_CONCURRENCY", "0", "invalid setting MAILMOAT_DELIVERY_CONCURRENCY: "),
        ("MAILMOAT_DSN_RELAY", "relay.example", "invalid setting MAILMOAT_DSN_RELAY: "),
        ("MAILMOAT_SMTP_TLS_CERT", "/etc/cert.pem", "MAILMOAT_SMTP_TLS_KEY"),
    ],
)
def test_a_bad_setting_is_named_in_one_line(
    variable: str, value: str, named: str, data_dir: Path
) -> None:
    code, out, err = cli("customers", "list", "--data-dir", str(data_dir), **{variable: value})
    assert_one_line(code, out, err, named)
    assert code == 2


def test_a_bad_option_of_serve_is_named(data_dir: Path) -> None:
    code, out, err = cli("serve", "--data-dir", str(data_dir), "--smtp-listen", "localhost")
    assert_one_line(code, out, err, "invalid setting --smtp-listen: ", "HOST:PORT")


@pytest.mark.skipif(not PG_URL, reason="needs MAILMOAT_TEST_DATABASE_URL")
def test_a_database_that_does_not_exist_on_a_running_server(data_dir: Path) -> None:
    from sqlalchemy.engine import make_url

    assert PG_URL is not None
    url = make_url(PG_URL).set(password=PASSWORD, database="mailmoat_no_such_database")
    given = url.render_as_string(hide_password=False)
    code, out, err = cli("customers", "list", "--data-dir", str(data_dir), "--database-url", given)
    assert_one_line(code, out, err, "mailmoat_no_such_database", "does not exist", ":***@")


# `mailmoat serve`, as its own process


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def serve(
    data_dir: Path, *extra: str, api: int = 0, smtp: int = 0, **env: str
) -> tuple[int, str, str]:
    return process(
        "serve", "--data-dir", str(data_dir),
        "--api-listen", f"127.0.0.1:{api or free_port()}",
        "--smtp-listen", f"127.0.0.1:{smtp or free_port()}",
        *extra, **env,
    )  # fmt: skip


def test_serve_with_the_database_down(data_dir: Path) -> None:
    code, out, err = serve(data_dir, "--database-url", DOWN)
    assert_one_line(code, out, err, "cannot use the database", DOWN_SHOWN)


def test_serve_with_the_api_port_taken(data_dir: Path, taken_port: int) -> None:
    code, out, err = serve(data_dir, api=taken_port)
    line = assert_one_line(code, out, err, f"127.0.0.1:{taken_port}", "already in use")
    assert "API" in line and "--api-listen" in line
    assert out == ""  # nothing started: no banner, no first API key shown and lost


def test_serve_with_the_smtp_port_taken(data_dir: Path, taken_port: int) -> None:
    code, out, err = serve(data_dir, smtp=taken_port)
    line = assert_one_line(code, out, err, f"127.0.0.1:{taken_port}", "already in use")
    assert "SMTP" in line and "--smtp-listen" in line
    assert out == ""


def test_serve_with_missing_certificate_files(data_dir: Path, tmp_path: Path) -> None:
    cert, key = tmp_path / "missing-cert.pem", tmp_path / "missing-key.pem"
    code, out, err = serve(
        data_dir, MAILMOAT_SMTP_TLS_CERT=str(cert), MAILMOAT_SMTP_TLS_KEY=str(key)
    )
    assert_one_line(code, out, err, "STARTTLS certificate", str(cert), "MAILMOAT_SMTP_TLS_CERT")
