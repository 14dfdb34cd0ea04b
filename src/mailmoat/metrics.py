"""Prometheus metrics, served at ``/metrics`` by the API.

A process counts what it does. The extra SMTP processes of a node
(``MAILMOAT_SMTP_PROCESSES``) share their counts with the API process through
prometheus_client's multiprocess mode; separate ``mailmoat serve`` processes (other
roles, other nodes) are scraped one by one.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

REGISTRY = CollectorRegistry(auto_describe=True)


def shared() -> bool:
    return "PROMETHEUS_MULTIPROC_DIR" in os.environ


def exposition() -> bytes:
    """The text format of every metric of this node."""
    if not shared():
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def process_gone(pid: int) -> None:
    if shared():
        mark_process_dead(pid)  # type: ignore[no-untyped-call]


MESSAGES = Counter(
    "mailmoat_messages",
    "Messages handled, by verdict, action and the reason that decided",
    ["verdict", "action", "reason"],
    registry=REGISTRY,
)
SMTP_REPLIES = Counter(
    "mailmoat_smtp_replies",
    "SMTP replies sent, by command and reply code",
    ["command", "code"],
    registry=REGISTRY,
)
SMTP_SESSIONS = Gauge(
    "mailmoat_smtp_sessions", "Open SMTP sessions", multiprocess_mode="livesum", registry=REGISTRY
)
SCAN_SECONDS = Histogram(
    "mailmoat_scan_seconds",
    "Time to authenticate and scan one message",
    ["scanner"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "mailmoat_messages_by_state",
    "Messages in the message log by state (queued and deferred wait for delivery)",
    ["state"],
    multiprocess_mode="mostrecent",
    registry=REGISTRY,
)
DELIVERY_ATTEMPTS = Counter(
    "mailmoat_delivery_attempts",
    "Delivery attempts at one destination, by route and outcome",
    ["route", "outcome"],
    registry=REGISTRY,
)
DELIVERY_RESULTS = Counter(
    "mailmoat_delivery_recipients",
    "Recipients whose delivery ended, by route and result (delivered, failed)",
    ["route", "result"],
    registry=REGISTRY,
)
DELIVERY_SECONDS = Histogram(
    "mailmoat_delivery_seconds",
    "Time for one delivery attempt of one message, all destinations tried included",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)
DELIVERY_LEASES_LOST = Counter(
    "mailmoat_delivery_leases_lost",
    "Attempts whose outcome came after their lease had run out (possible duplicates)",
    registry=REGISTRY,
)
