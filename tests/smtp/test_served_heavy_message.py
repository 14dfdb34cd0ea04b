"""A pathological message keeps ``mailmoat serve`` busy; its other clients still get answers."""

from __future__ import annotations

import smtplib
import threading
import time
from pathlib import Path

import httpx

from tests.dkim_keys import Key, signature
from tests.dnsserver import LocalDnsServer
from tests.served import serve
from tests.smtp.conftest import message
from tests.smtp.test_served import provision

FOLDED_LINES = 22_000
BODY_BYTES = 1024 * 1024
PROBE_LIMIT = 0.2  # seconds an API request or an EHLO may take meanwhile


def heavy_message(key: Key) -> bytes:
    """Signed by sender.test, with one header field folded over 22,000 lines (under 1 MiB)."""
    signed = (
        b"From: Alice <alice@sender.test>\r\nTo: bob@heavy.example\r\n"
        b"Subject: folded\r\nDate: Sun, 22 Nov 2026 10:00:00 +0000\r\n"
        b"Message-ID: <heavy@sender.test>\r\n"
    )
    folded = b"X-Folded: start\r\n" + b"".join(
        b"\tcontinuation line %05d of one long field\r\n" % n for n in range(FOLDED_LINES)
    )
    line = b"the body of a large message, one line after another\r\n"
    body = line * (BODY_BYTES // len(line))
    head = signature(signed + b"\r\n" + body, key, "sender.test") + signed + folded
    assert len(head) < 1024 * 1024
    return head + b"\r\n" + body


def test_a_long_folded_header_does_not_stall_other_clients(data_dir: Path, tmp_path: Path) -> None:
    key = Key(tmp_path)
    raw = heavy_message(key)
    assert b"\n." not in raw  # sent as it is, without dot-stuffing
    with LocalDnsServer() as dns:
        dns.zone["sel._domainkey.sender.test"] = {"TXT": [key.record]}
        env = {"MAILMOAT_DNS_SERVERS": f"127.0.0.1:{dns.port}", "MAILMOAT_DNS_TIMEOUT": "2"}
        with (
            serve(data_dir, env=env) as served,
            httpx.Client(base_url=served.base_url, timeout=10) as http,
            smtplib.SMTP("127.0.0.1", served.smtp_port, timeout=120) as smtp,
            smtplib.SMTP("127.0.0.1", served.smtp_port, timeout=10) as other,
        ):
            api = provision(served, "heavy.example")
            smtp.ehlo("sender.test")
            smtp.mail("alice@sender.test")
            smtp.rcpt("bob@heavy.example")
            smtp.putcmd("data")
            assert smtp.getreply()[0] == 354
            smtp.send(raw)
            # Everything but the final dot: once the server has read it (and answers
            # quickly again), what follows measures the handling of the message.
            settled = 0
            deadline = time.monotonic() + 15
            while settled < 5 and time.monotonic() < deadline:
                started = time.perf_counter()
                http.get("/healthz")
                settled = settled + 1 if time.perf_counter() - started < 0.05 else 0
                time.sleep(0.05)
            replies: list[tuple[int, bytes]] = []

            def finish() -> None:
                smtp.send(b".\r\n")
                replies.append(smtp.getreply())

            api_waits: list[float] = []
            ehlo_waits: list[float] = []
            sender = threading.Thread(target=finish)
            sender.start()
            while sender.is_alive():
                started = time.perf_counter()
                assert http.get("/healthz").status_code == 200
                api_waits.append(time.perf_counter() - started)
                started = time.perf_counter()
                assert other.ehlo("other.test")[0] == 250
                ehlo_waits.append(time.perf_counter() - started)
                time.sleep(0.005)
            sender.join()

            [(code, text)] = replies
            assert code == 250, text
            assert len(api_waits) >= 3
            assert max(api_waits) < PROBE_LIMIT, sorted(api_waits)[-5:]
            assert max(ehlo_waits) < PROBE_LIMIT, sorted(ehlo_waits)[-5:]
            [record] = api.get("/domains/heavy.example/messages").json()["messages"]
            assert record["subject"] == "folded"
            assert "dkim=pass" in record["authenticationResults"]


def test_header_limits_are_read_from_the_environment(data_dir: Path) -> None:
    env = {
        "MAILMOAT_AUTH_CHECKS": "false",
        "MAILMOAT_SMTP_MAX_HOPS": "2",
        "MAILMOAT_SMTP_MAX_HEADER_SIZE": "2048",
    }
    hops = "Received: from a by b\r\nReceived: from b by c\r\nReceived: from c by d\r\n"
    with (
        serve(data_dir, env=env) as served,
        smtplib.SMTP("127.0.0.1", served.smtp_port, timeout=10) as smtp,
    ):
        api = provision(served, "limits.example")
        to = "bob@limits.example"
        for extra, expected in ((hops, 554), (f"X-Pad: {'p' * 70}\r\n" * 30, 552), ("", 250)):
            try:
                smtp.sendmail("alice@sender.test", [to], message(to=to, extra_headers=extra))
                code = 250
            except smtplib.SMTPDataError as refused:
                code = refused.smtp_code
            assert code == expected
        log = api.get("/domains/limits.example/messages").json()["messages"]
        assert sorted(m["reason"] for m in log if m["state"] == "rejected") == [
            "header-size",
            "mail-loop",
        ]
