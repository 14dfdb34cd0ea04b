"""Passwords in URLs are masked in every log line, whichever handler writes it."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from mailmoat.redact import mask_log_handlers, mask_secrets


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql://mm:hunter2@db:5432/mm", "postgresql://mm:***@db:5432/mm"),
        ("at postgresql+asyncpg://mm:hunter2@db/mm.", "at postgresql+asyncpg://mm:***@db/mm."),
        ("redis://:hunter2@cache:6379/0", "redis://:***@cache:6379/0"),
        ("'http://u:hunter2@rspamd:11333'", "'http://u:***@rspamd:11333'"),
        ("postgresql://mm:hun@ter2@db/mm", "postgresql://mm:***@db/mm"),
        ("postgresql://mm:hun/ter2@db/mm", "postgresql://mm:***@db/mm"),
        ("postgresql://db/mm?user=mm&password=hunter2", "postgresql://db/mm?user=mm&password=***"),
        ("postgresql://mm@db/mm and http://example.com/a:b@c", None),
        ("no URL here: user:hunter2@example.com", None),
    ],
)
def test_mask_secrets(text: str, shown: str | None) -> None:
    assert mask_secrets(text) == (text if shown is None else shown)


@pytest.fixture
def own_logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger that, like uvicorn's, has its own handler and does not propagate."""
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    logger = logging.getLogger("tests.redact.own")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield logger, output
    logger.removeHandler(handler)


def test_log_lines_and_their_tracebacks_are_masked(
    own_logger: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, output = own_logger
    url = "postgresql://mm:hunter2@127.0.0.1:1/mm"
    mask_log_handlers()
    logger.error("cannot reach %s", url)
    logger.info("database: " + url)
    try:
        raise ConnectionError(f"connecting to {url} failed")
    except ConnectionError:
        logger.exception("claiming queued mail failed")
    text = output.getvalue()
    assert "hunter2" not in text
    assert text.count("postgresql://mm:***@127.0.0.1:1/mm") == 3
    assert "Traceback" in text and "claiming queued mail failed" in text
    logger.info("%d messages for %s", 3, "example.com")  # others untouched
    assert output.getvalue().endswith("3 messages for example.com\n")
