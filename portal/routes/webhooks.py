"""Notifications on Google's watch channels: `POST /webhooks/google/calendar`.

Google signs nothing; what proves a notification is ours is the channel id we chose plus the secret token
we gave Google when opening the channel. Anything else gets a bare 404 and changes nothing, so the
endpoint tells a prober neither which channels exist nor why it refused. A genuine notification carries
no data: it only makes the calendar's user due, and their next cycle reads the change; the channel's first
("sync") message confirms that Google reaches this address, and from then on notifications replace the
30-second poll (`channels.trust_channel`). Headers no Google
notification could carry (not ASCII, no message number) get a 400; replayed message numbers and a flood
beyond `WEBHOOK_NOTIFICATIONS_PER_MINUTE` per channel are acknowledged without bringing a cycle forward.
"""

from flask import Blueprint, jsonify, request

from portal.extensions import csrf, db
from portal.sync.channels import (
    channel_for_notification,
    malformed_notification,
    record_notification,
    trust_channel,
)
from portal.sync.runtime import make_due, scheduling, wake

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")
csrf.exempt(bp)  # Google cannot send a CSRF token; the channel token authenticates instead


@bp.route("/google/calendar", methods=("POST",))
def google_calendar():
    state = scheduling()
    now = state.clock()
    problem = malformed_notification(request.headers)
    if problem is not None:
        # Says only what is wrong with the request itself, nothing about which channels exist.
        return jsonify(error=problem), 400
    channel = channel_for_notification(request.headers.get("X-Goog-Channel-ID", ""),
                                       request.headers.get("X-Goog-Channel-Token", ""),
                                       request.headers.get("X-Goog-Resource-ID"), now)
    if channel is None:
        db.session.rollback()
        return "", 404
    # "sync" only confirms that the channel was opened; "exists" / "not_exists" report a change.
    counted = request.headers.get("X-Goog-Resource-State", "exists") != "sync"
    due = record_notification(channel, int(request.headers["X-Goog-Message-Number"]), now, counted=counted)
    db.session.commit()
    if not counted:
        # Google reaches this address for this channel: its notifications may now replace the poll.
        trust_channel(channel)
    # A replay or an excess notification is still answered 2xx: Google retries 5xx answers and counts
    # others as failures (push guide, "Responding to notifications"), and neither needs anything more from it.
    if due is not None and make_due([channel.user_id], now=due) and due <= now:
        wake(state)
    return "", 204
