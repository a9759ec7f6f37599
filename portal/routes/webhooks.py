"""Notifications on Google's watch channels: `POST /webhooks/google/calendar`.

Google signs nothing; what proves a notification is ours is the channel id we chose plus the secret token
we gave Google when opening the channel. Anything else gets a bare 404 and changes nothing, so the
endpoint tells a prober neither which channels exist nor why it refused. A genuine notification carries
no data: it only makes the calendar's user due, and their next cycle reads the change.
"""

from flask import Blueprint, request

from portal.extensions import csrf, db
from portal.sync.channels import channel_for_notification
from portal.sync.runtime import make_due, scheduling, wake

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")
csrf.exempt(bp)  # Google cannot send a CSRF token; the channel token authenticates instead


@bp.route("/google/calendar", methods=("POST",))
def google_calendar():
    state = scheduling()
    now = state.clock()
    channel = channel_for_notification(request.headers.get("X-Goog-Channel-ID", ""),
                                       request.headers.get("X-Goog-Channel-Token", ""),
                                       request.headers.get("X-Goog-Resource-ID"), now)
    if channel is None:
        db.session.rollback()
        return "", 404
    # "sync" only confirms that the channel was opened; "exists" / "not_exists" report a change.
    if request.headers.get("X-Goog-Resource-State", "exists") != "sync":
        channel.notifications = (channel.notifications or 0) + 1
        channel.last_notified_at = now
        db.session.commit()
        if make_due([channel.user_id], now=now):
            wake(state)
    return "", 204
