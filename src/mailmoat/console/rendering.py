"""Templates, the filters they use, and the headers every console page carries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

HERE = Path(__file__).parent

# No scripts at all; forms post to the console only; the page cannot be framed; the
# login-link token in the address never leaves in a Referer header.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def when(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def countdown(moment: datetime | None, now: datetime | None = None) -> str:
    """'6 days 23 hours', '41 minutes': how long until ``moment``."""
    if moment is None:
        return ""
    left = moment - (now or datetime.now(UTC))
    if left <= timedelta(0):
        return "any moment now"
    days, rest = divmod(int(left.total_seconds()), 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = []
    if days:
        parts.append(_plural(days, "day"))
    if hours and len(parts) < 2:
        parts.append(_plural(hours, "hour"))
    if not days and (minutes or not parts):
        parts.append(_plural(max(minutes, 1), "minute"))
    return " ".join(parts)


def _plural(count: int, unit: str) -> str:
    return f"{count} {unit}" if count == 1 else f"{count} {unit}s"


def size(value: int) -> str:
    for unit in ("bytes", "KiB", "MiB"):
        if value < 1024 or unit == "MiB":
            return f"{value} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value = value / 1024  # type: ignore[assignment]
    return str(value)


templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.filters.update(when=when, countdown=countdown, size=size)


def page(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    response = templates.TemplateResponse(
        request, name, context, status_code=status_code, headers=SECURITY_HEADERS
    )
    return response
