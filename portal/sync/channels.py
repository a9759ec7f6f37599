"""Google's watch channels: Google tells the portal that a calendar changed, so the next pull runs now.

One `events.watch` channel per synced calendar, opened after a successful cycle when the portal has a
public address (`PUBLIC_BASE_URL`): Google can only notify an address it can reach. A notification carries
no data; it only makes the user due (see `portal.routes.webhooks`).

Once Google has confirmed a channel (its first "sync" message arrived and its answer was recorded,
`trust_channel`), notifications replace the 30-second poll: the user is pulled every
`SYNC_SAFETY_POLL_SECONDS` only, to catch what a lost notification missed (Google does not promise every
one arrives). The trust ends when the channel is due for renewal, and at once (`distrust`) when it is
replaced, stopped, refused, or no longer open at the current public address (`distrust_lost_channels`).

Google cannot extend a channel: before one expires a new one is opened and the old one stopped. Channels of
users who switched sync off are stopped. No Google call is made for an organization whose sync is not
allowed; its channels simply expire.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import uuid
from datetime import UTC, datetime, timedelta

from flask import current_app
from sqlalchemy import case, or_, select, update

from portal.extensions import db
from portal.integration import calendar_client, integration_for
from portal.models import User, utcnow
from portal.sync.google import GoogleError
from portal.sync.models import CalendarSync, WatchChannel
from portal.sync.policy import sync_allowed

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/google/calendar"
# After a refused watch the portal asks again only this much later: a wrong public URL must not cost a
# Google request per cycle.
RETRY_AFTER_FAILURE = timedelta(hours=1)


def webhook_address() -> str | None:
    base = (current_app.config.get("PUBLIC_BASE_URL") or "").strip().rstrip("/")
    return base + WEBHOOK_PATH if base else None


def open_channels(user_id: int, now: datetime) -> list[WatchChannel]:
    return list(db.session.scalars(
        select(WatchChannel).where(WatchChannel.user_id == user_id, WatchChannel.stopped_at.is_(None),
                                   WatchChannel.expires_at > now)
        .order_by(WatchChannel.expires_at.desc())
    ))


def ensure_channel(user_id: int, *, now: datetime | None = None) -> WatchChannel | None:
    """Make sure the user's calendar has a channel that does not expire soon; returns it (None: no channel).

    Call with the user's sync lease held or under `Lease("channel:<id>")`: two callers would open two.
    """
    address = webhook_address()
    if address is None:
        return None
    now = now or utcnow()
    config = current_app.config
    renew_before = timedelta(seconds=float(config["SYNC_CHANNEL_RENEW_BEFORE_SECONDS"]))
    current = open_channels(user_id, now)
    if current and current[0].expires_at > now + renew_before and current[0].address == address \
            and current[0].error_message is None:  # a channel that went silent is replaced
        return current[0]
    user = db.session.get(User, user_id)
    if user is None or not sync_allowed(user.organization):
        return None
    if not current and _recently_refused(user_id, now):
        return None

    integration = integration_for(user.organization)
    channel_id = uuid.uuid4().hex
    token = secrets.token_urlsafe(32)
    body = {"id": channel_id, "type": "web_hook", "address": address, "token": token,
            "params": {"ttl": str(int(config["SYNC_CHANNEL_TTL_SECONDS"]))}}
    # Stored before asking Google: Google confirms a new channel with a first notification, which may
    # arrive before its answer does.
    channel = WatchChannel(id=channel_id, organization_id=user.organization_id, user_id=user_id,
                           token_hash=WatchChannel.hash(token), address=address, created_at=now,
                           expires_at=now + timedelta(seconds=float(config["SYNC_CHANNEL_TTL_SECONDS"])))
    db.session.add(channel)
    # Polled every interval until Google confirms the new channel (the old one may be why we are here).
    distrust([user_id], now)
    db.session.commit()
    try:
        client = calendar_client(integration, user.email)
        answer = client.watch(body)
    except GoogleError as exc:
        log.info("Google refused a push channel for user %s: %s (%s)", user_id, exc.code, exc.detail)
        channel.stopped_at = now
        channel.error_message = f"{exc.code}: {exc.cause}"[:2000]
        db.session.commit()
        return current[0] if current else None
    channel.resource_id = answer.get("resourceId")
    channel.expires_at = _expiration(answer, now, float(config["SYNC_CHANNEL_TTL_SECONDS"]))
    db.session.commit()
    trust_channel(channel)
    # Stopped only once the new one is open, so no change falls between the two.
    for old in current:
        _stop(old, integration, user.email, now)
    return channel


def _recently_refused(user_id: int, now: datetime) -> bool:
    last = db.session.scalar(
        select(WatchChannel).where(WatchChannel.user_id == user_id)
        .order_by(WatchChannel.created_at.desc()).limit(1)
    )
    return last is not None and last.error_message is not None and last.created_at > now - RETRY_AFTER_FAILURE


def _expiration(answer: dict, now: datetime, ttl: float) -> datetime:
    try:
        return datetime.fromtimestamp(int(answer["expiration"]) / 1000, UTC)
    except (KeyError, TypeError, ValueError):  # Google may leave it out; it then keeps the channel ~1 week
        return now + timedelta(seconds=ttl)


def _stop(channel: WatchChannel, integration, email: str, now: datetime) -> bool:
    """Ask Google to stop a channel; True once it is stopped (or Google no longer knows it)."""
    try:
        client = calendar_client(integration, email)
        client.stop_channel(channel.id, channel.resource_id)
    except GoogleError as exc:
        if exc.status != 404:  # 404: expired or stopped already, which is what we want
            log.info("Could not stop push channel %s: %s (%s)", channel.id, exc.code, exc.detail)
            return False
    channel.stopped_at = now
    db.session.commit()
    return True


def stop_channels(user_id: int, *, now: datetime | None = None) -> int:
    """Stop the user's open channels (sync switched off); returns how many were stopped."""
    now = now or utcnow()
    channels = open_channels(user_id, now)
    if not channels:
        return 0
    user = db.session.get(User, user_id)
    if user is None or not sync_allowed(user.organization):
        return 0
    integration = integration_for(user.organization)
    distrust([user_id], now)
    db.session.commit()
    return sum(_stop(channel, integration, user.email, now) for channel in channels)


def stop_unwanted_channels(*, now: datetime | None = None, limit: int = 100) -> int:
    """Stop open channels whose user no longer syncs (switched off, or deactivated)."""
    now = now or utcnow()
    wanted = select(CalendarSync.user_id).join(User, User.id == CalendarSync.user_id).where(
        CalendarSync.enabled.is_(True), User.active.is_(True))
    user_ids = db.session.scalars(
        select(WatchChannel.user_id).where(WatchChannel.stopped_at.is_(None), WatchChannel.expires_at > now,
                                           WatchChannel.user_id.not_in(wanted))
        .distinct().limit(limit)
    ).all()
    return sum(stop_channels(user_id, now=now) for user_id in user_ids)


def trust_channel(channel: WatchChannel) -> bool:
    """Let the channel's notifications stand in for the poll, once Google both answered the watch (its
    resource id is recorded) and sent the channel's first "sync" message; True when it now does.

    Both halves call this after committing their own: whichever comes second sees both, in either order.
    """
    confirmed = select(WatchChannel.id).where(
        WatchChannel.id == channel.id, WatchChannel.resource_id.is_not(None),
        WatchChannel.last_message_number.is_not(None), WatchChannel.stopped_at.is_(None))
    result = db.session.execute(
        update(CalendarSync).where(CalendarSync.user_id == channel.user_id, confirmed.exists())
        # Read from the row, not this object: the watch's answer may have corrected it in another session.
        .values(push_expires_at=select(WatchChannel.expires_at).where(WatchChannel.id == channel.id)
                .scalar_subquery())
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    return bool(result.rowcount)


SILENT = "silent: a safety poll found a change in Google that no notification announced"


def check_silence(user_id: int, since: datetime, now: datetime) -> bool:
    """A pull of a user whose channel is trusted found changes made in Google. When the channel announced
    nothing since `since` (the pull before), it went silent: the user goes back to polling every interval
    and the next cycle replaces the channel. True when it did. A change made the instant before the pull,
    its notification still on its way, costs one needless replacement at most."""
    result = db.session.execute(
        update(WatchChannel)
        .where(WatchChannel.user_id == user_id, WatchChannel.stopped_at.is_(None), WatchChannel.expires_at > now,
               WatchChannel.error_message.is_(None),
               or_(WatchChannel.last_notified_at.is_(None), WatchChannel.last_notified_at < since))
        .values(error_message=SILENT)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount:
        log.warning("The push channel of user %s missed a change; the user is polled until it is replaced", user_id)
        distrust([user_id], now)
    db.session.commit()
    return bool(result.rowcount)


def distrust(user_ids, now: datetime) -> int:
    """Back to polling every interval, at once: these users' channels can no longer be relied on (replaced,
    stopped, lost). Joins the caller's transaction."""
    return _back_to_polling(CalendarSync.user_id.in_(sorted(set(user_ids))), now)


def distrust_lost_channels(*, now: datetime | None = None) -> int:
    """Users trusted to be notified who have no open, confirmed channel at the current public address (the
    address changed, or a channel was closed without saying so) go back to polling; returns how many."""
    now = now or utcnow()
    live = select(WatchChannel.id).where(
        WatchChannel.user_id == CalendarSync.user_id, WatchChannel.stopped_at.is_(None),
        WatchChannel.expires_at > now, WatchChannel.address == webhook_address(),
        WatchChannel.resource_id.is_not(None))
    count = _back_to_polling(~live.exists(), now)
    db.session.commit()
    return count


def _back_to_polling(which, now: datetime) -> int:
    """A user waiting for a safety poll is due within one interval."""
    soon = now + timedelta(seconds=float(current_app.config["SYNC_INTERVAL_SECONDS"]))
    return db.session.execute(
        update(CalendarSync).where(CalendarSync.push_expires_at.is_not(None), which)
        .values(push_expires_at=None, due_at=case((CalendarSync.due_at > soon, soon), else_=CalendarSync.due_at))
        .execution_options(synchronize_session=False)
    ).rowcount


def channel_for_notification(channel_id: str, token: str, resource_id: str | None,
                             now: datetime) -> WatchChannel | None:
    """The open channel a notification names, when its token (and resource, if sent) match; else None.

    The values must be ASCII (`malformed_notification` says so first): hmac refuses to compare others.
    """
    if not channel_id or len(channel_id) > 64:
        return None
    channel = db.session.get(WatchChannel, channel_id)
    if channel is None or not channel.is_open(now) or not channel.token_matches(token):
        return None
    if resource_id and channel.resource_id and not hmac.compare_digest(resource_id, channel.resource_id):
        return None
    return channel


# Google's message numbers are 64-bit integers (its push guide: they increase, not consecutively).
MESSAGE_NUMBER_DIGITS = 19
NOTIFICATION_HEADERS = ("X-Goog-Channel-ID", "X-Goog-Channel-Token", "X-Goog-Resource-ID",
                        "X-Goog-Resource-State", "X-Goog-Message-Number")
RATE_WINDOW = timedelta(minutes=1)


def malformed_notification(headers) -> str | None:
    """Why these headers cannot come from Google (a message for the 400), or None when they could."""
    for name in NOTIFICATION_HEADERS:
        value = headers.get(name)
        if value is not None and not (value.isascii() and value.isprintable()):
            return f"{name} must be printable ASCII."
    number = headers.get("X-Goog-Message-Number")
    if number is None:
        return "X-Goog-Message-Number is missing."
    if not (number.isdigit() and len(number) <= MESSAGE_NUMBER_DIGITS and int(number) < 2 ** 63):
        return "X-Goog-Message-Number must be a whole number."
    return None


def record_notification(channel: WatchChannel, message_number: int, now: datetime, *,
                        counted: bool) -> datetime | None:
    """Note a notification on its channel; returns when its user should be due (None: ignore it).

    One conditional update, so two processes receiving the same message never both act on it. A number not
    above the highest seen is a replay, or arrived after a later one: a cycle started for the later one reads
    its change too, so either way there is nothing to do. Past `WEBHOOK_NOTIFICATIONS_PER_MINUTE` within a
    channel's minute, the user is made due one share of the minute later (2 s at 30 a minute) instead of now:
    a flood brings at most one more cycle per share, each reading every change announced so far, so none is
    lost and the work stays bounded, while a person who edits a lot in a minute still sees each edit within
    seconds, not at the minute's end. `counted=False` (Google's "sync" message) only notes the number.
    """
    new_window = or_(WatchChannel.window_started_at.is_(None), WatchChannel.window_started_at <= now - RATE_WINDOW)
    values = {"last_message_number": message_number}
    if counted:
        values |= {
            "notifications": WatchChannel.notifications + 1,
            "last_notified_at": now,
            "window_started_at": case((new_window, now), else_=WatchChannel.window_started_at),
            "window_count": case((new_window, 1), else_=WatchChannel.window_count + 1),
        }
    result = db.session.execute(
        update(WatchChannel)
        .where(WatchChannel.id == channel.id,
               or_(WatchChannel.last_message_number.is_(None), WatchChannel.last_message_number < message_number))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1 or not counted:
        return None
    # Our update holds the row until the commit, so what it reads back is its own window.
    db.session.refresh(channel)
    limit = max(1, int(current_app.config["WEBHOOK_NOTIFICATIONS_PER_MINUTE"]))
    if channel.window_count <= limit:
        return now
    return now + RATE_WINDOW / limit
