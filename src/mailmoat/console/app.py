"""The Domain Console's routes: thin handlers over services.console and its sessions.

Mounted at /console. Every page but the sign-in pages needs a session; every form
post needs the session's CSRF token. Errors are pages, not JSON.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

from fastapi import Depends, FastAPI, Form, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from mailmoat.console.rendering import HERE, SECURITY_HEADERS, page
from mailmoat.services.console import (
    LOG_STATES,
    MAX_DOWNSTREAM_ROWS,
    PAGE_SIZE,
    POLICIES,
    downstream_rows,
    list_action,
)
from mailmoat.services.console_sessions import DomainAdmin, LinkProblem
from mailmoat.services.container import Services
from mailmoat.services.domain_models import SettingsPatch
from mailmoat.services.errors import InvalidInput, ServiceError
from mailmoat.services.messages import MessageFilter

log = logging.getLogger(__name__)

COOKIE = "mailmoat_console"
MOUNT = "/console"

# Fixed notices shown after an action (never text taken from the request).
NOTICES = {
    "released": "Released: the message is on its way to your mail server.",
    "safelisted": "Sender added to the safelist, and the message released.",
    "blocked": "Sender added to the blocklist, and the message deleted.",
    "deleted": "Message deleted.",
    "reported-spam": "Thank you: reported as spam. Similar mail will score higher.",
    "reported-ham": "Thank you: reported as not spam. Similar mail will score lower.",
    "added": "Added to the list.",
    "removed": "Removed from the list.",
    "saved": "Settings saved.",
}
MESSAGE_ACTIONS = {
    "release": "released",
    "safelist": "safelisted",
    "block": "blocked",
    "delete": "deleted",
    "report-spam": "reported-spam",
    "report-ham": "reported-ham",
}


class SignInRequired(Exception):
    """No live session: the admin needs a new login link."""


class BadForm(Exception):
    """A form post without the session's CSRF token."""


def _services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


async def current_admin(request: Request) -> DomainAdmin:
    admin = await _services(request).console_sessions.resume(request.cookies.get(COOKIE))
    if admin is None:
        raise SignInRequired
    return admin


async def form_csrf(request: Request) -> str:
    """The form's CSRF token; "" when it has none (then the check refuses it)."""
    form = await request.form()
    value = form.get("csrf")
    return value if isinstance(value, str) else ""


Admin = Annotated[DomainAdmin, Depends(current_admin)]
Csrf = Annotated[str, Depends(form_csrf)]


def _check(request: Request, admin: DomainAdmin, token: str) -> None:
    if not _services(request).console_sessions.csrf_valid(admin, token):
        raise BadForm


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)


def _error_page(request: Request, status: int, title: str, message: str) -> HTMLResponse:
    return page(request, "error.html", {"title": title, "message": message, "admin": None}, status)


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


def _secure(request: Request) -> bool:
    return _services(request).console_policy.secure_cookies or request.url.scheme == "https"


def create_console(services: Services) -> FastAPI:
    console = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    console.state.services = services
    console.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @console.exception_handler(SignInRequired)
    async def sign_in_required(request: Request, _: SignInRequired) -> HTMLResponse:
        response = page(request, "signed_out.html", {"admin": None, "reason": "needed"}, 401)
        response.delete_cookie(COOKIE, path=MOUNT)
        return response

    @console.exception_handler(BadForm)
    async def bad_form(request: Request, _: BadForm) -> HTMLResponse:
        return _error_page(
            request,
            403,
            "This form has expired",
            "The form was not sent from your current console session. "
            "Go back, reload the page and try again.",
        )

    @console.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> HTMLResponse:
        titles = {404: "Not found", 409: "Not possible now", 403: "Not allowed"}
        return _error_page(
            request, exc.code, titles.get(exc.code, "That did not work"), exc.message
        )

    @console.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> HTMLResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors()
        )
        return _error_page(
            request, 400, "That did not work", f"The request is not valid: {problems}"
        )

    @console.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> HTMLResponse:
        log.exception("console page failed", exc_info=exc)
        return _error_page(
            request, 500, "Something went wrong", "The operator's log has the details."
        )

    @console.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> HTMLResponse:
        return _error_page(request, exc.status_code, "Not found", str(exc.detail))

    # -- signing in and out --------------------------------------------------------

    @console.get("/", response_model=None)
    async def home(request: Request) -> Response:
        admin = await services.console_sessions.resume(request.cookies.get(COOKIE))
        if admin is None:
            raise SignInRequired
        return _see_other(f"{MOUNT}/messages")

    @console.get("/login/{token}", response_class=HTMLResponse)
    async def login_page(request: Request, token: str) -> HTMLResponse:
        check = await services.console_sessions.check_link(token)
        if check.problem is not None:
            return _link_refused(request, check.problem)
        return page(request, "sign_in.html", {"admin": None, "domain": check.domain})

    @console.post("/login/{token}", response_model=None)
    async def login(request: Request, token: str) -> Response:
        if not _same_origin(request):
            raise BadForm  # another site posting someone's link: no session from it
        outcome = await services.console_sessions.sign_in(token, _client_ip(request))
        if isinstance(outcome, LinkProblem):
            return _link_refused(request, outcome)
        response = _see_other(f"{MOUNT}/messages")
        response.set_cookie(
            COOKIE,
            outcome.cookie,
            max_age=int(services.console_policy.session_max.total_seconds()),
            path=MOUNT,
            httponly=True,
            samesite="strict",
            secure=_secure(request),
        )
        return response

    @console.post("/logout", response_class=HTMLResponse)
    async def logout(request: Request, admin: Admin, csrf: Csrf) -> HTMLResponse:
        _check(request, admin, csrf)
        await services.console_sessions.sign_out(admin)
        response = page(request, "signed_out.html", {"admin": None, "reason": "logout"})
        response.delete_cookie(COOKIE, path=MOUNT)
        return response

    # -- the message log -------------------------------------------------------------

    @console.get("/messages", response_class=HTMLResponse)
    async def message_log(
        request: Request,
        admin: Admin,
        state: Annotated[str, Query(max_length=20)] = "",
        sender: Annotated[str, Query(max_length=320)] = "",
        recipient: Annotated[str, Query(max_length=320)] = "",
        subject: Annotated[str, Query(max_length=200)] = "",
        since: Annotated[str, Query(max_length=40)] = "",
        until: Annotated[str, Query(max_length=40)] = "",
        page_number: Annotated[int, Query(alias="page", ge=1, le=1_000_000)] = 1,
    ) -> HTMLResponse:
        wanted = MessageFilter(
            state=state or None,
            sender=sender.strip() or None,
            recipient=recipient.strip() or None,
            subject=subject.strip() or None,
            since=_date(since, "from"),
            until=_date(until, "until", end_of_day=True),
        )
        found, total = await services.console.log(admin, wanted, page_number)
        filters = {
            "state": state,
            "sender": sender,
            "recipient": recipient,
            "subject": subject,
            "since": since,
            "until": until,
        }
        return page(
            request,
            "messages.html",
            {
                "admin": admin,
                "messages": found,
                "filters": filters,
                "states": LOG_STATES,
                **_paging(page_number, total, filters),
            },
        )

    @console.get("/messages/{message_id}", response_class=HTMLResponse)
    async def message_page(
        request: Request,
        admin: Admin,
        message_id: str,
        done: Annotated[str, Query(max_length=40)] = "",
    ) -> HTMLResponse:
        detail = await services.console.message(admin, message_id)
        return page(
            request,
            "message.html",
            {"admin": admin, "detail": detail, "m": detail.message, "notice": NOTICES.get(done)},
        )

    @console.post("/messages/{message_id}/{action}", response_model=None)
    async def message_action(
        request: Request,
        admin: Admin,
        message_id: str,
        action: str,
        csrf: Csrf,
        back: Annotated[str, Form(max_length=20)] = "message",
    ) -> Response:
        _check(request, admin, csrf)
        if action not in MESSAGE_ACTIONS:
            raise InvalidInput(f"unknown action {action!r}")
        console_svc = services.console
        if action in ("release", "safelist"):
            await console_svc.release(admin, message_id, safelist=action == "safelist")
        elif action in ("delete", "block"):
            await console_svc.delete(admin, message_id, block=action == "block")
        else:
            await console_svc.report(admin, message_id, spam=action == "report-spam")
        done = MESSAGE_ACTIONS[action]
        if back == "quarantine":
            return _see_other(f"{MOUNT}/quarantine?done={done}")
        return _see_other(f"{MOUNT}/messages/{message_id}?done={done}")

    @console.get("/quarantine", response_class=HTMLResponse)
    async def quarantine_page(
        request: Request,
        admin: Admin,
        page_number: Annotated[int, Query(alias="page", ge=1, le=1_000_000)] = 1,
        done: Annotated[str, Query(max_length=40)] = "",
    ) -> HTMLResponse:
        found, total = await services.console.quarantine(admin, page_number)
        return page(
            request,
            "quarantine.html",
            {
                "admin": admin,
                "messages": found,
                "notice": NOTICES.get(done),
                "retention": services.console_policy.quarantine_retention,
                **_paging(page_number, total, {}),
            },
        )

    # -- lists -------------------------------------------------------------------------

    @console.get("/lists", response_class=HTMLResponse)
    async def lists_page(
        request: Request,
        admin: Admin,
        user: Annotated[str, Query(max_length=320)] = "",
        done: Annotated[str, Query(max_length=40)] = "",
    ) -> HTMLResponse:
        user = user.strip()
        safelist = await services.console.entries(admin, list_action("safelist"), user or None)
        blocklist = await services.console.entries(admin, list_action("blocklist"), user or None)
        return page(
            request,
            "lists.html",
            {
                "admin": admin,
                "user": user,
                "users": await services.console.users(admin),
                "lists": {"safelist": safelist, "blocklist": blocklist},
                "notice": NOTICES.get(done),
            },
        )

    @console.post("/lists/{change}", response_model=None)
    async def change_list(
        request: Request,
        admin: Admin,
        change: str,
        csrf: Csrf,
        list_name: Annotated[str, Form(alias="list", max_length=20)],
        item: Annotated[str, Form(max_length=320)],
        user: Annotated[str, Form(max_length=320)] = "",
    ) -> Response:
        _check(request, admin, csrf)
        action = list_action(list_name)
        if change == "add":
            await services.console.add(admin, action, item, user.strip() or None)
        elif change == "remove":
            await services.console.remove(admin, action, item, user.strip() or None)
        else:
            raise InvalidInput(f"unknown change {change!r}")
        query = urlencode({"user": user.strip(), "done": "added" if change == "add" else "removed"})
        return _see_other(f"{MOUNT}/lists?{query}")

    # -- settings ----------------------------------------------------------------------

    @console.get("/settings", response_class=HTMLResponse)
    async def settings_page(
        request: Request, admin: Admin, done: Annotated[str, Query(max_length=40)] = ""
    ) -> HTMLResponse:
        return page(
            request,
            "settings.html",
            {
                "admin": admin,
                "domain": await services.console.settings(admin),
                "policies": POLICIES,
                "rows": range(MAX_DOWNSTREAM_ROWS),
                "notice": NOTICES.get(done),
            },
        )

    @console.post("/settings", response_model=None)
    async def save_settings(
        request: Request,
        admin: Admin,
        csrf: Csrf,
        abuse_policy: Annotated[str, Form(max_length=20)],
        spam_header_name: Annotated[str, Form(max_length=100)],
        spam_header_value: Annotated[str, Form(max_length=998)],
    ) -> Response:
        _check(request, admin, csrf)
        patch = SettingsPatch(
            abuse_policy=abuse_policy,
            spam_header_name=spam_header_name.strip(),
            spam_header_value=spam_header_value.strip(),
        )
        await services.console.update_settings(admin, patch=patch)
        return _see_other(f"{MOUNT}/settings?done=saved")

    @console.post("/settings/downstreams", response_model=None)
    async def save_downstreams(request: Request, admin: Admin) -> Response:
        form = await request.form()
        _check(request, admin, str(form.get("csrf", "")))

        def field(name: str, n: int) -> str:
            value = form.get(f"{name}_{n}", "")
            return value if isinstance(value, str) else ""

        records = downstream_rows(
            [
                (field("target", n), field("port", n), field("priority", n), field("weight", n))
                for n in range(MAX_DOWNSTREAM_ROWS)
            ]
        )
        await services.console.update_settings(admin, downstreams=records)
        return _see_other(f"{MOUNT}/settings?done=saved")

    @console.get("/activity", response_class=HTMLResponse)
    async def activity_page(request: Request, admin: Admin) -> HTMLResponse:
        events = await services.console.activity(admin)
        return page(request, "activity.html", {"admin": admin, "events": events})

    return console


def _same_origin(request: Request) -> bool:
    """Whether a form post came from this console, as far as the browser tells.

    Browsers send Sec-Fetch-Site with every request; under the console's no-referrer
    policy their Origin is "null", so Sec-Fetch-Site decides when present. Clients
    that send neither header (scripts, tests) are not browsers being misled.
    """
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site == "same-origin"
    origin = request.headers.get("origin")
    if origin is None:
        return True
    if origin == "null":
        return False
    return urlsplit(origin).netloc == request.headers.get("host", "")


def _link_refused(request: Request, problem: LinkProblem) -> HTMLResponse:
    status = 404 if problem is LinkProblem.UNKNOWN else 410
    return page(request, "link_refused.html", {"admin": None, "problem": problem.value}, status)


def _date(value: str, field: str, *, end_of_day: bool = False) -> datetime | None:
    """A date (YYYY-MM-DD) or date and time from a filter field, taken as UTC."""
    value = value.strip()
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{field} must be a date like 2026-11-22") from None
    if end_of_day and len(value) == 10:
        moment = moment.replace(hour=23, minute=59, second=59, microsecond=999999)
    return moment


def _paging(number: int, total: int, filters: dict[str, str]) -> dict[str, Any]:
    pages = max(1, -(-total // PAGE_SIZE))
    kept = {k: v for k, v in filters.items() if v}

    def link(n: int) -> str:
        return "?" + urlencode({**kept, "page": n})

    return {
        "total": total,
        "page": number,
        "pages": pages,
        "previous": link(number - 1) if number > 1 else None,
        "next": link(number + 1) if number < pages else None,
    }
