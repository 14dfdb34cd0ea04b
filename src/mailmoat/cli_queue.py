"""``mailmoat queue``: what waits for delivery, retry now, drop."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from mailmoat.cli_common import DatabaseUrl, DataDir, err, make_settings, run
from mailmoat.db.queue_repo import DepthRow, Key
from mailmoat.services.container import Services

queue_app = typer.Typer(
    help="The delivery queue: depth, retry now, drop.",
    invoke_without_command=True,
    pretty_exceptions_enable=False,
)

MessageIds = Annotated[list[str] | None, typer.Argument(help="message ids", show_default=False)]
DomainOption = Annotated[str | None, typer.Option("--domain", help="every message of a domain")]
AllOption = Annotated[bool, typer.Option("--all", help="every waiting message")]


def _age(oldest: datetime) -> str:
    seconds = int((datetime.now(UTC) - oldest).total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 2 * 86400:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def depth_table(rows: list[DepthRow]) -> Table:
    table = Table("domain", "state", "messages", "oldest", title="delivery queue")
    states: dict[str, int] = {}
    for row in rows:
        table.add_row(row.domain, row.state, str(row.count), _age(row.oldest))
        states[row.state] = states.get(row.state, 0) + row.count
    if rows:
        table.add_section()
        for state, count in sorted(states.items()):
            table.add_row("[bold]all domains[/bold]", state, f"[bold]{count}[/bold]", "")
    return table


@queue_app.callback()
def queue_status(
    ctx: typer.Context, data_dir: DataDir = None, database_url: DatabaseUrl = None
) -> None:
    """Show how many messages wait, by domain and state (queued, deferred, in flight)."""
    if ctx.invoked_subcommand is not None:
        # `mailmoat queue --data-dir D retry …`: the subcommand uses these unless given its own.
        ctx.obj = {"data_dir": data_dir, "database_url": database_url}
        return
    settings = make_settings(data_dir=data_dir, database_url=database_url)
    rows = run(settings, lambda s: s.queue.depth())
    if not rows:
        Console().print("The delivery queue is empty.")
        return
    Console().print(depth_table(rows))


def _apply(
    ctx: typer.Context,
    verb: str,
    ids: list[str] | None,
    domain: str | None,
    everything: bool,
    data_dir: DataDir,
    database_url: DatabaseUrl,
) -> None:
    if not ids and domain is None and not everything:
        err.print("[red]error:[/red] name message ids, --domain DOMAIN or --all")
        raise typer.Exit(2)
    given = ctx.obj or {}
    settings = make_settings(
        data_dir=data_dir or given.get("data_dir"),
        database_url=database_url or given.get("database_url"),
    )

    async def action(s: Services) -> tuple[int, int]:
        keys: list[Key] = await s.queue.select(ids or [], domain)
        operation = s.queue.retry_now if verb == "retry" else s.queue.drop
        with Progress(console=err, transient=True, disable=len(keys) < 1000) as progress:
            task = progress.add_task(f"{verb}…", total=len(keys))
            done = await operation(keys, lambda n: progress.advance(task, n))
        return len(keys), done

    found, done = run(settings, action)
    past = "due now" if verb == "retry" else "dropped (now failed, no DSN sent)"
    err.print(f"{done} message{'s' if done != 1 else ''} {past}")
    if found > done or (ids and done < len(ids)):
        err.print("messages in flight or no longer queued were left alone")


@queue_app.command("retry")
def queue_retry(
    ctx: typer.Context,
    ids: MessageIds = None,
    domain: DomainOption = None,
    everything: AllOption = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Make waiting messages due now, instead of at their next scheduled retry."""
    _apply(ctx, "retry", ids, domain, everything, data_dir, database_url)


@queue_app.command("drop")
def queue_drop(
    ctx: typer.Context,
    ids: MessageIds = None,
    domain: DomainOption = None,
    everything: AllOption = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Remove waiting messages from the queue; they are marked failed in the log."""
    _apply(ctx, "drop", ids, domain, everything, data_dir, database_url)
