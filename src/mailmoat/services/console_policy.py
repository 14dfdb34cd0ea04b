"""How long Domain Console sessions and quarantined mail last."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True, slots=True)
class ConsolePolicy:
    session_idle: timedelta = timedelta(minutes=30)
    session_max: timedelta = timedelta(hours=12)
    quarantine_retention: timedelta = timedelta(days=7)
    # Cookies carry the Secure flag when the console is reached over https.
    secure_cookies: bool = False
