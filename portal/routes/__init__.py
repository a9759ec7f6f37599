"""One blueprint per page area."""

from datetime import UTC, datetime
from functools import wraps
from typing import NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import Response, abort, current_app, jsonify, render_template, request
from flask_login import current_user, login_required
from flask_wtf.csrf import CSRFError
from htmx_flask import make_response
from sqlalchemy.orm.exc import StaleDataError
from werkzeug.exceptions import Conflict, HTTPException
from werkzeug.routing import IntegerConverter

from portal import diagnostics
from portal.extensions import db
from portal.models import utcnow
from portal.sync.policy import integration_of
from portal.sync.recurrence_text import describe


def register_blueprints(app):
    # Here, not at the top: each page area imports `render` and the access helpers from this package.
    from portal.routes import api, auth, calendar, helpdesk, profile, settings

    # Before any rule is added: an id no database integer can hold matches no page (404), not a 500.
    app.url_map.converters["int"] = DatabaseIdConverter
    app.register_blueprint(auth.bp)
    app.register_blueprint(calendar.bp)
    app.register_blueprint(settings.bp)
    app.register_blueprint(profile.bp)
    app.register_blueprint(helpdesk.bp)
    app.register_blueprint(api.bp)
    app.add_url_rule("/", endpoint="index", view_func=calendar.index)
    register_error_pages(app)
    register_filters(app)


ERROR_TEXTS = {
    400: ("Bad request", "The request could not be understood."),
    403: ("Forbidden", "Your role does not give access to this page."),
    404: ("Not found", "There is nothing here, or it is not yours to see."),
    405: ("Method not allowed", "This address does not accept that kind of request."),
    409: ("Changed meanwhile", "It changed while you were saving it; nothing was saved. Reload it and make "
                               "your change again."),
    413: ("Too large", "The upload is larger than allowed."),
}



def refuse_with(code: int, message: str) -> NoReturn:
    """Answer a page request with the error page and this reason in words (the error handlers show the
    standard text for the code)."""
    abort(Response(render_template("errors.html", code=code, title=ERROR_TEXTS[code][0], message=message),
                   status=code))

class DatabaseIdConverter(IntegerConverter):
    """`<int:...>` in URLs: at most 18 digits, so every id fits a 64-bit database integer. Longer ones match
    no address at all (404 whatever the method; a converter refusing a value would make PATCH answer 405)."""

    regex = r"\d{1,18}"


def register_error_pages(app):

    def render_error(exc):
        code = getattr(exc, "code", 500) or 500
        title, message = ERROR_TEXTS.get(code, (getattr(exc, "name", "Error"), ""))
        if request.path.startswith("/api/"):  # API clients get JSON, also for addresses no route matches
            return jsonify({"error": getattr(exc, "description", None) or message or title}), code
        if isinstance(exc, CSRFError):
            title, message = "Form expired", "The form was missing its security token or it expired. Reload the page and try again."
        return render_template("errors.html", code=code, title=title, message=message), code

    def changed_meanwhile(exc):
        # Someone (a colleague, the calendar sync) saved the same activity while this request was saving it:
        # nothing of this request was stored, so nothing is overwritten unseen.
        db.session.rollback()
        return render_error(Conflict("It changed while you were saving it; nothing was saved. "
                                     "Reload it and make your change again."))

    app.register_error_handler(StaleDataError, changed_meanwhile)
    app.register_error_handler(CSRFError, render_error)
    for code in ERROR_TEXTS:
        app.register_error_handler(code, render_error)
    app.register_error_handler(HTTPException, render_error)


def viewer_zone() -> ZoneInfo:
    """The zone times are shown in: the viewer's own (helpdesk staff included), UTC for visitors."""
    zone = getattr(current_user, "time_zone", None) if current_user else None
    try:
        return ZoneInfo(zone) if zone else ZoneInfo("UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def show_time(value: datetime | None, style: str = "minutes") -> str:
    """A stored instant in the viewer's zone, always with the zone's name beside it, so no page shows a bare
    time ("2026-11-30 09:15 CET"). `style`: minutes, seconds, or date (a day needs no zone)."""
    if value is None:
        return "—"
    if value.tzinfo is None:  # stored instants are UTC
        value = value.replace(tzinfo=UTC)
    local = value.astimezone(viewer_zone())
    if style == "date":
        return local.strftime("%Y-%m-%d")
    text = local.strftime("%Y-%m-%d %H:%M:%S" if style == "seconds" else "%Y-%m-%d %H:%M")
    return f"{text} {local.tzname() or local.strftime('%z')}"


def register_filters(app):
    @app.template_filter("describe_recurrence")
    def describe_recurrence(lines):
        return describe(lines) if lines else ""

    app.add_template_filter(show_time, "when")


def role_required(*roles):
    """Logged in with one of `roles`, else the login page (anonymous) or 403."""

    def decorator(view):
        @wraps(view)
        @login_required
        def wrapped(*args, **kwargs):
            if current_user.role not in roles:
                abort(403)
            return view(*args, **kwargs)

        return wrapped

    return decorator


def local_address(value: str | None, default: str) -> str:
    """`value` when it is a path on this site, else `default`: every return address a request brings (a form's
    `return_to`, login's `next`) is printed as a link or followed by a redirect, so anything a browser could
    read as another host (`//host`, `/\\host`, a scheme) or as script (`javascript:`) must not pass. Browsers
    drop tabs and line breaks inside URLs and read a backslash as a slash; only visible ASCII without
    backslashes is kept, so what is checked here is what the browser sees."""
    if not value or not isinstance(value, str):
        return default
    if "\\" in value or any(not "!" <= c <= "~" for c in value):
        return default
    # A path of this site: a single leading slash, so no scheme and no other host can come before it.
    if not value.startswith("/") or value.startswith("//"):
        return default
    return value


def wants_partial(target: str | None = None) -> bool:
    """Whether htmx asks for part of a page (with `target`, for the element of that id). Restoring history
    after a cache miss needs the whole page again."""
    htmx = request.htmx
    return bool(htmx) and not htmx.history_restore_request and (target is None or htmx.target == target)


def render(page: str | None, partial: str, context: dict, *, status: int = 200, target: str | None = None,
           trigger: str | dict | None = None) -> Response:
    """`partial` when htmx asks for it (see `wants_partial`), else `page`; no page: only htmx comes here,
    the others were sent elsewhere. `trigger` fires events in the browser (HX-Trigger). The context is a
    mapping of its own, as templates have variables named like these options (`status`, `partial`)."""
    template = partial if page is None or wants_partial(target) else page
    response = make_response(render_template(template, **context), status, trigger=trigger)
    # One address, two answers: a cache must not hand the partial to a browser loading the page.
    response.vary.add("HX-Request")
    return response


def render_diagnostics(page: str, organization, here: str, **extra) -> Response:
    """An organization's sync diagnostics, the same for helpdesk staff and for the organization's admins: the
    page, or only the users' health table when htmx filters it (by `state` and `q` in the address)."""
    integration = integration_of(organization)
    report = diagnostics.read_diagnostics(
        organization, integration, now=utcnow(), zone=viewer_zone(),
        session_lifetime=current_app.permanent_session_lifetime,
        state=request.args.get("state", ""), query=request.args.get("q", ""))
    return render(page, "diagnostics/_health_results.html",
                  dict(organization=organization, integration=integration, report=report, zone=viewer_zone(),
                       here=here, **diagnostics.TEMPLATE_HELPERS, **extra), target="health-results")
