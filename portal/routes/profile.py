"""My profile: Calendar and activities > Calendar sync; Sign-in and security; API tokens."""

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user, login_required, logout_user
from sqlalchemy import select

from portal.accounts import AccountError, change_password, end_sessions, live_sessions
from portal.activities import is_time_zone
from portal.extensions import db
from portal.models import ActivityType, utcnow
from portal.routes import render, wants_partial
from portal.signin_models import ApiToken, LoginSession, TokenError
from portal.sync import recent
from portal.sync.engine.preview import PreviewRefused
from portal.sync.engine.preview import preview_first_sync as first_sync_preview
from portal.sync.models import CalendarSync
from portal.sync.policy import integration_of
from portal.sync.status import user_health

bp = Blueprint("profile", __name__, url_prefix="/profile")


def sync_state() -> dict:
    """The user's own switch and the organization's: all the preview and the first sync's progress need
    (the progress polls every two seconds, so it reads no more than this)."""
    integration = integration_of(current_user.organization)
    row = db.session.get(CalendarSync, current_user.id)
    organization_on = bool(integration and integration.enabled)
    organization_paused = bool(integration and integration.enabled and integration.is_paused)
    on = bool(row and row.enabled)
    return {
        "integration": integration,
        "organization_on": organization_on,
        "organization_paused": organization_paused,
        "sync": row,
        "sync_on": on,
        # Switching on needs the organization's sync running; switching off is always allowed.
        "switch_locked": not on and (not organization_on or organization_paused),
        "errors": {},
    }


def sync_context() -> dict:
    """The whole Calendar sync card: the switches, the user's health, and what the sync did lately."""
    state = sync_state()
    organization = current_user.organization
    synced_types = db.session.scalars(
        select(ActivityType).where(ActivityType.organization_id == organization.id,
                                   ActivityType.sync_to_google.is_(True)).order_by(ActivityType.name)
    ).all()
    changes, more = recent.recent_changes(current_user)
    return {
        **state,
        "health": user_health(state["sync"], state["integration"], now=utcnow(),
                              session_lifetime=current_app.permanent_session_lifetime,
                              user_active=current_user.active),
        "changes": changes,
        "more": more,
        "conflicts": recent.conflicts(current_user),
        "failed": recent.failed_items(current_user),
        "cycles": recent.cycle_rows(current_user),
        "synced_types": synced_types,
    }


@bp.route("/calendar-sync")
@login_required
def calendar_sync():
    """Show the user's calendar preferences and their own sync switch."""
    return render("profile/calendar_sync.html", "profile/_sync.html", sync_context(), target="calendar-sync")


@bp.route("/calendar-sync", methods=("POST",))
@login_required
def switch_calendar_sync():
    """Switch the user's own calendar sync on or off."""
    enabled = request.form.get("enabled") == "on"
    context = sync_context()
    if enabled and not (context["organization_on"] and not context["organization_paused"]):
        context["errors"] = {"enabled": "Your organization's Google Calendar integration is not switched on "
                                        "(or is paused by an error); ask your admin."}
        return render("profile/calendar_sync.html", "profile/_sync.html", context, status=422)
    CalendarSync.for_user(current_user).switch(enabled)
    db.session.commit()
    if wants_partial():
        return render(None, "profile/_sync.html", sync_context())
    flash("Calendar sync is on: your calendar syncs automatically." if enabled else "Calendar sync is off.")
    return redirect(url_for("profile.calendar_sync"))


# --- My profile > Calendar sync: the first sync's preview and progress ------------------------------


@bp.route("/calendar-sync/preview", methods=("POST",))
@login_required
def preview_first_sync():
    """Preview the first sync: what switching sync on would link, copy each way and leave alone. Only
    reads Google and the portal; writes nothing on either side."""
    context = sync_state() if wants_partial("first-sync-preview") else sync_context()
    if context["sync"] is not None and context["sync"].enabled:
        context["preview_error"] = "Your calendar sync is already on: the preview is for before switching it on."
    else:
        try:
            context["preview"] = first_sync_preview(current_user._get_current_object())
        except PreviewRefused as exc:
            context["preview_error"] = str(exc)
    return render("profile/calendar_sync.html", "profile/_preview.html", context, target="first-sync-preview")


@bp.route("/calendar-sync/progress")
@login_required
def first_sync_progress():
    """How far the first sync got (items done of its plan); the partial polls itself while it runs."""
    context = sync_state() if wants_partial("first-sync-progress") else sync_context()
    # The last poll: the card around it refreshes once (its status, the recent changes) and polling ends.
    done = not (context["sync"] and context["sync"].first_sync_running)
    return render("profile/calendar_sync.html", "profile/_progress.html", context,
                  target="first-sync-progress", trigger="first-sync-done" if done else None)


@bp.route("/calendar-sync/changes")
@login_required
def sync_changes():
    """Older entries of "Recent changes": the rows alone for the "Show older changes" link, else a page."""
    before = request.args.get("before", "")
    before_id = int(before) if before.isdigit() and len(before) <= 18 else None
    changes, more = recent.recent_changes(current_user, before=before_id)
    return render("profile/changes.html", "profile/_changes.html",
                  {"changes": changes, "more": more, "paging": before_id is not None})


@bp.route("/time-zone", methods=("POST",))
@login_required
def update_time_zone():
    """Change the zone the user's calendar is shown in."""
    zone = request.form.get("time_zone", "").strip()
    if not is_time_zone(zone):
        context = sync_context()
        context["errors"] = {"time_zone": f"Unknown time zone {zone[:64]!r}; use an IANA name like Europe/Amsterdam."}
        return render_template("profile/calendar_sync.html", **context), 422
    current_user.time_zone = zone
    db.session.commit()
    flash(f"Your calendar is now shown in {zone}.")
    return redirect(url_for("profile.calendar_sync"))


def security_context(errors: dict | None = None) -> dict:
    return {"login_sessions": live_sessions(current_user),
            "current_token_hash": LoginSession.hash(current_user.session_token),
            "lifetime_hours": round(current_app.permanent_session_lifetime.total_seconds() / 3600, 1),
            "errors": errors or {}}


@bp.route("/security")
@login_required
def security():
    """Change the password; see the sessions and log out everywhere."""
    return render_template("profile/security.html", **security_context())


@bp.route("/password", methods=("POST",))
@login_required
def update_password():
    """Change the user's password; their other sessions end, this one goes on."""
    new = request.form.get("new_password", "")
    if new != request.form.get("confirm_password", ""):
        errors = {"confirm_password": "The new password and its repetition do not match."}
        return render_template("profile/security.html", **security_context(errors)), 422
    try:
        change_password(current_user, request.form.get("current_password", ""), new, request.remote_addr)
    except AccountError as exc:
        db.session.commit()  # a wrong current password is noted for the throttle
        field = "current_password" if "current password" in str(exc) else "new_password"
        return render_template("profile/security.html", **security_context({field: str(exc)})), 422
    db.session.commit()
    flash("Your password has been changed; your other sessions have been logged out.")
    return redirect(url_for("profile.security"))


@bp.route("/sessions/end-all", methods=("POST",))
@login_required
def end_all_sessions():
    """Log out everywhere: every session of the user ends, this one too."""
    end_sessions(current_user)
    db.session.commit()
    logout_user()
    session.clear()
    flash("You have been logged out everywhere.")
    return redirect(url_for("auth.login"))

# --- My profile > API tokens -----------------------------------------------------------------------


def _tokens_page(status: int = 200, *, new_token: str | None = None, errors: dict | None = None):
    response = make_response(render_template("profile/api_tokens.html", tokens=ApiToken.of_user(current_user),
                                             new_token=new_token, errors=errors or {},
                                             default_days=current_app.config["API_TOKEN_DAYS"],
                                             max_days=current_app.config["API_TOKEN_MAX_DAYS"]), status)
    if new_token:  # the secret is on this page only: no cache may keep it
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/api-tokens")
@login_required
def api_tokens():
    """The user's API tokens: name and dates, never the secret."""
    return _tokens_page()


@bp.route("/api-tokens", methods=("POST",))
@login_required
def create_api_token():
    """Create an API token and show its secret this once."""
    try:
        row, token = ApiToken.issue(current_user, name=request.form.get("name", ""),
                                    expires_days=request.form.get("expires_days", "").strip() or None)
    except TokenError as exc:
        return _tokens_page(422, errors=exc.errors)
    db.session.add(row)
    db.session.commit()
    return _tokens_page(new_token=token)


@bp.route("/api-tokens/<int:token_id>/revoke", methods=("POST",))
@login_required
def revoke_api_token(token_id):
    """Revoke one of the user's own API tokens; it stops working at once."""
    row = db.session.get(ApiToken, token_id)
    if row is None or row.user_id != current_user.id:
        abort(404)
    row.revoke()
    db.session.commit()
    flash(f"The token “{row.name}” is revoked.")
    return redirect(url_for("profile.api_tokens"))
