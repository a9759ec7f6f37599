"""Settings > Integrations > Google Calendar (admins of the organization).

Every form posts to its own view. With HTMX the view answers with the page's body (`_integration.html`),
so the toggle, the error banner and the audit log stay consistent after any change; without JavaScript a
successful change redirects back to the page, and invalid input renders the page again with status 422.
Views only ever touch the current admin's own organization: no organization id travels in a URL.
"""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, request, url_for
from flask_login import current_user

from portal import integration
from portal.extensions import db
from portal.integration import KEY_FILE_LIMIT, SettingsError, TestOutcome
from portal.routes import render, render_diagnostics, role_required, wants_partial

bp = Blueprint("settings", __name__, url_prefix="/settings")

PAGE = "/integrations/google-calendar"

NO_TYPES_WARNING = ("No activity type is selected: nothing of the portal will go to Google; Google events still "
                    "come in.")


def _row():
    return integration.integration_for(current_user.organization)


def _audit_page_number() -> int:
    try:
        return int(request.args.get("audit_page", "1"))
    except ValueError:
        return 1


def _context(row, *, errors=None, fields=None, outcome: TestOutcome | None = None, editing_password=False,
             messages: list[tuple[str, str]] | None = None, audit_page: int = 1) -> dict:
    organization = current_user.organization
    return {
        "organization": organization,
        "integration": row,
        "errors": errors or {},
        "fields": fields or {},
        "outcome": outcome,
        "editing_password": editing_password,
        "messages": messages or [],
        "scopes": integration.delegation_scopes(),
        "audit": integration.audit_page(organization, audit_page),
        "describe_audit": integration.describe_audit,
        "key_file_limit_kb": KEY_FILE_LIMIT // 1024,
        "test_email": (fields or {}).get("test_email") or current_user.email,
    }


def _render(row, status=200, **context):
    """The page, or only its body for HTMX."""
    return render("settings/google_calendar.html", "settings/_integration.html", _context(row, **context),
                  status=status)


def _done(row, message: str, kind: str = "success"):
    """After a successful change: the refreshed body for HTMX, a redirect (and a flash) otherwise."""
    if wants_partial():
        return _render(row, messages=[(kind, message)])
    flash(message, kind)
    return redirect(url_for("settings.google_calendar"))


@bp.route(PAGE)
@role_required("admin")
def google_calendar():
    """Show the organization's Google Calendar integration."""
    row = _row()
    if wants_partial("audit-log"):  # the audit log's own pager
        return render(None, "settings/_audit.html", _context(row, audit_page=_audit_page_number()))
    return _render(row, editing_password=request.args.get("edit") == "password", audit_page=_audit_page_number())


@bp.route(PAGE + "/account", methods=("POST",))
@role_required("admin")
def save_account():
    """Set the service account e-mail and client ID."""
    row = _row()
    fields = {"service_account_email": request.form.get("service_account_email", "")[:300],
              "client_id": request.form.get("client_id", "")[:100]}
    try:
        changed = integration.save_account(row, current_user, fields["service_account_email"], fields["client_id"])
    except SettingsError as exc:
        return _render(row, 422, errors=exc.errors, fields=fields)
    return _done(row, "Service account saved." if changed else "Nothing changed.")


@bp.route(PAGE + "/key", methods=("POST",))
@role_required("admin")
def upload_key():
    """Store a new private key file, once it opens (with the password given, stored, or Google's default)."""
    row = _row()
    upload = request.files.get("key_file")
    data = upload.stream.read(KEY_FILE_LIMIT + 1) if upload else b""
    password = request.form.get("key_password", "")
    try:
        key = integration.upload_key(row, current_user, data, password or None)
    except SettingsError as exc:
        return _render(row, 422, errors=exc.errors)
    return _done(row, f"{'JSON' if key.kind == 'json' else 'P12'} key {key.key_id} stored.")


@bp.route(PAGE + "/password")
@role_required("admin")
def password():
    """The password row: set or not set (the password itself never leaves the server)."""
    if not wants_partial():
        return redirect(url_for("settings.google_calendar"))
    return render(None, "settings/_password.html", _context(_row()))


@bp.route(PAGE + "/password/edit")
@role_required("admin")
def edit_password():
    """The password row as an inline form."""
    if not wants_partial():
        return redirect(url_for("settings.google_calendar", edit="password") + "#key-password")
    return render(None, "settings/_password.html", _context(_row(), editing_password=True))


@bp.route(PAGE + "/password", methods=("POST",))
@role_required("admin")
def save_password():
    """Change the private key password (it must open the stored key)."""
    row = _row()
    try:
        integration.set_password(row, current_user, request.form.get("key_password", ""))
    except SettingsError as exc:
        return _render(row, 422, errors=exc.errors, editing_password=True)
    return _done(row, "Private key password saved." if row.has_password else "Private key password cleared.")


@bp.route(PAGE + "/activity-types", methods=("POST",))
@role_required("admin")
def save_activity_types():
    """Choose the activity types that sync to Google."""
    row = _row()
    try:
        changed = integration.save_activity_types(current_user.organization, current_user,
                                                  request.form.getlist("activity_types"))
    except SettingsError as exc:
        return _render(row, 422, errors=exc.errors)
    if not any(t.sync_to_google for t in current_user.organization.activity_types):
        # Allowed (Google's events still come in), but rarely meant: say what it does.
        return _done(row, ("Activity types saved. " if changed else "") + NO_TYPES_WARNING, "warning")
    return _done(row, "Activity types saved." if changed else "Nothing changed.")


@bp.route(PAGE + "/participants", methods=("POST",))
@role_required("admin")
def save_participants():
    """Whether participants may change (never delete) the activities they take part in."""
    row = _row()
    organization = current_user.organization
    value = request.form.get("participants_can_edit") in ("on", "true", "1")
    if organization.participants_can_edit == value:
        return _done(row, "Nothing changed.")
    organization.participants_can_edit = value
    integration.audit(organization, current_user, "participants_can_edit_changed", participants_can_edit=value)
    db.session.commit()
    return _done(row, "Participants may now change the activities they take part in." if value
                 else "Only owners and admins change activities now.")


@bp.route(PAGE + "/enabled", methods=("POST",))
@role_required("admin")
def set_enabled():
    """Switch the integration on (after a passing connection test) or off (at once)."""
    row = _row()
    value = request.form.get("enabled", "")
    if value not in ("on", "off"):
        abort(400)
    fields = {"test_email": request.form.get("test_email", "")[:300]}
    try:
        outcome = integration.set_enabled(row, current_user, value == "on", fields["test_email"] or None)
    except SettingsError as exc:
        return _render(row, 422, errors=exc.errors, fields=fields)
    if outcome is None:
        return _done(row, "The integration is off: nothing is synchronized with Google any more.")
    if outcome.ok:
        return _done(row, f"The integration is on. Connection test passed as {outcome.email}.")
    return _render(row, 422, outcome=outcome, fields=fields,
                   errors={"enabled": "The integration stays off: the connection test failed."})


@bp.route(PAGE + "/test", methods=("POST",))
@role_required("admin")
def test_connection():
    """Obtain a token as an e-mail (the admin's own by default) and read that calendar."""
    row = _row()
    fields = {"test_email": request.form.get("test_email", "")[:300] or current_user.email}
    try:
        outcome = integration.test_connection(row, current_user, fields["test_email"])
    except SettingsError as exc:
        return _render(row, 422, errors=exc.errors, fields=fields)
    return _render(row, outcome=outcome, fields=fields)


# --- Diagnostics: the same pictures the helpdesk reads, for the admin's own organization only -----------

@bp.route(PAGE + "/diagnostics")
@role_required("admin")
def diagnostics():
    """The organization's sync diagnostics: timeline, users' health, cycles, the error catalogue."""
    return render_diagnostics("diagnostics/admin.html", current_user.organization, url_for("settings.diagnostics"))
