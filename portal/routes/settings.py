"""Settings > Integrations > Google Calendar (admins of the organization)."""

from flask import Blueprint, render_template
from flask_login import current_user

from portal.routes import role_required

bp = Blueprint("settings", __name__, url_prefix="/settings")


@bp.route("/integrations/google-calendar")
@role_required("admin")
def google_calendar():
    """Show the organization's Google Calendar integration."""
    return render_template("settings/google_calendar.html", organization=current_user.organization)
