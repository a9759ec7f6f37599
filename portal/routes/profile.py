"""My profile > Calendar and activities > Calendar sync."""

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from portal.activities import is_time_zone
from portal.extensions import db

bp = Blueprint("profile", __name__, url_prefix="/profile")


@bp.route("/calendar-sync")
@login_required
def calendar_sync():
    """Show the user's calendar preferences and sync switch."""
    return render_template("profile/calendar_sync.html", errors={})


@bp.route("/time-zone", methods=("POST",))
@login_required
def update_time_zone():
    """Change the zone the user's calendar is shown in."""
    zone = request.form.get("time_zone", "").strip()
    if not is_time_zone(zone):
        errors = {"time_zone": f"Unknown time zone {zone[:64]!r}; use an IANA name like Europe/Amsterdam."}
        return render_template("profile/calendar_sync.html", errors=errors), 422
    current_user.time_zone = zone
    db.session.commit()
    flash(f"Your calendar is now shown in {zone}.")
    return redirect(url_for("profile.calendar_sync"))
