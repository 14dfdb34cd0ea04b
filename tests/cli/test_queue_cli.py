"""``mailmoat queue`` against a running gateway whose downstream is down."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from mailmoat.cli import app
from tests.delivery.load import send_many
from tests.delivery.test_served_delivery import QUICK, RECIPIENT, route_to, wait_until
from tests.downstream import Downstream
from tests.served import serve

runner = CliRunner()
SLOW_RETRIES = {
    **QUICK,
    "MAILMOAT_DELIVERY_RETRY_FIRST": "3600",
    "MAILMOAT_DELIVERY_RETRY_MAX": "3600",
}


def test_queue_shows_depth_retries_now_and_drops(data_dir: Path) -> None:
    with Downstream() as sink, serve(data_dir, env=SLOW_RETRIES) as served:
        route_to(served, sink)
        sink.stop()
        acknowledged = send_many(served.smtp_port, RECIPIENT, 3, sessions=1, tag="queue")
        assert len(acknowledged) == 3
        api = httpx.Client(
            base_url=f"{served.base_url}/inbound/v1", headers={"X-API-Key": served.api_key}
        )

        def states() -> list[str]:
            found = api.get("/domains/example.com/messages").json()["messages"]
            return [m["state"] for m in found]

        wait_until(lambda: states() == ["deferred"] * 3, 10, "three deferred messages")
        shown = runner.invoke(app, ["queue", "--data-dir", str(data_dir)])
        assert shown.exit_code == 0, shown.output
        assert "example.com" in shown.output and "deferred" in shown.output
        assert "3" in shown.output

        oldest = api.get("/domains/example.com/messages").json()["messages"][-1]["id"]
        dropped = runner.invoke(app, ["queue", "drop", oldest, "--data-dir", str(data_dir)])
        assert dropped.exit_code == 0, dropped.output
        assert "1 message dropped" in dropped.output
        record = api.get(f"/messages/{oldest}").json()
        assert record["state"] == "failed"
        assert "removed from the queue by the operator" in record["deliveries"][0]["reply"]

        sink.start()
        time.sleep(0.5)
        assert sink.received() == []  # the next retry is an hour away
        # Options may come before the subcommand too.
        retried = runner.invoke(app, ["queue", "--data-dir", str(data_dir), "retry", "--all"])
        assert retried.exit_code == 0, retried.output
        assert "2 messages due now" in retried.output
        sink.wait_for(2)
        wait_until(lambda: sorted(states()) == ["delivered", "delivered", "failed"], 10, "delivery")

        empty = runner.invoke(app, ["queue", "--data-dir", str(data_dir)])
        assert "queue is empty" in empty.output


def test_queue_commands_need_something_to_act_on(data_dir: Path) -> None:
    result = runner.invoke(app, ["queue", "retry", "--data-dir", str(data_dir)])
    assert result.exit_code == 2
    assert "name message ids, --domain DOMAIN or --all" in result.output
