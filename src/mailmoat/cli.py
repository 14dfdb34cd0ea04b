"""The ``mailmoat`` command."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mailmoat.cli_common import Commands, DatabaseUrl, DataDir, Debug, err, make_settings, run
from mailmoat.cli_queue import queue_app
from mailmoat.config import Role
from mailmoat.redact import mask_log_handlers
from mailmoat.services.container import Services
from mailmoat.services.customers import CustomerView

# Typer's own exception display would print local variables: settings, URLs, keys.
app = typer.Typer(
    cls=Commands,
    help="mailmoat, the self-hosted inbound email gateway.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
customers_app = typer.Typer(
    help="Manage customers.", no_args_is_help=True, pretty_exceptions_enable=False
)
keys_app = typer.Typer(
    help="Manage API keys.", no_args_is_help=True, pretty_exceptions_enable=False
)
app.add_typer(customers_app, name="customers")
app.add_typer(keys_app, name="keys")
app.add_typer(queue_app, name="queue")


@app.callback()
def main(debug: Debug = False) -> None:
    """mailmoat, the self-hosted inbound email gateway."""
    mask_log_handlers()


def share_metrics(directory: Path) -> None:
    """Let several processes of one node count into one /metrics (prometheus_client's
    multiprocess mode, which reads this variable when it is first imported)."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


@app.command()
def serve(
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    api_listen: Annotated[str | None, typer.Option(help="HOST:PORT of the API")] = None,
    smtp_listen: Annotated[str | None, typer.Option(help="HOST:PORT of SMTP")] = None,
    role: Annotated[Role | None, typer.Option(help="what this process runs")] = None,
) -> None:
    """Migrate the schema and serve."""
    settings = make_settings(
        data_dir=data_dir,
        database_url=database_url,
        api_listen=api_listen,
        smtp_listen=smtp_listen,
        role=role,
    )
    if settings.smtp_processes > 1 and not settings.smtp_child:
        share_metrics(settings.metrics_dir)
    from mailmoat.app import event_loop_factory  # the web stack
    from mailmoat.app import serve as serve_gateway

    with (
        contextlib.suppress(KeyboardInterrupt),
        asyncio.Runner(loop_factory=event_loop_factory()) as runner,
    ):
        runner.run(serve_gateway(settings))


def customer_json(view: CustomerView) -> dict[str, Any]:
    return {
        "id": view.id,
        "handle": view.handle,
        "subscriptions": [
            {
                "handle": s.handle,
                "active": s.active,
                "domainLimit": s.domain_limit,
                "protectedAddressLimit": s.protected_address_limit,
                "domains": s.domain_count,
            }
            for s in view.subscriptions
        ],
    }


@customers_app.command("create")
def customers_create(
    handle: str,
    domain_limit: Annotated[int | None, typer.Option(help="maximum number of domains")] = None,
    protected_address_limit: Annotated[
        int | None, typer.Option(help="maximum number of filtered recipients")
    ] = None,
    subscription: Annotated[
        str | None, typer.Option(help="subscription handle (default: HANDLE)")
    ] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a customer with one subscription; prints it as JSON."""
    settings = make_settings(data_dir=data_dir, database_url=database_url)
    view = run(
        settings,
        lambda s: s.customers.create(
            handle,
            subscription_handle=subscription,
            domain_limit=domain_limit,
            protected_address_limit=protected_address_limit,
        ),
    )
    typer.echo(json.dumps(customer_json(view), indent=2))


@customers_app.command("list")
def customers_list(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """List customers and their subscriptions."""
    settings = make_settings(data_dir=data_dir, database_url=database_url)
    views = run(settings, lambda s: s.customers.all())
    if as_json:
        typer.echo(json.dumps([customer_json(v) for v in views], indent=2))
        return
    table = Table("customer", "subscription", "domains", "domain limit", "protected limit")
    for view in views:
        for sub in view.subscriptions:
            table.add_row(
                view.handle,
                sub.handle,
                str(sub.domain_count),
                "-" if sub.domain_limit is None else str(sub.domain_limit),
                "-" if sub.protected_address_limit is None else str(sub.protected_address_limit),
            )
    Console().print(table)


@keys_app.command("create")
def keys_create(
    customer: Annotated[str, typer.Option(help="customer handle")],
    description: Annotated[str, typer.Option(help="what the key is for")] = "",
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create an API key and print it (alone, once) on stdout."""
    settings = make_settings(data_dir=data_dir, database_url=database_url)

    async def create(s: Services) -> str:
        owner = await s.customers.get_by_handle(customer)
        return (await s.keys.create(owner.id, description)).token

    typer.echo(run(settings, create))


@keys_app.command("list")
def keys_list(
    customer: Annotated[str, typer.Option(help="customer handle")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """List a customer's API keys (never the keys themselves)."""
    settings = make_settings(data_dir=data_dir, database_url=database_url)

    async def list_keys(s: Services) -> list[Any]:
        owner = await s.customers.get_by_handle(customer)
        return await s.keys.of_customer(owner.id)

    table = Table("id", "prefix", "created", "description")
    for key in run(settings, list_keys):
        table.add_row(key.id, key.prefix + "…", key.created_at.isoformat(), key.description)
    Console().print(table)


@keys_app.command("delete")
def keys_delete(key_id: str, data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Delete any API key; its domains are no longer associated with any key, its unused
    login links are deleted and the console sessions started from its links end."""
    settings = make_settings(data_dir=data_dir, database_url=database_url)
    gone = run(settings, lambda s: s.keys.delete(key_id))
    released = ", ".join(gone.released) if gone.released else "none"
    for line in (
        f"deleted API key {key_id}",
        f"released domain associations: {released}",
        f"deleted {gone.links_deleted} unused login link(s), "
        f"ended {gone.sessions_ended} console session(s)",
    ):
        err.print(line, markup=False, highlight=False, soft_wrap=True)
