"""What every ``mailmoat`` subcommand shares: settings, options and running a service call."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from mailmoat.bootstrap import open_services
from mailmoat.config import Settings
from mailmoat.services.container import Services
from mailmoat.services.errors import ServiceError

err = Console(stderr=True)
T = TypeVar("T")

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="data directory [env MAILMOAT_DATA_DIR]")
]
DatabaseUrl = Annotated[
    str | None, typer.Option("--database-url", help="database URL [env MAILMOAT_DATABASE_URL]")
]


def make_settings(**overrides: Any) -> Settings:
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValueError as exc:
        err.print(f"[red]invalid setting:[/red] {exc}")
        raise typer.Exit(2) from None


def run(settings: Settings, action: Callable[[Services], Awaitable[T]]) -> T:
    async def main() -> T:
        async with open_services(settings) as services:
            return await action(services)

    try:
        return asyncio.run(main())
    except ServiceError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from None
