"""The Domain Console in a real browser: what a domain admin sees and what follows.

Each test drives Chromium against the console served by uvicorn on loopback, with
mail arriving over SMTP and delivered by the worker to a downstream sink.
"""

from __future__ import annotations

import struct
from pathlib import Path

from playwright.async_api import Locator, Page, expect

from tests.api.helpers import provision_names
from tests.browser.conftest import DESKTOP, PHONE, Browsing
from tests.conftest import Tenant, TenantFactory
from tests.delivery.conftest import Mailroom, mx
from tests.downstream import Downstream
from tests.smtp.conftest import DOMAIN, GTUBE, message

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "console"
SENDER = "alice@sender.test"
OTHER_RCPT = "bob@other.example"
FOREIGN = "bob@foreign.example"


def spam(subject: str, message_id: str | None = None, **kwargs: str) -> str:
    return message(subject, body=f"Act now!\r\n{GTUBE}\r\n", message_id=message_id, **kwargs)


async def quarantined(mailroom: Mailroom, subject: str, message_id: str | None = None) -> str:
    found = await mailroom.send(spam(subject, message_id))
    record = await mailroom.record(found)
    assert (record["state"], record["reason"]) == ("quarantined", "spam-score"), record
    return found


def section(page: Page, heading: str) -> Locator:
    return page.locator("section.card").filter(
        has=page.get_by_role("heading", name=heading, exact=True)
    )


async def test_release_from_quarantine_delivers_the_message(
    browsing: Browsing, mailroom: Mailroom, downstream: Downstream
) -> None:
    subject = "Invoice 4711 is overdue"
    header_id = "<release-4711@sender.test>"
    message_id = await quarantined(mailroom, subject, header_id)

    page = await browsing.signed_in_page()
    await page.get_by_role("link", name="Quarantine", exact=True).click()
    await expect(page.get_by_role("heading", name="Quarantine")).to_be_visible()
    card = page.locator("li.card").filter(has_text=subject)
    await expect(card).to_have_count(1)
    await expect(card.locator(".countdown")).to_have_text("deleted in 6 days 23 hours")
    await expect(card).to_contain_text("spam-score")
    for label in ("Release", "Safelist sender", "Block sender", "Delete"):
        await expect(card.get_by_role("button", name=f"{label} ({subject})")).to_be_visible()

    await card.get_by_role("button", name=f"Release ({subject})", exact=True).click()
    await expect(page.get_by_role("status")).to_have_text(
        "Released: the message is on its way to your mail server."
    )
    await expect(page.locator("li.card")).to_have_count(0)
    await expect(page.get_by_text("Nothing in quarantine.")).to_be_visible()

    # The customer's mail server gets it, once.
    [received] = await downstream.wait_for_async(1)
    assert received.message_id == header_id
    assert f"Subject: {subject}".encode() in received.data
    assert received.recipients == [f"bob@{DOMAIN}"]
    await mailroom.wait_state(message_id, "delivered")

    # The log and the message page say so; the history names the release.
    await page.get_by_role("link", name="Messages", exact=True).click()
    row = page.locator("table.log tbody tr").filter(has_text=subject)
    await expect(row).to_have_count(1)
    await expect(row.locator(".badge")).to_have_text("delivered")
    await row.get_by_role("link", name=subject).click()
    await expect(page).to_have_url(browsing.server.url(f"/console/messages/{message_id}"))
    await expect(page.get_by_role("heading", name=subject, level=1)).to_be_visible()
    await expect(page.locator("p .badge")).to_have_text("delivered")
    await expect(page.locator(".countdown")).to_have_count(0)
    await expect(page.get_by_role("button", name=f"Release ({subject})")).to_have_count(0)
    history = section(page, "History")
    await expect(history.locator("li").filter(has_text="released")).to_have_count(1)
    await expect(history).to_contain_text("example.com admin (console session")
    delivery = section(page, "Delivery")
    await expect(delivery).to_contain_text(f"bob@{DOMAIN}")
    attempt = delivery.locator("table.attempts tbody tr")
    await expect(attempt).to_have_count(1)
    await expect(attempt).to_contain_text(f"[127.0.0.1]:{downstream.port}")
    await expect(attempt.locator("td[data-label=Outcome]")).to_have_text("delivered")
    browsing.assert_no_problems()


async def test_a_used_login_link_is_refused(browsing: Browsing, mailroom: Mailroom) -> None:
    link = await browsing.login_link()
    admin = await browsing.page()
    late = await browsing.page()  # someone else holding the same link

    # Only opening the link (as mail scanners do) does not use it.
    for page in (late, admin):
        opened = await page.goto(link)
        assert opened is not None and opened.status == 200
        await expect(page.get_by_role("heading", name=f"Sign in to {DOMAIN}")).to_be_visible()
    await browsing.sign_in(admin, link)

    # The page opened before the link was used: continuing is refused now.
    await late.get_by_role("button", name="Continue to the console").click()
    await expect(
        late.get_by_role("heading", name="This login link has already been used")
    ).to_be_visible()

    # A fresh browser opening the link again: refused, with no session.
    fresh = await browsing.page()
    opened = await fresh.goto(link)
    assert opened is not None and opened.status == 410
    await expect(
        fresh.get_by_role("heading", name="This login link has already been used")
    ).to_be_visible()
    await expect(fresh.get_by_text("Nobody was signed in.")).to_be_visible()
    await expect(fresh.get_by_role("button", name="Continue to the console")).to_have_count(0)

    for page in (fresh, late):
        shown = await page.goto("/console/messages")
        assert shown is not None and shown.status == 401
        await expect(page.get_by_role("heading", name="Please sign in")).to_be_visible()
        await expect(page.get_by_role("heading", name=f"Messages for {DOMAIN}")).to_have_count(0)
        await expect(page.get_by_role("link", name="Quarantine")).to_have_count(0)
        assert not [c for c in await page.context.cookies() if c["name"] == "mailmoat_console"]

    # The admin who used it first is still signed in, until signing out.
    await admin.reload()
    await expect(admin.get_by_role("heading", name=f"Messages for {DOMAIN}")).to_be_visible()
    await admin.get_by_role("button", name="Sign out").click()
    await expect(admin.get_by_role("heading", name="You are signed out")).to_be_visible()
    await admin.goto("/console/quarantine")
    await expect(admin.get_by_role("heading", name="Please sign in")).to_be_visible()
    browsing.assert_no_problems()


async def test_a_domain_admin_never_sees_another_domains_mail(
    browsing: Browsing,
    mailroom: Mailroom,
    downstream: Downstream,
    tenant: Tenant,
    make_tenant: TenantFactory,
) -> None:
    # other.example: the same customer's second domain; foreign.example: another customer's.
    await provision_names(tenant.client, tenant.subscription, "other.example")
    await mailroom.route(mx(downstream.port), domain="other.example")
    foreign = await make_tenant("globex")
    await provision_names(foreign.client, foreign.subscription, "foreign.example")

    mine = "Minutes of the example.com meeting"
    await mailroom.send(message(mine))
    secrets = {
        "other.example": ["Other payroll figures", "Other quarantined offer"],
        "foreign.example": ["Foreign merger plans"],
    }
    await send_to(mailroom, "other.example", message(secrets["other.example"][0], to=OTHER_RCPT))
    await send_to(mailroom, "other.example", spam(secrets["other.example"][1], to=OTHER_RCPT))
    await send_to(mailroom, "foreign.example", message(secrets["foreign.example"][0], to=FOREIGN))
    theirs = {m["subject"]: m["id"] for m in await mailroom.gateway.messages("other.example")}
    response = await foreign.client.get("/domains/foreign.example/messages")
    assert response.status_code == 200, response.text
    theirs |= {m["subject"]: m["id"] for m in response.json()["messages"]}
    hidden = [s for subjects in secrets.values() for s in subjects]
    assert sorted(theirs) == sorted(hidden)

    page = await browsing.signed_in_page()
    await expect(page.locator("table.log tbody tr")).to_have_count(1)
    await expect(page.locator("table.log tbody tr")).to_contain_text(mine)
    await expect(page.get_by_text("1 message.", exact=False)).to_be_visible()
    await assert_hidden(page, hidden)

    await page.goto("/console/messages?subject=Other")
    await expect(page.get_by_text("No messages match.")).to_be_visible()
    await page.goto("/console/quarantine")
    await expect(page.get_by_text("Nothing in quarantine.")).to_be_visible()
    await assert_hidden(page, hidden)

    for subject, message_id in theirs.items():
        shown = await page.goto(f"/console/messages/{message_id}")
        assert shown is not None and shown.status == 404, subject
        await expect(page.get_by_role("heading", name="Not found")).to_be_visible()
        await assert_hidden(page, hidden)

    # Acting on the other domain's quarantined mail with this session's own form token.
    await page.goto("/console/lists")
    csrf = await page.locator("input[name=csrf]").first.input_value()
    target = theirs[secrets["other.example"][1]]
    for action in ("release", "delete"):
        answer = await page.request.post(
            browsing.server.url(f"/console/messages/{target}/{action}"),
            form={"csrf": csrf, "back": "quarantine"},
            max_redirects=0,
        )
        assert answer.status == 404, (action, answer.status)
        assert secrets["other.example"][1] not in await answer.text()
    assert (await mailroom.record(target))["state"] == "quarantined"

    # The hidden mail is there, for the admin of other.example.
    other = await browsing.signed_in_page("other.example")
    for subject in secrets["other.example"]:
        await expect(other.locator("table.log").get_by_text(subject)).to_be_visible()
    await assert_hidden(other, [mine, *secrets["foreign.example"]])
    browsing.assert_no_problems()


async def send_to(mailroom: Mailroom, domain: str, content: str) -> None:
    errors, reply = await mailroom.gateway.send(content, recipients=[f"bob@{domain}"])
    assert errors == {} and reply.startswith("2"), reply


async def assert_hidden(page: Page, subjects: list[str]) -> None:
    html = await page.content()
    for subject in subjects:
        assert subject not in html, f"{subject!r} shown at {page.url}"
        await expect(page.get_by_text(subject)).to_have_count(0)


async def test_safelisting_a_sender_on_the_lists_page_lets_their_mail_through(
    browsing: Browsing, mailroom: Mailroom, downstream: Downstream
) -> None:
    first = await quarantined(mailroom, "Weekly newsletter #1")

    page = await browsing.signed_in_page()
    await page.get_by_role("link", name="Lists", exact=True).click()
    await expect(page.get_by_role("heading", name=f"Lists for {DOMAIN}")).to_be_visible()
    safelist = page.locator("section#safelist")
    await expect(safelist.get_by_text("Empty.")).to_be_visible()
    await safelist.get_by_label("Add to the safelist").fill(SENDER)
    await safelist.get_by_role("button", name="Add", exact=True).click()
    await expect(page.get_by_role("status")).to_have_text("Added to the list.")
    safelist = page.locator("section#safelist")
    await expect(safelist.locator("ul.entries li")).to_have_count(1)
    await expect(safelist.locator("ul.entries li")).to_contain_text(SENDER)
    await expect(
        safelist.get_by_role("button", name=f"Remove {SENDER} from the safelist")
    ).to_be_visible()
    await expect(page.locator("section#blocklist").get_by_text("Empty.")).to_be_visible()

    header_id = "<newsletter-2@sender.test>"
    second = await mailroom.send(spam("Weekly newsletter #2", header_id), sender=SENDER)
    [received] = await downstream.wait_for_async(1)
    assert received.message_id == header_id
    record = await mailroom.wait_state(second, "delivered")
    assert (record["reason"], record["verdict"], record["score"]) == (
        "domain-safelist",
        "unscanned",
        None,
    ), record
    assert (await mailroom.record(first))["state"] == "quarantined"  # the list is no release

    await page.goto(f"/console/messages/{second}")
    verdict = section(page, "Verdict")
    await expect(verdict.locator("dt:has-text('Decided by') + dd")).to_have_text("domain-safelist")
    await expect(verdict.locator("dt:has-text('Score') + dd")).to_have_text("not scanned")
    await expect(page.locator("p .badge")).to_have_text("delivered")
    browsing.assert_no_problems()


async def test_screenshots_of_the_log_and_the_quarantine(
    browsing: Browsing, mailroom: Mailroom, downstream: Downstream
) -> None:
    delivered = [
        await mailroom.send(message(subject, sender=f"{name} <{address}>"), sender=address)
        for subject, name, address in [
            ("Lunch on Friday", "Alice", SENDER),
            ("Quarterly report, final version", "Bob Builder", "bob@partner.test"),
            ("Re: your order 10-4471 has shipped", "Shop", "orders@shop.test"),
        ]
    ]
    held = ["You have WON a prize!!!", "Cheap watches, today only"]
    for subject in held:
        await quarantined(mailroom, subject)
    await downstream.wait_for_async(len(delivered))
    for message_id in delivered:
        await mailroom.wait_state(message_id, "delivered")

    desktop = await browsing.signed_in_page()
    session = await desktop.context.storage_state()
    phone = await browsing.page(
        viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2, storage_state=session
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shots: list[tuple[Path, int]] = []
    for page, size, scale in ((desktop, "desktop", 1), (phone, "phone", 2)):
        width = (DESKTOP if size == "desktop" else PHONE)["width"]
        await page.goto("/console/messages")
        await expect(page.locator("table.log tbody tr")).to_have_count(5)
        await expect(page.get_by_text("You have WON a prize!!!")).to_be_visible()
        await assert_fits(page, width)
        shots.append((await screenshot(page, f"message-log-{size}.png"), width * scale))

        await page.goto("/console/quarantine")
        await expect(page.locator("li.card")).to_have_count(len(held))
        for subject in held:
            card = page.locator("li.card").filter(has_text=subject)
            await expect(card.get_by_role("button", name=f"Release ({subject})")).to_be_visible()
            await expect(card.locator(".countdown")).to_contain_text("deleted in 6 days")
        await assert_fits(page, width)
        shots.append((await screenshot(page, f"quarantine-{size}.png"), width * scale))

    for path, width in shots:
        assert path.is_file() and path.stat().st_size > 0, path
        assert png_width(path) == width, path
    browsing.assert_no_problems()


async def screenshot(page: Page, name: str) -> Path:
    path = ARTIFACTS / name
    path.unlink(missing_ok=True)
    await page.screenshot(path=str(path), full_page=True)
    return path


async def assert_fits(page: Page, width: int) -> None:
    """No sideways scrolling: the page is no wider than the screen."""
    scroll_width = await page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= width, f"{page.url} is {scroll_width}px wide on a {width}px screen"


def png_width(path: Path) -> int:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return int(struct.unpack(">I", head[16:20])[0])
