"""The PSA data model. Everything belongs to an organization and every query is scoped to one."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from flask import current_app, has_app_context
from flask_login import UserMixin
from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    or_,
    select,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from portal.extensions import db
from portal.sync.occurrences import occurrence_key, occurrence_keys_among, occurrence_moment, occurrences
from portal.sync.recurrence import RecurrenceError

ROLES = ("admin", "user", "helpdesk")
# How long an activity's texts may be, wherever they come from (the form, the API, Google).
SUBJECT_LIMIT, LOCATION_LIMIT, DESCRIPTION_LIMIT = 255, 255, 20_000
# How many of each collection one thing may hold; more is refused with a 400/422 naming the field. A series'
# own lines are capped where they are read (MAX_RULES, MAX_DATES in portal/sync/recurrence.py), so that
# Google's items meet the same caps.
PARTICIPANTS_LIMIT = 500
PROJECT_NAME_LIMIT = TASK_NAME_LIMIT = 200
TASKS_PER_PROJECT_LIMIT = 200
PROJECTS_PER_ORGANIZATION_LIMIT = 1000
# Google keeps at most 730 instances of a series; changing or cancelling more of them one by one is a script.
EXCEPTIONS_PER_SERIES_LIMIT = 730
# What one page works out: the week of the densest rule allowed (24 a day) fits one item's share, a busy
# organization's week fits the whole; past either the page shows what fits and says more exists.
OCCURRENCES_PER_ITEM_LIMIT = 200
OCCURRENCES_PER_VIEW_LIMIT = 2000
# Steps of working one series out for a page (dateutil walks from the series' start): about 0.1 s. A daily
# series reaches this week from the 1800s within it; 24 a day, from about eleven years back.
EXPANSION_STEPS_LIMIT = 100_000


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Stores naive UTC (portable across SQLite and PostgreSQL), hands out aware UTC datetimes."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where an aware one is required")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        return None if value is None else value.replace(tzinfo=UTC)


class Organization(db.Model):
    __tablename__ = "organizations"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    # Namespaces the ids this organization's items get in Google, so two installations never collide.
    uid: Mapped[str] = mapped_column(String(32), unique=True, default=lambda: uuid.uuid4().hex)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Participants may change (not delete) the activities they take part in, as Google's "guests can
    # modify"; off, only the owner and admins change them (`portal.activities.can_edit`).
    participants_can_edit: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    users: Mapped[list[User]] = relationship(back_populates="organization", order_by="User.name")
    activity_types: Mapped[list[ActivityType]] = relationship(
        back_populates="organization", order_by="ActivityType.name"
    )

    @property
    def default_activity_type(self) -> ActivityType | None:
        return next((t for t in self.activity_types if t.is_default), None)

    @property
    def personal_activity_type(self) -> ActivityType | None:
        return next((t for t in self.activity_types if t.is_personal), None)

    def user_by_email(self, email: str) -> User | None:
        return db.session.scalar(
            select(User).where(User.organization_id == self.id, User.email == normalize_email(email))
        )


def normalize_email(email: str) -> str:
    return (email or "").strip().lower()


class User(UserMixin, db.Model):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("organization_id", "email", name="uq_users_organization_email"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    email: Mapped[str] = mapped_column(String(254))
    name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(20), default="user")
    time_zone: Mapped[str] = mapped_column(String(64), default="Europe/Amsterdam")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    organization: Mapped[Organization] = relationship(back_populates="users")

    # The token of the login session this object was loaded for (not a column): Flask-Login keeps what
    # get_id() returns in the signed cookie, so the cookie names a session the server can end, not the user.
    session_token = None

    def get_id(self) -> str | None:
        return self.session_token

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password, method=password_hash_method())

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    @property
    def is_active(self) -> bool:  # Flask-Login refuses inactive users
        return self.active

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_helpdesk(self) -> bool:
        return self.role == "helpdesk"

    @property
    def can_edit_activities(self) -> bool:
        return self.role in ("admin", "user")

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def __repr__(self) -> str:
        return f"<User {self.email}>"


def password_hash_method() -> str:
    # Tests lower the work factor through config; production keeps werkzeug's default (scrypt).
    method = current_app.config.get("PASSWORD_HASH_METHOD") if has_app_context() else None
    return method or "scrypt"









class ActivityType(db.Model):
    __tablename__ = "activity_types"
    __table_args__ = (UniqueConstraint("organization_id", "name", name="uq_activity_types_organization_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    colour: Mapped[str] = mapped_column(String(7), default="#4f6d9a")
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    is_personal: Mapped[bool] = mapped_column(Boolean, default=False)
    sync_to_google: Mapped[bool] = mapped_column(Boolean, default=False)

    organization: Mapped[Organization] = relationship(back_populates="activity_types")

    STANDARD = (
        # name, colour, is_default, is_personal, sync_to_google
        ("Internal", "#4f6d9a", True, False, True),
        ("Meeting", "#2e8b57", False, False, True),
        ("Customer visit", "#c07a12", False, False, True),
        ("Personal", "#8a4f9a", False, True, True),
    )

    @classmethod
    def create_standard(cls, organization: Organization) -> list[ActivityType]:
        return [
            cls(
                organization=organization,
                name=name,
                colour=colour,
                is_default=is_default,
                is_personal=is_personal,
                sync_to_google=sync,
            )
            for name, colour, is_default, is_personal, sync in cls.STANDARD
        ]


class Project(db.Model):
    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("organization_id", "name", name="uq_projects_organization_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    organization: Mapped[Organization] = relationship()
    tasks: Mapped[list[ProjectTask]] = relationship(
        back_populates="project", order_by="ProjectTask.id", cascade="all, delete-orphan"
    )


class ProjectTask(db.Model):
    __tablename__ = "project_tasks"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))

    project: Mapped[Project] = relationship(back_populates="tasks")

    @property
    def label(self) -> str:
        return f"{self.project.name} / {self.name}"


class ActivityParticipant(db.Model):
    __tablename__ = "activity_participants"

    activity_id: Mapped[int] = mapped_column(ForeignKey("activities.id"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True, index=True)
    # The participant's answer: given in the portal or in Google, whichever came last.
    response_status: Mapped[str] = mapped_column(String(20), default="needsAction")
    # Given in the portal and not yet in the participant's own Google copy: their next cycle sends it, and
    # until then what Google still reports does not overwrite it.
    response_pending: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    activity: Mapped[Activity] = relationship(back_populates="participant_links")
    user: Mapped[User] = relationship()


# An activity's texts, each with the name Google's events give it. One occurrence of a series can have texts
# of its own; those it has not follow the series'.
ACTIVITY_TEXTS = {"subject": "summary", "description": "description", "location": "location"}
# What one occurrence of a series can have of its own, as one of Google's changed occurrences can.
OCCURRENCE_FIELDS = (*ACTIVITY_TEXTS, "start", "end")
# An activity's fields as the API and the calendar form exchange them. The sync carries all but the owner
# and the project task, and of the type only whether it is personal (private in Google).
ACTIVITY_FIELDS = (*OCCURRENCE_FIELDS, "all_day", "time_zone", "recurrence", "participants", "activity_type",
                   "owner", "project_task")


class Activity(db.Model):
    """A calendar item. Timed items store UTC instants plus an IANA zone; all-day items store dates."""

    __tablename__ = "activities"
    __table_args__ = (Index("ix_activities_organization_updated", "organization_id", "updated_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    subject: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    location: Mapped[str] = mapped_column(String(255), default="")
    all_day: Mapped[bool] = mapped_column(Boolean, default=False)
    start_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    start_date: Mapped[date | None] = mapped_column(Date)
    end_date: Mapped[date | None] = mapped_column(Date)  # exclusive, as in RFC 5545 and Google
    time_zone: Mapped[str] = mapped_column(String(64))
    recurrence_text: Mapped[str] = mapped_column("recurrence", Text, default="")
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    activity_type_id: Mapped[int] = mapped_column(ForeignKey("activity_types.id"))
    project_task_id: Mapped[int | None] = mapped_column(ForeignKey("project_tasks.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # tombstone: the sync must see deletions
    version: Mapped[int] = mapped_column(Integer, default=1)
    # Every UPDATE of the row is conditional on the version it was read with (`touch()` moves it on): a person
    # and a sync cycle writing one activity at once never overwrite each other unseen; the later one gets
    # StaleDataError and merges again.
    __mapper_args__ = {"version_id_col": version, "version_id_generator": False}
    # Who organizes the Google event when it is not the owner: a guest's invitation from outside the
    # organization (only they can change it), or a participant standing in for an owner Google does not know.
    google_organizer: Mapped[str | None] = mapped_column(String(254))

    organization: Mapped[Organization] = relationship()
    owner: Mapped[User] = relationship(foreign_keys=[owner_id])
    activity_type: Mapped[ActivityType] = relationship()
    project_task: Mapped[ProjectTask | None] = relationship()
    participant_links: Mapped[list[ActivityParticipant]] = relationship(
        back_populates="activity", cascade="all, delete-orphan", order_by="ActivityParticipant.user_id"
    )
    exceptions: Mapped[list[RecurrenceException]] = relationship(
        back_populates="activity", cascade="all, delete-orphan", order_by="RecurrenceException.original_start"
    )

    @property
    def participants(self) -> list[User]:
        return [link.user for link in self.participant_links]

    def set_participants(self, users: list[User]) -> None:
        wanted = {u.id for u in users}
        self.participant_links = [link for link in self.participant_links if link.user_id in wanted]
        present = {link.user_id for link in self.participant_links}
        for user in users:
            if user.id not in present:
                self.participant_links.append(ActivityParticipant(user=user, user_id=user.id))
                present.add(user.id)

    @property
    def recurrence(self) -> list[str]:
        return [line for line in self.recurrence_text.splitlines() if line.strip()]

    @recurrence.setter
    def recurrence(self, lines: list[str]) -> None:
        self.recurrence_text = "\n".join(lines)

    @classmethod
    def ids_involving(cls, user: User):
        """The ids of the activities `user` owns or takes part in, as a subquery: what a user sees of their
        organization's items, what their calendar sync reads, what their profile reports on."""
        participates = select(ActivityParticipant.activity_id).where(ActivityParticipant.user_id == user.id)
        return select(cls.id).where(cls.organization_id == user.organization_id,
                                    or_(cls.owner_id == user.id, cls.id.in_(participates)))

    @property
    def span(self) -> tuple[date, date] | tuple[datetime, datetime]:
        """The (first) start and end in the item's own form: dates all day, UTC instants otherwise."""
        return (self.start_date, self.end_date) if self.all_day else (self.start_at, self.end_at)

    @property
    def is_recurring(self) -> bool:
        return bool(self.recurrence)

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def local_start(self, zone: ZoneInfo | None = None) -> datetime | None:
        return None if self.start_at is None else self.start_at.astimezone(zone or self.zone)

    def local_end(self, zone: ZoneInfo | None = None) -> datetime | None:
        return None if self.end_at is None else self.end_at.astimezone(zone or self.zone)

    def occurrences_between(self, after: datetime, before: datetime) -> list[Occurrence]:
        """The occurrences overlapping [after, before), exceptions applied (cancelled ones left out)."""
        return self.occurrences_shown(after, before)[0]

    def occurrences_shown(self, after: datetime, before: datetime, *, limit: int | None = None,
                          budget: int | None = None) -> tuple[list[Occurrence], bool]:
        """The first ``limit`` occurrences overlapping [after, before), and whether there are more than it gives.

        With ``budget`` (steps of working the rule out, see `occurrences`) a series too large or too old to work
        out in full, or one stored with more lines than a series may have, gives what was found by then and
        says there is more: a page stays small and quick whatever is stored.
        """
        start, end = self.span
        more = False
        if self.is_recurring:
            # All-day occurrences are dates, not instants: a viewer 25 hours away from the series' zone
            # must still see Monday's item on Monday, so the scan is widened and dates decide below.
            slack = timedelta(days=2) if self.all_day else timedelta(0)
            pairs = occurrences(start, end, self.time_zone, self.recurrence, after=after - slack,
                                before=before + slack, all_day=self.all_day, budget=budget)
        else:
            pairs = iter([(start, end)])
        exceptions = {e.original_start: e for e in self.exceptions}
        result: list[Occurrence] = []

        def take(occurrence: Occurrence) -> bool:
            """Keep an occurrence in the window; False once the limit is reached (and it is left out)."""
            if not occurrence.overlaps(after, before):
                return True
            if limit is not None and len(result) >= limit:
                return False
            result.append(occurrence)
            return True

        try:
            for occ_start, occ_end in pairs:
                key = occurrence_key(occ_start, self.all_day) if self.is_recurring else ""
                exception = exceptions.pop(key, None)
                if exception is not None and exception.cancelled:
                    continue
                if not take(Occurrence.of(self, key, occ_start, occ_end, exception)):
                    more = True
                    break
        except RecurrenceError:
            if budget is None:
                raise
            more = True
            if not result and (limit is None or limit > 0):
                result = self._start_only(start, end, after, before)
        # A moved occurrence can land in the window even when its original slot is outside it. One whose
        # original slot the series no longer has (its time changed) is gone, as in Google.
        moved = {k: e for k, e in exceptions.items() if not e.cancelled and (e.start_at or e.start_date)}
        try:
            alive = occurrence_keys_among(start, end, self.time_zone, self.recurrence, moved,
                                          all_day=self.all_day, budget=budget) if moved and self.is_recurring else set()
        except RecurrenceError:
            if budget is None:
                raise
            alive, more = set(), True
        for key, exception in moved.items():
            if key not in alive:
                continue
            if not take(Occurrence.of(self, key, None, None, exception)):
                more = True
                break
        return sorted(result, key=lambda o: o.sort_key), more

    def _start_only(self, start, end, after: datetime, before: datetime) -> list[Occurrence]:
        """The start is an occurrence whatever the rule says (RFC 5545): a series too large to work out shows
        at least that one."""
        key = occurrence_key(start, self.all_day)
        exception = self.exception_for(key)
        occurrence = Occurrence.of(self, key, start, end, exception)
        cancelled = exception is not None and exception.cancelled
        return [occurrence] if not cancelled and occurrence.overlaps(after, before) else []

    def rule_occurrence(self, key: str) -> tuple[datetime | date, datetime | date] | None:
        """The start and end the rule gives occurrence ``key``, or None when the series has no such one."""
        if not self.is_recurring:
            return None
        start, end = self.span
        try:
            if key not in occurrence_keys_among(start, end, self.time_zone, self.recurrence, [key],
                                                all_day=self.all_day):
                return None
            moment = occurrence_moment(key, self.time_zone, all_day=self.all_day)
        except (RecurrenceError, ValueError):
            return None
        return moment, moment + (end - start)

    def occurrence(self, key: str) -> Occurrence | None:
        """Occurrence ``key`` as it shows (its exception applied); None if there is none or it is cancelled."""
        key = (key or "").strip().upper()
        times = self.rule_occurrence(key)
        if times is None:
            return None
        exception = self.exception_for(key)
        if exception is not None and exception.cancelled:
            return None
        return Occurrence.of(self, key, times[0], times[1], exception)

    def exception_for(self, key: str) -> RecurrenceException | None:
        return next((e for e in self.exceptions if e.original_start == key), None)

    def set_exception(self, key: str, *, cancelled: bool = False, subject: str | None = None,
                      description: str | None = None, location: str | None = None,
                      start: datetime | date | None = None, end: datetime | date | None = None) -> None:
        """Make occurrence ``key`` differ from the rule: moved, retitled, or cancelled.

        Values equal to the series' are stored as None ("as the series"), the way the sync reads an
        occurrence edited in Google, so the same edit made on either side is the same exception.
        """
        row = self.exception_for(key)
        if row is None:
            row = RecurrenceException(original_start=key)
            self.exceptions.append(row)
        row.cancelled = cancelled
        if cancelled:
            row.subject = row.description = row.location = None
            row.start_at = row.end_at = row.start_date = row.end_date = None
            return
        row.subject = None if subject is None or subject == self.subject else subject
        row.description = None if description is None or description == (self.description or "") else description
        row.location = None if location is None or location == (self.location or "") else location
        timed = isinstance(start, datetime)
        row.start_at, row.end_at = (start, end) if timed else (None, None)
        row.start_date, row.end_date = (None, None) if timed else (start, end)
        if row.subject is None and row.description is None and row.location is None \
                and self.rule_occurrence(key) == (start, end):
            self.exceptions.remove(row)  # back to exactly what the series says: no exception at all

    def drop_orphan_exceptions(self) -> list[str]:
        """Forget exceptions of occurrences the series no longer has; returns their keys."""
        if not self.exceptions:
            return []
        keys = [e.original_start for e in self.exceptions]
        start, end = self.span
        alive = occurrence_keys_among(start, end, self.time_zone, self.recurrence, keys,
                                      all_day=self.all_day) if self.is_recurring else set()
        gone = [k for k in keys if k not in alive]
        for exception in [e for e in self.exceptions if e.original_start in gone]:
            self.exceptions.remove(exception)
        return gone

    def involves(self, user: User) -> bool:
        return self.owner_id == user.id or any(link.user_id == user.id for link in self.participant_links)

    def visible_to(self, user: User) -> bool:
        if user.organization_id != self.organization_id:
            return False
        return user.is_admin or self.involves(user)

    def mark_deleted(self) -> None:
        self.deleted_at = utcnow()
        self.touch()

    def touch(self) -> None:
        self.updated_at = utcnow()
        self.version = (self.version or 0) + 1


@dataclass(frozen=True)
class Occurrence:
    """One appearance of an activity on the calendar (the item itself, or one occurrence of a series)."""

    activity: Activity
    key: str
    start: datetime | date
    end: datetime | date
    subject: str
    location: str
    modified: bool

    @classmethod
    def of(cls, activity, key, start, end, exception) -> Occurrence:
        if exception is not None:
            start = exception.start_at or exception.start_date or start
            end = exception.end_at or exception.end_date or end
        return cls(
            activity=activity,
            key=key,
            start=start,
            end=end,
            subject=(exception.subject if exception and exception.subject else activity.subject),
            location=(exception.location if exception and exception.location is not None else activity.location),
            modified=exception is not None,
        )

    @property
    def all_day(self) -> bool:
        return not isinstance(self.start, datetime)

    def overlaps(self, after: datetime, before: datetime) -> bool:
        if self.all_day:
            return self.start < before.date() + timedelta(days=1) and self.end > after.date()
        return self.start < before and self.end > after

    @property
    def sort_key(self):
        if self.all_day:
            return (self.start.isoformat(), 0)
        return (self.start.astimezone(UTC).date().isoformat(), 1, self.start.astimezone(UTC))

    def local_start(self, zone: ZoneInfo) -> datetime | date:
        return self.start if self.all_day else self.start.astimezone(zone)

    def local_end(self, zone: ZoneInfo) -> datetime | date:
        return self.end if self.all_day else self.end.astimezone(zone)


class RecurrenceException(db.Model):
    """One occurrence of a series, modified or cancelled, keyed by its original start.

    The key is `YYYYMMDDTHHMMSSZ` (UTC) for timed series and `YYYYMMDD` for all-day ones: the suffix Google
    puts in instance ids, so both sides name an occurrence the same way.
    """

    __tablename__ = "recurrence_exceptions"
    __table_args__ = (UniqueConstraint("activity_id", "original_start", name="uq_exceptions_activity_start"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    activity_id: Mapped[int] = mapped_column(ForeignKey("activities.id"), index=True)
    original_start: Mapped[str] = mapped_column(String(20))
    cancelled: Mapped[bool] = mapped_column(Boolean, default=False)
    subject: Mapped[str | None] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    location: Mapped[str | None] = mapped_column(String(255))
    start_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    start_date: Mapped[date | None] = mapped_column(Date)
    end_date: Mapped[date | None] = mapped_column(Date)

    activity: Mapped[Activity] = relationship(back_populates="exceptions")


class ChangeRecord(db.Model):
    """The outbox: one row per committed change of an activity, written in the same transaction.

    A row stays unprocessed until the sync has pushed it, so a crash right after a commit loses nothing.
    """

    __tablename__ = "change_records"
    __table_args__ = (
        Index("ix_change_records_pending", "organization_id", "processed_at"),
        # Every sync worker asks each tick which organizations have unpushed changes: an index over just
        # those rows keeps that cheap however long the outbox's history grows.
        Index("ix_change_records_unpushed", "organization_id",
              sqlite_where=text("processed_at IS NULL"), postgresql_where=text("processed_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    activity_id: Mapped[int] = mapped_column(ForeignKey("activities.id"), index=True)
    action: Mapped[str] = mapped_column(String(10))  # create | update | delete | restore
    origin: Mapped[str] = mapped_column(String(10), default="portal")  # portal | google
    changed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # The synced fields an update touched (None: a create, delete or restore): a field changed and changed
    # back before the sync came by still counts as changed, so a concurrent change in Google is a conflict.
    fields: Mapped[list | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    activity: Mapped[Activity] = relationship()
    organization: Mapped[Organization] = relationship()


class GoogleIntegration(db.Model):
    """An organization's connection to Google Workspace: one row per organization.

    The key file and its password are stored only as Fernet tokens (`portal.integration` encrypts and
    decrypts them); every other column is safe to show to the organization's admins and the helpdesk.
    """

    __tablename__ = "google_integrations"

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), unique=True)
    service_account_email: Mapped[str] = mapped_column(String(254), default="")
    client_id: Mapped[str] = mapped_column(String(64), default="")
    project_id: Mapped[str] = mapped_column(String(100), default="")
    key_kind: Mapped[str | None] = mapped_column(String(4))  # p12 | json
    key_ciphertext: Mapped[str | None] = mapped_column(Text)
    password_ciphertext: Mapped[str | None] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(String(64), default="")  # what Google Cloud shows as the key's ID
    key_fingerprint: Mapped[str] = mapped_column(String(95), default="")  # SHA-256 of the public key
    key_valid_from: Mapped[datetime | None] = mapped_column(UTCDateTime)
    key_valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    key_uploaded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # The current integration-level error, from a connection test or a sync cycle.
    error_code: Mapped[str | None] = mapped_column(String(50))
    error_cause: Mapped[str | None] = mapped_column(Text)
    error_fix: Mapped[str | None] = mapped_column(Text)
    error_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_test_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_test_email: Mapped[str | None] = mapped_column(String(254))
    last_test_ok: Mapped[bool | None] = mapped_column(Boolean)
    # Moves only when the admin changes something; an error older than this no longer pauses the sync.
    settings_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    organization: Mapped[Organization] = relationship()

    @classmethod
    def for_organization(cls, organization: Organization) -> GoogleIntegration:
        """The organization's row, created (unsaved, switched off) when there is none yet."""
        row = db.session.scalar(select(cls).where(cls.organization_id == organization.id))
        if row is None:
            row = cls(organization=organization, organization_id=organization.id, enabled=False,
                      service_account_email="", client_id="", project_id="", key_id="", key_fingerprint="",
                      settings_changed_at=utcnow())
            db.session.add(row)
        return row

    @property
    def has_key(self) -> bool:
        return self.key_ciphertext is not None

    @property
    def has_password(self) -> bool:
        return self.password_ciphertext is not None

    @property
    def is_configured(self) -> bool:
        return bool(self.service_account_email and self.has_key)

    @property
    def is_paused(self) -> bool:
        """An integration-level error stops the sync until the admin changes a setting."""
        return self.error_at is not None and self.error_at >= self.settings_changed_at

    @property
    def sync_allowed(self) -> bool:
        return self.enabled and self.is_configured and not self.is_paused

    def settings_changed(self) -> None:
        self.settings_changed_at = utcnow()

    def record_error(self, code: str, cause: str, fix: str) -> None:
        self.error_code, self.error_cause, self.error_fix, self.error_at = code, cause, fix, utcnow()

    def clear_error(self) -> None:
        self.error_code = self.error_cause = self.error_fix = self.error_at = None


class AuditEntry(db.Model):
    """Who changed which setting of an organization, and when. Never holds a secret."""

    __tablename__ = "audit_entries"
    __table_args__ = (Index("ix_audit_entries_organization_at", "organization_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))  # None: an operator at the CLI
    action: Mapped[str] = mapped_column(String(50))
    details: Mapped[dict] = mapped_column(JSON, default=dict)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    user: Mapped[User | None] = relationship()

    @property
    def actor(self) -> str:
        return self.user.email if self.user else "operator (command line)"
