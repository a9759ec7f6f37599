"""What starts a sync, besides the clock.

- Presence: an authenticated page view or API call records that the user is logged in (`last_seen_at`)
  and makes them due now, at most once per `SYNC_DEBOUNCE_SECONDS`; logging out clears it, and a user
  without presence within the session lifetime is never pulled (the source: a user who is not logged in
  starts no sync).
- Changes: an activity change committed in the portal (not one the sync pulled from Google) pushes the
  organization's outbox right after the commit, whoever is logged in, and makes the activity's owner and
  participants due. The outbox row was written in the same transaction, so a push that never happens
  (the process died) is made up by the next worker's outbox sweep.
- An answer a participant gives in the portal makes them due now, with a flag on their sync state that has
  their cycle send it (`answers_pending`; idle cycles do not look for answers otherwise).
- Switching sync off stops the user's watch channels.

The session listeners only collect ids while flushing and act after the commit: nothing is pushed that
could still be rolled back.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from functools import partial

from flask import current_app, g, has_app_context, has_request_context, request
from flask_login import current_user, user_logged_out
from sqlalchemy import case, event, inspect, or_, select, update
from sqlalchemy.orm import Session

from portal.extensions import db
from portal.models import Activity, ActivityParticipant, ChangeRecord, User, utcnow
from portal.signin_models import ApiToken
from portal.sync.channels import stop_channels
from portal.sync.engine import push_pending
from portal.sync.models import CalendarSync
from portal.sync.policy import organization_allowed
from portal.sync.runtime import make_due, scheduling, seconds, wake

log = logging.getLogger(__name__)

PENDING_KEY = "sync_triggers"
_local = threading.local()  # set while this thread runs an in-line push, so its own commits do not recurse


@dataclass
class Pending:
    organizations: set[int] = field(default_factory=set)
    activities: set[int] = field(default_factory=set)
    users: set[int] = field(default_factory=set)
    switched_off: set[int] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.organizations or self.users or self.switched_off)


def install(app) -> None:
    app.before_request(note_request_presence)
    user_logged_out.connect(_on_logout)  # blinker keeps one connection per receiver
    for name, listener in (("before_flush", _presence_on_switch), ("after_flush", _collect),
                           ("after_commit", _dispatch), ("after_rollback", _discard)):
        if not event.contains(Session, name, listener):
            event.listen(Session, name, listener)


def _state():
    return scheduling() if has_app_context() else None


# ---------------------------------------------------------------------------------------------------
# Presence


def note_request_presence() -> None:
    if request.endpoint in (None, "static") or request.blueprint == "webhooks" or request.endpoint == "auth.logout":
        return
    user_id = _request_user_id()
    if user_id is not None:
        note_presence(user_id)


def _request_user_id() -> int | None:
    if current_user.is_authenticated:
        return current_user.id
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    # Read-only look-up: the API's own check (which also records last use) runs in the view.
    return db.session.scalar(
        select(ApiToken.user_id).join(User, User.id == ApiToken.user_id)
        .where(ApiToken.token_hash == ApiToken.hash(token.strip()), User.active.is_(True),
               ApiToken.revoked_at.is_(None), or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > utcnow()))
    )


def note_presence(user_id: int) -> bool:
    """Record that the user is active now and make them due; False when debounced."""
    state = _state()
    if state is None:
        return False
    now = state.clock()
    debounce = seconds("SYNC_DEBOUNCE_SECONDS")
    last = state.presence.get(user_id)
    if last is not None and last > now - debounce:
        return False
    state.presence[user_id] = now
    due_now = CalendarSync.enabled.is_(True) & or_(CalendarSync.due_at.is_(None), CalendarSync.due_at > now)
    result = db.session.execute(
        update(CalendarSync)
        .where(CalendarSync.user_id == user_id,
               or_(CalendarSync.last_seen_at.is_(None), CalendarSync.last_seen_at <= now - debounce))
        .values(last_seen_at=now, due_at=case((due_now, now), else_=CalendarSync.due_at))
    )
    db.session.commit()
    if result.rowcount:
        wake(state)
    return bool(result.rowcount)


def _on_logout(sender, user=None, **extra) -> None:
    state = _state()
    if state is None or user is None or not getattr(user, "id", None):
        return
    state.presence.pop(user.id, None)
    db.session.execute(update(CalendarSync).where(CalendarSync.user_id == user.id).values(last_seen_at=None))
    db.session.commit()


def _presence_on_switch(session: Session, flush_context, instances) -> None:
    """Switching sync on is itself a request by a logged-in user: sync them now, not after the debounce."""
    if not has_request_context():
        return
    actor_id = getattr(g.get("api_user"), "id", None) or getattr(g.get("_login_user"), "id", None)
    if actor_id is None:
        return
    state = _state()
    if state is None:
        return
    for obj in list(session.new) + list(session.dirty):
        if (isinstance(obj, CalendarSync) and obj.user_id == actor_id and obj.enabled
                and inspect(obj).attrs.enabled.history.has_changes()):
            now = state.clock()
            obj.last_seen_at = state.presence[actor_id] = now
            if obj.due_at is None or obj.due_at > now:
                obj.due_at = now


# ---------------------------------------------------------------------------------------------------
# Changes


def _collect(session: Session, flush_context) -> None:
    pending = session.info.get(PENDING_KEY)
    for obj in session.new:
        if isinstance(obj, ChangeRecord) and obj.origin != "google":
            pending = pending or session.info.setdefault(PENDING_KEY, Pending())
            pending.organizations.add(obj.organization_id)
            pending.activities.add(obj.activity_id)
            if isinstance(obj.activity, Activity):
                # Participants removed in this change: their Google copy changes too.
                removed = inspect(obj.activity).attrs.participant_links.history.deleted
                pending.users.update(link.user_id for link in removed if isinstance(link, ActivityParticipant))
    answered = set()
    for obj in session.dirty:
        if isinstance(obj, CalendarSync) and not obj.enabled and inspect(obj).attrs.enabled.history.has_changes():
            pending = pending or session.info.setdefault(PENDING_KEY, Pending())
            pending.switched_off.add(obj.user_id)
        elif (isinstance(obj, ActivityParticipant) and obj.response_pending
              and inspect(obj).attrs.response_status.history.has_changes()):
            answered.add(obj.user_id)
    if answered:
        # An answer given in the portal is no change of the activity (no outbox row) and Google sends no
        # notification of it: the participant's sync state says there is an answer to send, in the same
        # transaction, and the participant is due at once.
        session.connection().execute(update(CalendarSync).where(CalendarSync.user_id.in_(sorted(answered)))
                                     .values(answers_pending=True))
        pending = pending or session.info.setdefault(PENDING_KEY, Pending())
        pending.users.update(answered)


def _discard(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint rolled back (one item): the transaction's other changes still go out
    session.info.pop(PENDING_KEY, None)


def _dispatch(session: Session) -> None:
    if session.in_nested_transaction():
        # A savepoint released (SQLAlchemy calls this for those too): the transaction is still open, and
        # still holds its write lock; the changes go out with its own commit.
        return
    pending = session.info.pop(PENDING_KEY, None)
    if not pending:
        return
    state = _state()
    if state is None:
        return
    app = current_app._get_current_object()
    # The involved users are made due once the push is done: their cycles would otherwise push the same
    # items at the same time as the outbox push does.
    if state.scheduler is not None and state.scheduler.running:
        scheduler = state.scheduler
        for user_id in pending.switched_off:
            scheduler.submit(stop_channels, user_id)
        first, *others = sorted(pending.organizations) or [None]
        if first is not None:
            scheduler.request_push(first, then=partial(_make_involved_due, pending, state.clock()))
            for organization_id in others:
                scheduler.request_push(organization_id)
            return
        # Nothing to push (an answer, say): the users concerned are due now.
    elif app.config.get("SYNC_PUSH_INLINE") and not getattr(_local, "active", False):
        _run_inline(app, pending)
    # No scheduler here: the committing session cannot run SQL any more, so a connection of its own marks
    # the users due; workers elsewhere pick them (and the outbox) up.
    with db.engine.begin() as connection:
        _make_involved_due(pending, state.clock(), connection=connection)


def _involved_users(pending: Pending, connection=None) -> set[int]:
    if not pending.activities:
        return set(pending.users)
    ids = sorted(pending.activities)
    owners = select(Activity.owner_id).where(Activity.id.in_(ids))
    participants = select(ActivityParticipant.user_id).where(ActivityParticipant.activity_id.in_(ids))
    execute = connection.execute if connection is not None else db.session.execute
    found = {row[0] for row in execute(owners.union(participants))}
    return found | pending.users


def _make_involved_due(pending: Pending, now, connection=None) -> None:
    users = _involved_users(pending, connection)
    if make_due(users, now=now, connection=connection):
        wake(_state())


def _run_inline(app, pending: Pending) -> None:
    """Push now, in this thread, with a session of its own (the committing one is finishing)."""
    _local.active = True
    try:
        for organization_id in sorted(pending.organizations):
            with app.app_context():
                try:
                    if organization_allowed(organization_id):
                        push_pending(organization_id, trigger="change")
                except Exception:
                    log.exception("In-line push of organization %s failed", organization_id)
        if app.config.get("PUBLIC_BASE_URL"):
            for user_id in sorted(pending.switched_off):
                with app.app_context():
                    try:
                        stop_channels(user_id)
                    except Exception:
                        log.exception("Stopping the push channels of user %s failed", user_id)
    finally:
        _local.active = False
