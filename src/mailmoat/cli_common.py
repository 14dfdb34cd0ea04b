"""What every ``mailmoat`` subcommand shares: settings, options, running a service call and
telling failures in one line."""

from __future__ import annotations

import asyncio
import sys
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import click
import typer
from pydantic import ValidationError
from rich.console import Console
from typer.core import TyperGroup

from mailmoat.bootstrap import open_services
from mailmoat.config import Settings
from mailmoat.failures import DATABASE_ERRORS, OperatorError, database_failure, reason
from mailmoat.redact import mask_secrets
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
Debug = Annotated[
    bool, typer.Option("--debug", help="on failure, print the traceback too (no variables)")
]


class Commands(TyperGroup):
    """The ``mailmoat`` command: any failure ends it with one line on stderr and a non-zero
    exit code; never a traceback unless ``--debug`` asks for one, never a password."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            if ctx.params.get("debug"):
                sys.stderr.write(mask_secrets("".join(traceback.format_exception(exc))))
            if isinstance(exc, OperatorError):
                message, code = exc.message, exc.exit_code
            elif isinstance(exc, OSError):
                message, code = f"{reason(exc)} (mailmoat --debug … shows where)", 1
            else:
                message = (
                    f"unexpected {type(exc).__name__}: {reason(exc)} "
                    "(mailmoat --debug … prints the traceback)"
                )
                code = 1
            click.echo(click.style("error:", fg="red") + " " + message, err=True)
            raise typer.Exit(code) from None


def _setting_name(field: str, given: dict[str, Any]) -> str:
    if field in given:
        return "--" + field.replace("_", "-")
    return "MAILMOAT_" + field.upper()


def make_settings(**overrides: Any) -> Settings:
    """Settings from the options given and MAILMOAT_* variables; bad values are told in
    one line naming each setting (pydantic's copy of the value left out)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False, include_input=False):
            problem = error["msg"].removeprefix("Value error, ")
            if error["loc"]:
                name = _setting_name(str(error["loc"][0]), given)
                problems.append(f"invalid setting {name}: {problem}")
            else:
                problems.append(f"invalid settings: {problem}")
        raise OperatorError("; ".join(problems), exit_code=2) from exc


def run(settings: Settings, action: Callable[[Services], Awaitable[T]]) -> T:
    async def main() -> T:
        async with open_services(settings) as services:
            return await action(services)

    try:
        return asyncio.run(main())
    except ServiceError as exc:
        raise OperatorError(exc.message) from exc
    except DATABASE_ERRORS as exc:
        raise database_failure(exc, settings.effective_database_url) from exc
