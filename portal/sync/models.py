"""What the sync remembers: each user's switch and calendar position, the links, cycles and the journal,
leases, and the watch channels Google opened."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    case,
    delete,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.extensions import db
from portal.models import Activity, User, UTCDateTime, utcnow

# What `CalendarSync.claimed_until` holds after a cycle that did not end cleanly (it crashed, or the database
# stayed locked): earlier than any now, so the user can be taken at once, and not None, so the next cycle
# looks for a row that one left "running".
UNCLEAN_END = datetime(2000, 1, 1, tzinfo=UTC)


class CalendarSync(db.Model):
    """One user's calendar sync: their own switch, Google's sync token, status and the user-level banner."""

    __tablename__ = "calendar_syncs"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sync_token: Mapped[str | None] = mapped_column(Text)
    full_sync_needed: Mapped[bool] = mapped_column(Boolean, default=True)
    first_synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_cycle_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error_code: Mapped[str | None] = mapped_column(String(50))
    error_cause: Mapped[str | None] = mapped_column(Text)
    error_fix: Mapped[str | None] = mapped_column(Text)
    error_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    backoff_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # How far the first sync got, in items of its plan: None until it has read both sides and planned.
    first_sync_total: Mapped[int | None] = mapped_column(Integer)
    first_sync_done: Mapped[int | None] = mapped_column(Integer)
    # The expiry of the watch channel Google confirmed (its "sync" message arrived and its answer was
    # recorded): while it is open and not due for renewal, notifications replace the 30-second poll
    # (`runtime.push_trusted`). None: poll. Kept here so the claim reads it with the row it claims.
    push_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Whoever runs this user's cycle holds the user until then: the scheduler's claim writes it in the same
    # statement that claims (so the claim is the user's lease), other callers compare-and-set it. Cleared
    # with the cycle's end; an earlier instant left in it says the last holder did not end cleanly.
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(100))  # the worker holding (or last holding) the user
    # Quiet cycles (nothing pulled, pushed or changed, no problem) are counted, not stored one row each:
    # the current run of them here; a cycle that keeps its row takes the run before it along (SyncCycle).
    quiet_cycles: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    quiet_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_quiet_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Whether answers given in the portal may wait to be sent to the user's Google copies: set in the same
    # transaction as an answer (`triggers`), cleared by the cycle that finds none left, so an idle cycle
    # does not look for them. True for a new row: its first cycle looks once.
    answers_pending: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())

    user: Mapped[User] = relationship()

    @classmethod
    def released(cls, until: datetime, *, clean: bool = True):
        """The `claimed_until` value that gives the user back if the hold written as `until` is still there
        (a later holder's is left alone). An unclean end leaves `UNCLEAN_END`, so the next holder looks for a
        cycle row left "running"."""
        return case((cls.claimed_until == until, None if clean else UNCLEAN_END), else_=cls.claimed_until)

    @classmethod
    def for_user(cls, user: User) -> CalendarSync:
        row = db.session.get(cls, user.id)
        if row is None:
            row = cls(user_id=user.id, organization_id=user.organization_id, enabled=False, full_sync_needed=True,
                      failures=0)
            db.session.add(row)
        return row

    def switch(self, enabled: bool) -> None:
        if enabled and not self.enabled:
            self.enabled_at = utcnow()
            # Switching on (again) starts from a first sync: matching links what both sides already have.
            self.full_sync_needed = True
            self.sync_token = None
            self.due_at = utcnow()
            self.first_sync_total = self.first_sync_done = None
        if not enabled:
            self.clear_error()
        self.enabled = enabled

    def record_error(self, code: str, cause: str, fix: str) -> None:
        self.error_code, self.error_cause, self.error_fix, self.error_at = code, cause, fix, utcnow()

    def clear_error(self) -> None:
        self.error_code = self.error_cause = self.error_fix = self.error_at = None

    @property
    def first_sync_running(self) -> bool:
        """Switched on and its first sync (or a full read again) not finished, with nothing stopping it."""
        return bool(self.enabled and self.full_sync_needed and not self.error_code)

    @property
    def status(self) -> str:
        if not self.enabled:
            return "off"
        if self.error_code:
            return "error"
        if self.last_success_at is None:
            return "pending"
        return "synced"


class SyncLink(db.Model):
    """One activity and its Google event, with the state both last agreed on (the merge's base)."""

    __tablename__ = "sync_links"
    __table_args__ = (
        UniqueConstraint("organization_id", "google_event_id", name="uq_sync_links_event"),
        UniqueConstraint("activity_id", name="uq_sync_links_activity"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    activity_id: Mapped[int | None] = mapped_column(ForeignKey("activities.id"))
    google_event_id: Mapped[str | None] = mapped_column(String(1024))
    # The calendar the event lives in (the organizer's); writes go there, attendee copies follow.
    calendar_email: Mapped[str] = mapped_column(String(254))
    origin: Mapped[str] = mapped_column(String(10))  # portal | google: where the item was born
    generation: Mapped[int] = mapped_column(Integer, default=0)
    # False while an insert is under way: the id is reserved so no pull mistakes the event for a new one.
    confirmed: Mapped[bool] = mapped_column(Boolean, default=False)
    base_state: Mapped[dict | None] = mapped_column(JSON)
    # What an insert under way carries (written down before it is sent): if its answer is lost, reading the
    # reserved id back tells whether it went through, and this is then the state both sides agreed on.
    pending_state: Mapped[dict | None] = mapped_column(JSON)
    base_hash: Mapped[str | None] = mapped_column(String(64))
    etag: Mapped[str | None] = mapped_column(String(100))  # of the organizer's copy
    google_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    external_attendees: Mapped[list | None] = mapped_column(JSON)
    # Google's eventType of the event (None: default): Google refuses some changes to some types.
    event_type: Mapped[str | None] = mapped_column(String(20))
    error_message: Mapped[str | None] = mapped_column(Text)
    error_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(Integer, default=1)

    activity: Mapped[Activity | None] = relationship()

    __mapper_args__ = {"version_id_col": version}  # two workers never both move one link's base


class SyncCycle(db.Model):
    """One run of the sync for a user (or of an organization's outbox), with its counts."""

    __tablename__ = "sync_cycles"
    __table_args__ = (Index("ix_sync_cycles_user_started", "user_id", "started_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    trigger: Mapped[str] = mapped_column(String(20), default="scheduler")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    pulled: Mapped[int] = mapped_column(Integer, default=0)
    pushed: Mapped[int] = mapped_column(Integer, default=0)
    portal_created: Mapped[int] = mapped_column(Integer, default=0)
    portal_updated: Mapped[int] = mapped_column(Integer, default=0)
    portal_deleted: Mapped[int] = mapped_column(Integer, default=0)
    google_created: Mapped[int] = mapped_column(Integer, default=0)
    google_updated: Mapped[int] = mapped_column(Integer, default=0)
    google_deleted: Mapped[int] = mapped_column(Integer, default=0)
    conflicts: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(20), default="running")  # ok | partial | failed | skipped
    message: Mapped[str | None] = mapped_column(Text)
    # What stopped a failed cycle (a code of portal.sync.google.ERRORS, or one of portal.diagnostics.OTHER_ERRORS),
    # so diagnostics count each kind of failure without reading the message.
    error_code: Mapped[str | None] = mapped_column(String(50))
    # The user's quiet cycles between the previous stored cycle and this one: how many, first and last.
    quiet_before: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    quiet_first_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    quiet_last_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User | None] = relationship()

    @property
    def quiet(self) -> bool:
        """Nothing pulled, pushed or changed on either side, and no problem: such a cycle is only counted."""
        return (self.status == "ok" and not self.message and not self.pulled and not self.pushed
                and not (self.portal_created or self.portal_updated or self.portal_deleted or self.google_created
                         or self.google_updated or self.google_deleted or self.conflicts or self.errors))

    def summary(self) -> str:
        return (
            f"{self.status}: pulled {self.pulled}, pushed {self.pushed}; portal +{self.portal_created} "
            f"~{self.portal_updated} -{self.portal_deleted}; google +{self.google_created} ~{self.google_updated} "
            f"-{self.google_deleted}; {self.conflicts} conflicts, {self.errors} errors, {self.requests} requests, "
            f"{self.duration_ms} ms" + (f" ({self.message})" if self.message else "")
        )


class SyncJournalEntry(db.Model):
    """One item change the sync made, a conflict it decided, or an item it could not sync."""

    __tablename__ = "sync_journal"
    __table_args__ = (Index("ix_sync_journal_activity", "activity_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    cycle_id: Mapped[int | None] = mapped_column(ForeignKey("sync_cycles.id"), index=True)
    activity_id: Mapped[int | None] = mapped_column(ForeignKey("activities.id"))
    google_event_id: Mapped[str | None] = mapped_column(String(1024))
    kind: Mapped[str] = mapped_column(String(20))  # created | updated | deleted | restored | linked | conflict | error | answered
    side: Mapped[str | None] = mapped_column(String(10))  # the side that was written (or lost, for conflicts)
    field: Mapped[str | None] = mapped_column(String(100))
    before: Mapped[dict | list | str | None] = mapped_column(JSON)
    after: Mapped[dict | list | str | None] = mapped_column(JSON)
    message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    # Set by the engine's journal: the cycle's row is stored with the first entry that names it.
    cycle: Mapped[SyncCycle | None] = relationship()


class Lease(db.Model):
    """A named lease with expiry: whoever holds it may do the work it names (one user's cycle, say)."""

    __tablename__ = "sync_leases"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(100))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @classmethod
    def acquire(cls, name: str, owner: str, seconds: float) -> bool:
        """Take the lease if free or expired (or already ours); atomic on SQLite and PostgreSQL."""
        now = utcnow()
        expires = now + timedelta(seconds=seconds)
        if db.session.get(cls, name) is None:
            try:
                with db.session.begin_nested():
                    db.session.add(cls(name=name, owner=None, expires_at=now))
            except Exception:  # noqa: BLE001 - another process created it first; fall through to the update
                pass
        result = db.session.execute(
            update(cls)
            .where(cls.name == name, (cls.expires_at <= now) | (cls.owner == owner) | cls.owner.is_(None))
            .values(owner=owner, expires_at=expires)
        )
        db.session.commit()
        return result.rowcount == 1

    @classmethod
    def acquire_many(cls, names, owner: str, seconds: float) -> set[str]:
        """Take each of `names` that is free, expired or ours already; returns the names taken.

        One upsert per 500 names: PostgreSQL locks each row and checks the condition on its latest version,
        SQLite runs one writer at a time, so no two callers ever take the same name. Sorted, so two callers
        taking overlapping sets lock in the same order and never wait on each other in a circle.
        """
        names = sorted(set(names))
        if not names:
            return set()
        now = utcnow()
        expires = now + timedelta(seconds=seconds)
        upsert = postgresql.insert if db.session.get_bind().dialect.name == "postgresql" else sqlite.insert
        taken: set[str] = set()
        for start in range(0, len(names), 500):
            statement = upsert(cls).values([{"name": n, "owner": owner, "expires_at": expires}
                                            for n in names[start:start + 500]])
            statement = statement.on_conflict_do_update(
                index_elements=[cls.name], set_={"owner": owner, "expires_at": expires},
                where=(cls.expires_at <= now) | (cls.owner == owner) | cls.owner.is_(None))
            taken.update(db.session.scalars(statement.returning(cls.name)))
        db.session.commit()
        return taken

    @classmethod
    def release_many(cls, names, owner: str) -> None:
        """Give back leases taken with `acquire_many` (their rows go: names like these are many)."""
        names = sorted(set(names))
        for start in range(0, len(names), 500):
            db.session.execute(delete(cls).where(cls.name.in_(names[start:start + 500]), cls.owner == owner))
        db.session.commit()

    @classmethod
    def release(cls, name: str, owner: str) -> None:
        db.session.execute(update(cls).where(cls.name == name, cls.owner == owner).values(owner=None))
        db.session.commit()

    @classmethod
    def holder(cls, name: str) -> str | None:
        row = db.session.scalar(select(cls).where(cls.name == name, cls.expires_at > utcnow()))
        return row.owner if row else None


class WatchChannel(db.Model):
    """A notification channel (`events.watch`) Google opened for one user's primary calendar."""

    __tablename__ = "sync_push_channels"  # the name migration 0004 gave it

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # chosen by the portal, sent to Google
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    resource_id: Mapped[str | None] = mapped_column(String(255))  # Google's id of the watched calendar
    # Google echoes the token in every notification; only its hash is kept, so the table cannot forge one.
    token_hash: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    notifications: Mapped[int] = mapped_column(Integer, default=0)
    last_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error_message: Mapped[str | None] = mapped_column(Text)  # why Google refused to open it
    # Google's message numbers increase per channel: one not above the highest seen is a replay.
    last_message_number: Mapped[int | None] = mapped_column(BigInteger)
    # Notifications acted on in the current minute of this channel (the rate limit's fixed window).
    window_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    window_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    @staticmethod
    def hash(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def token_matches(self, token: str) -> bool:
        return hmac.compare_digest(self.token_hash, self.hash(token or ""))

    def is_open(self, now: datetime) -> bool:
        return self.stopped_at is None and self.expires_at is not None and self.expires_at > now


class SharedToken(db.Model):
    """An access token Google issued, shared by every worker process (`portal.sync.token_store`).

    Only the Fernet ciphertext of the token is stored (under ENCRYPTION_KEY, as the key files are). The
    row's key is a hash of what the token was issued for (key fingerprint, service account, token URI,
    scopes, user), so a rotated key or another scope never finds another's token; the fingerprint and the
    user are kept beside it so that forgetting a key's or a user's tokens is one delete.
    """

    __tablename__ = "sync_shared_tokens"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(128), index=True)
    subject: Mapped[str] = mapped_column(String(320), index=True)
    token_ciphertext: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
