"""Failures the operator can fix, each told in one line: what failed, where, what to do.

Raised where the failure happens (opening the database, binding a port, loading a
certificate); the command line prints the message alone, passwords masked.
"""

from __future__ import annotations

import errno
import socket

from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from mailmoat.redact import mask_secrets

DATABASE_ERRORS = (SQLAlchemyError, ConnectionError, TimeoutError, socket.gaierror)
"""What a database that is down, unreachable or refusing mailmoat raises."""


class OperatorError(Exception):
    """A failure of the installation (settings, database, ports, files), not of mailmoat."""

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(mask_secrets(message))
        self.exit_code = exit_code

    @property
    def message(self) -> str:
        return str(self)


def reason(exc: BaseException) -> str:
    """The first line of what an exception says, without SQLAlchemy's wrapping."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror + (f": {exc.filename}" if exc.filename else "")
    else:
        text = str(exc) or type(exc).__name__
    lines = text.strip().splitlines()
    return mask_secrets(lines[0] if lines else type(exc).__name__)


def masked_url(url: str) -> str:
    """A URL fit to show: its password replaced by ``***``."""
    try:
        # mask_secrets too: a password holding an unencoded "@" ends early for make_url.
        return mask_secrets(make_url(url).render_as_string(hide_password=True))
    except (SQLAlchemyError, ValueError):
        return mask_secrets(url)


def database_failure(exc: BaseException, url: str) -> OperatorError:
    parsed = masked_url(url)
    if parsed.startswith("sqlite"):
        return OperatorError(
            f"cannot open the SQLite database {parsed}: {reason(exc)}; check that the data "
            "directory (--data-dir, MAILMOAT_DATA_DIR) is writable and has free space"
        )
    return OperatorError(
        f"cannot use the database {parsed}: {reason(exc)}; check that it is running and "
        "reachable and that --database-url (MAILMOAT_DATABASE_URL) is right"
    )


def data_dir_failure(exc: OSError, path: object) -> OperatorError:
    return OperatorError(
        f"cannot create the data directory {path}: {exc.strerror or reason(exc)}; "
        "choose a writable one with --data-dir (MAILMOAT_DATA_DIR)"
    )


def listen_failure(service: str, address: str, option: str, exc: OSError) -> OperatorError:
    """``service`` (API, SMTP) could not listen on ``address``, set by ``option``."""
    if exc.errno == errno.EADDRINUSE:
        return OperatorError(
            f"cannot listen for {service} on {address}: the port is already in use; stop "
            f"the program using it or choose another address with {option}"
        )
    return OperatorError(
        f"cannot listen for {service} on {address}: {reason(exc)}; "
        f"choose another address with {option}"
    )
