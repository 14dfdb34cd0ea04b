"""Passwords in URLs (database, Redis, scanners) never reach a log line or the terminal.

``mask_secrets`` replaces the password of every ``scheme://user:password@host`` and
every ``password=`` query parameter in a text with ``***``. ``MaskSecrets`` applies it to
log records, their arguments and tracebacks included; ``mask_log_handlers`` installs it
on every handler the process has (the root logger's and uvicorn's own).
"""

from __future__ import annotations

import logging
import re

MASK = "***"

# A password runs from "user:" to the last "@" of the token (passwords may hold "@" or
# "/" when their owner forgot to percent-encode them: masking too much is harmless).
_USERINFO = re.compile(r"""(\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'"]*:)[^\s'"]*@""")
_QUERY = re.compile(r"""([?&]password=)[^&#\s'"]*""", re.IGNORECASE)


def mask_secrets(text: str) -> str:
    """``text`` with the passwords of the URLs in it replaced by ``***``."""
    if "password=" not in text.lower() and "://" not in text:
        return text
    return _QUERY.sub(rf"\g<1>{MASK}", _USERINFO.sub(rf"\g<1>{MASK}@", text))


class MaskSecrets(logging.Filter):
    """Masks passwords in URLs in every record that passes through (never drops one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit: the handler reports it
            return True
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, ()
            if "color_message" in record.__dict__:  # uvicorn's coloured variant
                record.color_message = masked
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_secrets(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_secrets(record.stack_info)
        return True


_FILTER = MaskSecrets()


def mask_log_handlers() -> None:
    """Install the mask on every handler of every logger configured so far (and on the
    handler of last resort, which prints warnings when none is configured).

    Called again after a library (uvicorn) configures handlers of its own.
    """
    handlers = [logging.lastResort] if logging.lastResort else []
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        if isinstance(logger, logging.Logger):
            handlers += logger.handlers
    for handler in handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
