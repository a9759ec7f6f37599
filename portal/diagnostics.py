"""An organization's sync diagnostics, as helpdesk staff and the organization's admins read them.

Built from what the sync records (cycles, the journal's item errors, each user's `CalendarSync` row and the
integration): a timeline of the last 24 hours, every user's health with counts, the cycles with the quiet
ones run together, and the error catalogue with how often each error occurred. Nothing here ever reads an
activity's contents for display: item errors name the activity by number, and a message that quotes the
activity's subject, place or description has those words taken out, because helpdesk staff read these pages.

Pure apart from the queries in `read_*`: the builders take rows, the current instant and the viewer's zone.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo

from sqlalchemy import func, select

from portal.extensions import db
from portal.models import Activity, GoogleIntegration, User
from portal.sync.google import ERRORS, ItemError, error_for
from portal.sync.journal_text import plural
from portal.sync.models import CalendarSync, SyncCycle, SyncJournalEntry
from portal.sync.status import HEALTH_STATES, Health, user_health

DAY = timedelta(hours=24)
MONTH = timedelta(days=30)

# Codes the sync records that are not Google's: (cause, fix).
OTHER_ERRORS: dict[str, tuple[str, str]] = {
    "concurrent_change": (
        "Another worker changed some of the same items at the same moment.",
        "Nothing to do: those items are merged again in the next cycle.",
    ),
    "database_busy": (
        "The portal's database was busy: another writer held a lock the cycle needed.",
        "Nothing to do if it happens now and then: nothing was lost and the changes are retried in the next "
        "cycle. If it repeats, the database is overloaded; on SQLite, move to PostgreSQL for several workers.",
    ),
    "unexpected_error": (
        "The cycle stopped on an unexpected error in the portal.",
        "Nothing to do if it happens now and then: the cycle is tried again. If it repeats, the portal "
        "server's log names the error; report it with the time it happened.",
    ),
}

# What each code means in a few words, for lists and headings where the full cause would not fit.
SUMMARIES: dict[str, str] = {
    "invalid_jwt_signature": "Google refused the service account's private key",
    "service_account_not_found": "Google does not know the service account",
    "delegation_missing": "the service account is not allowed to act for users",
    "scopes_insufficient": "the delegation lacks the Calendar permission",
    "invalid_scope": "Google refused the permissions the portal asked for",
    "clock_skew": "the portal server's clock is wrong",
    "token_refused": "Google refused to issue a token",
    "token_rejected": "Google rejected the portal's access token",
    "api_not_enabled": "the Google Calendar API is not enabled for the service account's project",
    "key_unreadable": "the stored private key can no longer be opened",
    "not_configured": "the integration is not set up yet",
    "unknown_user": "the user is not in the Google Workspace",
    "calendar_not_found": "the user's Google calendar could not be found",
    "calendar_forbidden": "Google refused access to the user's calendar",
    "unreachable": "Google could not be reached",
    "timeout": "Google did not answer in time",
    "rate_limited": "Google asked the portal to slow down",
    "google_unavailable": "Google had a temporary problem",
    "sync_token_expired": "Google asked for the calendar to be read again in full",
    "event_not_found": "the event no longer exists in Google",
    "event_deleted": "the event was deleted in Google",
    "duplicate": "the event exists in Google already",
    "precondition_failed": "the event changed in Google in the meantime",
    "not_organizer": "only the event's organizer can change it",
    "locked_copy": "the event is a locked copy in Google",
    "made_by_gmail": "Gmail made the event, and Google lets nobody change it",
    "event_refused": "Google refused an event",
    "google_error": "Google answered with an unexpected error",
    "concurrent_change": "two workers changed the same items at once",
    "database_busy": "the portal's database was busy",
    "unexpected_error": "the cycle stopped on an unexpected error",
}

LEVELS = {"integration": "stops the whole organization's sync", "user": "stops one user's sync",
          "item": "one item is not synced", "transient": "passes by itself", "portal": "the portal retries"}


def code_words(code: str) -> str:
    """A code as words ("delegation_missing" -> "delegation missing"), for beside a summary."""
    return code.replace("_", " ")


def summary_of(code: str | None) -> str:
    """A code's meaning in a few words ("the service account is not allowed to act for users")."""
    if not code:
        return "an error"
    return SUMMARIES.get(code, code_words(code))


def integration_problem(integration: GoogleIntegration | None) -> str | None:
    """The organization-level problem in words ("Paused — the service account is not allowed to act for users
    (delegation missing)"); None without one."""
    if integration is None or not integration.error_code:
        return None
    lead = "Paused" if integration.is_paused else "Last error"
    return f"{lead} — {summary_of(integration.error_code)} ({code_words(integration.error_code)})"


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# ---------------------------------------------------------------------------------------------------------
# The timeline


@dataclass(frozen=True)
class Bucket:
    """A slot of the timeline (15 minutes) with what happened in it."""

    start: datetime
    end: datetime
    ok: int = 0
    partial: int = 0
    failed: int = 0
    skipped: int = 0
    item_errors: int = 0

    @property
    def cycles(self) -> int:
        return self.ok + self.partial + self.failed + self.skipped


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    result: str  # ok | partial | failed | skipped
    fill: str


@dataclass(frozen=True)
class Slot:
    """One drawn column: its bars (stacked by result), its marks and the hover text."""

    x: float
    width: float
    bars: tuple[Bar, ...]
    failed: bool
    item_errors: int
    title: str


@dataclass(frozen=True)
class Timeline:
    width: int
    height: int
    plot_left: int
    plot_right: int
    bars_top: int
    bars_bottom: int
    failed_y: int
    errors_y: int
    ticks: tuple[tuple[float, str], ...]  # (x, label) for each labelled hour
    minor: tuple[float, ...]  # every other hour
    slots: tuple[Slot, ...]
    summary: str
    zone: str
    totals: dict = field(default_factory=dict)


FILLS = {"ok": "#2e7d32", "partial": "#c77700", "failed": "#b42318", "skipped": "#9aa5b1"}
RESULT_WORDS = {"ok": "fine", "partial": "partly synced", "failed": "failed", "skipped": "skipped (sync off or paused)"}
SLOT = timedelta(minutes=15)


def _clock(value: datetime, zone: tzinfo) -> str:
    return _aware(value).astimezone(zone).strftime("%H:%M")


def _zone_name(moment: datetime, zone: tzinfo) -> str:
    local = _aware(moment).astimezone(zone)
    return local.tzname() or local.strftime("%z")


def _spread(runs: Iterable, start: datetime, end: datetime, count: int) -> list[float]:
    """Per slot, how many of the runs' quiet cycles fell in it: each run's count evenly over its span."""
    spread = [0.0] * count

    def slot_of(moment: datetime) -> int:
        return min(int((moment - start) / SLOT), count - 1)

    for number, first, last in runs:
        if not number or last is None:
            continue
        first, last = _aware(first or last), _aware(last)
        lo, hi = max(first, start), min(last, end)
        if hi < lo:
            continue
        span = (last - first).total_seconds()
        if span <= 0:
            spread[slot_of(last)] += number
            continue
        for i in range(slot_of(lo), slot_of(hi) + 1):
            slot_start = start + SLOT * i
            overlap = (min(hi, slot_start + SLOT) - max(lo, slot_start)).total_seconds()
            spread[i] += number * max(0.0, overlap) / span
    return spread


def build_timeline(cycles: Iterable, item_errors: Iterable, *, now: datetime, zone: tzinfo,
                   quiet_runs: Iterable = ()) -> Timeline:
    """The last 24 hours as 96 columns of 15 minutes: a stacked bar of cycles by result, a red mark where a
    cycle failed, an orange one where items could not be synced; hours labelled in `zone`. `quiet_runs`:
    (count, first, last) of quiet cycles, which are counted, not stored; each run's count is spread evenly
    over its span (the cycles of a run come at a fixed interval), as fine cycles."""
    now = _aware(now)
    end = now
    start = end - DAY
    count = int(DAY / SLOT)
    slots = [dict(ok=0, partial=0, failed=0, skipped=0, item_errors=0) for _ in range(count)]

    def index(moment: datetime) -> int | None:
        moment = _aware(moment)
        if moment < start or moment > end:
            return None
        return min(int((moment - start) / SLOT), count - 1)

    for cycle in cycles:
        i = index(cycle.started_at)
        result = cycle.status if cycle.status in FILLS else None
        if i is not None and result:
            slots[i][result] += 1
    for entry in item_errors:
        i = index(entry.created_at)
        if i is not None:
            slots[i]["item_errors"] += 1
    for i, number in enumerate(_spread(quiet_runs, start, end, count)):
        slots[i]["ok"] += round(number)

    width, height = 960, 150
    left, right = 8, 952
    bars_top, bars_bottom = 8, 88
    failed_y, errors_y = 100, 114
    step = (right - left) / count
    most = max((s["ok"] + s["partial"] + s["failed"] + s["skipped"] for s in slots), default=0) or 1
    zone_label = _zone_name(now, zone)
    drawn = []
    for i, s in enumerate(slots):
        total = s["ok"] + s["partial"] + s["failed"] + s["skipped"]
        slot_start = start + SLOT * i
        x = left + i * step
        bars, y = [], float(bars_bottom)
        if total:
            # A square root keeps a lone failure visible beside a slot of hundreds of quiet cycles.
            full = max(6.0, (bars_bottom - bars_top) * (total / most) ** 0.5)
            for result in ("ok", "skipped", "partial", "failed"):
                if s[result]:
                    h = max(2.0, full * s[result] / total)
                    y -= h
                    bars.append(Bar(round(x + .5, 2), round(y, 2), round(step - 1, 2), round(h, 2), result,
                                    FILLS[result]))
        parts = [f"{plural(s[r], 'cycle')} {RESULT_WORDS[r]}" for r in ("ok", "partial", "failed", "skipped")
                 if s[r]]
        if s["item_errors"]:
            parts.append(f"{plural(s['item_errors'], 'item')} could not be synced")
        title = (f"{_clock(slot_start, zone)}–{_clock(slot_start + SLOT, zone)} {zone_label}: "
                 + ("; ".join(parts) if parts else "no cycles"))
        drawn.append(Slot(round(x, 2), round(step, 2), tuple(bars), bool(s["failed"]), s["item_errors"], title))

    ticks, minor = [], []
    first_hour = (_aware(start).astimezone(zone) + timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    hour = first_hour
    while hour <= end:
        x = round(left + (hour - start) / DAY * (right - left), 2)
        if hour.hour % 3 == 0:
            ticks.append((x, hour.strftime("%H:%M")))
        else:
            minor.append(x)
        hour = (hour.astimezone(UTC) + timedelta(hours=1)).astimezone(zone)

    totals = {r: sum(s[r] for s in slots) for r in ("ok", "partial", "failed", "skipped", "item_errors")}
    total_cycles = totals["ok"] + totals["partial"] + totals["failed"] + totals["skipped"]
    if total_cycles:
        summary = (f"In the last 24 hours: {plural(total_cycles, 'cycle')} — {totals['ok']:,} fine, "
                   f"{totals['partial']:,} partly synced, {totals['failed']:,} failed, {totals['skipped']:,} "
                   f"skipped; {plural(totals['item_errors'], 'item')} could not be synced.")
    else:
        summary = "No sync cycles in the last 24 hours."
    if totals["failed"]:
        last = max(i for i, s in enumerate(slots) if s["failed"])
        summary += f" The latest failures were at {_clock(start + SLOT * last, zone)} {zone_label}."
    return Timeline(width, height, left, right, bars_top, bars_bottom, failed_y, errors_y, tuple(ticks),
                    tuple(minor), tuple(drawn), summary, zone_label, totals)


# ---------------------------------------------------------------------------------------------------------
# Cycles, the quiet ones run together


@dataclass(frozen=True)
class CycleRow:
    """One cycle worth its own row (it changed something, or failed), or a run of quiet ones."""

    kind: str  # changed | failed | idle | skipped
    first: datetime
    last: datetime
    count: int = 1
    who: str = ""
    text: str = ""
    code: str | None = None
    result: str = ""


def _is_quiet(cycle) -> str | None:
    """"idle" for a cycle that changed nothing and met no problem, "skipped" for one the paused or switched-off
    organization kept from running; None for one that deserves its own row."""
    if cycle.status == "skipped":
        return "skipped"
    changes = (cycle.portal_created or 0) + (cycle.portal_updated or 0) + (cycle.portal_deleted or 0) + \
        (cycle.google_created or 0) + (cycle.google_updated or 0) + (cycle.google_deleted or 0)
    if cycle.status == "ok" and not changes and not cycle.errors and not cycle.conflicts and not cycle.message:
        return "idle"
    return None


def changes_in_words(cycle) -> str:
    """What a cycle did, in words: "2 created in the portal, 1 changed in Google, 1 conflict"."""
    parts = []
    for side, where in (("portal", "in the portal"), ("google", "in Google")):
        for verb, column in (("created", "created"), ("changed", "updated"), ("deleted", "deleted")):
            value = getattr(cycle, f"{side}_{column}") or 0
            if value:
                parts.append(f"{value:,} {verb} {where}")
    if cycle.conflicts:
        parts.append(plural(cycle.conflicts, "conflict") + " decided")
    if cycle.errors:
        parts.append(plural(cycle.errors, "item") + " could not be synced")
    return ", ".join(parts) if parts else "nothing changed"


def collapse_cycles(cycles: Iterable, *, who=lambda cycle: "", limit: int | None = None,
                    quiet_now: Iterable = ()) -> list[CycleRow]:
    """Cycles (newest first) as rows: consecutive quiet cycles of the same kind become one row with their
    count and time span; a cycle that changed something or failed keeps its own row. Quiet cycles are counted,
    not stored: `quiet_now` holds the current runs, (count, first, last), newest of all; each stored cycle's
    `quiet_before` is the run just before it. With `limit`, reading stops once a row beyond it begins (so the
    rows up to it are complete and one more says there are more)."""
    rows: list[CycleRow] = []

    def add_quiet(kind: str, first, last, count: int) -> None:
        if rows and rows[-1].kind == kind:
            previous = rows[-1]
            rows[-1] = CycleRow(kind, min(_aware(previous.first), _aware(first)),
                                max(_aware(previous.last), _aware(last)), previous.count + count)
        else:
            rows.append(CycleRow(kind, first, last, count))

    for count, first, last in quiet_now:
        if count and last is not None:
            add_quiet("idle", first or last, last, count)
    for cycle in cycles:
        quiet = _is_quiet(cycle)
        if limit is not None and len(rows) > limit:
            break
        if quiet is not None:
            add_quiet(quiet, cycle.started_at, cycle.started_at, 1)
        else:
            failed = cycle.status == "failed"
            text = changes_in_words(cycle)
            if cycle.error_code and is_item_code(cycle.error_code):
                # Google's words about one event may quote it; helpdesk staff read this list.
                text = summary_of(cycle.error_code).capitalize() + "."
            elif cycle.message:
                text = f"{cycle.message}" if failed else f"{text} · {cycle.message}"
            rows.append(CycleRow("failed" if failed else "changed", cycle.started_at, cycle.started_at, 1,
                                 who=who(cycle), text=text, code=cycle.error_code, result=cycle.status))
        before = getattr(cycle, "quiet_before", 0) or 0
        if before and cycle.quiet_last_at is not None:
            add_quiet("idle", cycle.quiet_first_at or cycle.quiet_last_at, cycle.quiet_last_at, before)
    return rows


def span_words(row: CycleRow, zone: tzinfo) -> str:
    """A quiet run's time span in `zone`, with the zone: "20:00–20:30 CET" (dates named when they differ)."""
    first, last = _aware(row.first).astimezone(zone), _aware(row.last).astimezone(zone)
    name = first.tzname() or first.strftime("%z")
    if first.date() == last.date():
        return f"{first:%Y-%m-%d} {first:%H:%M}–{last:%H:%M} {name}"
    return f"{first:%Y-%m-%d %H:%M} – {last:%Y-%m-%d %H:%M} {name}"


def quiet_words(row: CycleRow) -> str:
    if row.kind == "idle":
        return plural(row.count, "idle cycle") + " (nothing to change, no problem)"
    return plural(row.count, "skipped cycle") + " (the organization's sync was off or paused)"


# ---------------------------------------------------------------------------------------------------------
# Users' health


@dataclass(frozen=True)
class UserHealth:
    user: User
    row: CalendarSync | None
    health: Health


@dataclass(frozen=True)
class HealthTable:
    counts: dict  # state -> number of users, every state of HEALTH_STATES
    labels: dict  # state -> its label
    rows: list  # the users shown
    matching: int  # users matching the filter and search
    total: int  # users of the organization
    state: str
    query: str
    limit: int


STATE_LABELS = {
    "healthy": "Healthy", "first_sync": "First sync under way", "backing_off": "Retrying", "error": "Error",
    "paused": "Paused", "not_logged_in": "Waiting for log-in", "off": "Off", "organization_off": "Organization off",
}
# Problems first, so the eye lands on them.
STATE_ORDER = ("error", "paused", "backing_off", "not_logged_in", "first_sync", "healthy", "organization_off", "off")


def health_table(users: Iterable[User], rows: dict, integration, *, now: datetime, session_lifetime: timedelta,
                 state: str = "", query: str = "", limit: int = 50) -> HealthTable:
    """Every user's health, counted per state; those matching `state` and `query` (a part of the e-mail),
    problems first, at most `limit` of them."""
    query = (query or "").strip().lower()[:254]
    state = state if state in HEALTH_STATES else ""
    everyone = [UserHealth(u, rows.get(u.id), user_health(rows.get(u.id), integration, now=now,
                                                          session_lifetime=session_lifetime, user_active=u.active))
                for u in users]
    counts = Counter(h.health.state for h in everyone)
    chosen = [h for h in everyone if (not state or h.health.state == state) and (not query or query in h.user.email.lower())]
    chosen.sort(key=lambda h: (STATE_ORDER.index(h.health.state) if h.health.state in STATE_ORDER else 99,
                               h.user.email))
    return HealthTable({s: counts.get(s, 0) for s in STATE_ORDER}, STATE_LABELS, chosen[:limit], len(chosen),
                       len(everyone), state, query, limit)


# ---------------------------------------------------------------------------------------------------------
# The error catalogue


@dataclass(frozen=True)
class CatalogueEntry:
    code: str
    summary: str
    level: str
    cause: str
    fix: str
    last_day: int
    last_month: int
    now: int  # users (or the organization) that have this error now
    # An error about one item is recorded with the item, not with a code: counted together with the others.
    per_item: bool = False


def catalogue(counts_day: dict, counts_month: dict, current: dict, integration=None) -> list[CatalogueEntry]:
    """Every error the sync knows, with how often it occurred (last 24 h, 30 days) and who has it now;
    those that occurred first, most frequent first. The texts are filled with the organization's service
    account and client ID where they name them."""
    params = {}
    if integration is not None:
        params = {"sa": integration.service_account_email, "client_id": integration.client_id,
                  "key_id": integration.key_id, "project": integration.project_id}
    entries = []
    for code in [*ERRORS, *OTHER_ERRORS, *sorted(set(counts_month) - set(ERRORS) - set(OTHER_ERRORS))]:
        if code in ERRORS:
            error = error_for(code, detail="Google's own words are in the failed cycle's message", subject="the user",
                              **params)
            cause, fix, level = error.cause[:1].upper() + error.cause[1:], error.fix, error.level
        elif code in OTHER_ERRORS:
            (cause, fix), level = OTHER_ERRORS[code], "portal"
        else:
            cause, fix, level = "An error the portal has no description for.", "Report it to the helpdesk.", "portal"
        entries.append(CatalogueEntry(code, summary_of(code), LEVELS.get(level, level), cause, fix,
                                      counts_day.get(code, 0), counts_month.get(code, 0), current.get(code, 0),
                                      per_item=is_item_code(code)))
    order = {e.code: i for i, e in enumerate(entries)}
    entries.sort(key=lambda e: (not (e.last_month or e.now), -e.now, -e.last_day, -e.last_month, order[e.code]))
    return entries


def is_item_code(code: str) -> bool:
    return code in ERRORS and issubclass(ERRORS[code][0], ItemError)


# ---------------------------------------------------------------------------------------------------------
# Item errors, without contents


@dataclass(frozen=True)
class ItemProblem:
    at: datetime
    activity_id: int | None
    google_event_id: str | None
    message: str


def redact(message: str | None, words: Iterable[str | None], replacement: str) -> str:
    """`message` with every one of `words` (an activity's subject, place, description) taken out."""
    text = message or "No reason was recorded."
    for word in sorted({w.strip() for w in words if w and w.strip()}, key=len, reverse=True):
        text = re.sub(re.escape(word), replacement, text, flags=re.IGNORECASE)
    return text


def item_problems(entries: Sequence, activities: dict) -> list[ItemProblem]:
    """Journal errors as the helpdesk may read them: the activity by number, its contents taken out of the
    message (Google's answers may quote what they refused)."""
    problems = []
    for entry in entries:
        activity = activities.get(entry.activity_id)
        label = f"activity #{entry.activity_id}" if entry.activity_id else "the event"
        words = (activity.subject, activity.location, activity.description) if activity is not None else ()
        problems.append(ItemProblem(entry.created_at, entry.activity_id, entry.google_event_id,
                                    redact(entry.message, words, label)))
    return problems


# ---------------------------------------------------------------------------------------------------------
# Reading it all for one organization


@dataclass
class Diagnostics:
    timeline: Timeline
    health: HealthTable
    cycles: list
    more_cycles: bool
    catalogue: list
    item_errors: list
    item_errors_day: int
    item_errors_month: int
    problem: str | None


CYCLE_ROWS = 60
ITEM_ROWS = 20


def read_diagnostics(organization, integration, *, now: datetime, zone: tzinfo, session_lifetime: timedelta,
                     state: str = "", query: str = "", limit: int = 50) -> Diagnostics:
    now = _aware(now)
    since_day, since_month = now - DAY, now - MONTH
    org_id = organization.id
    # A big organization runs many thousand cycles a day: the chart reads two columns of each, and the list
    # reads whole rows only until it has enough of them.
    marks = db.session.execute(select(SyncCycle.started_at, SyncCycle.status, SyncCycle.quiet_before,
                                      SyncCycle.quiet_first_at, SyncCycle.quiet_last_at).where(
        SyncCycle.organization_id == org_id, SyncCycle.started_at >= since_day)).all()
    newest_first = db.session.scalars(
        select(SyncCycle).where(SyncCycle.organization_id == org_id, SyncCycle.started_at >= since_day)
        .order_by(SyncCycle.started_at.desc(), SyncCycle.id.desc()).execution_options(yield_per=500))
    errors_day = db.session.scalars(select(SyncJournalEntry).where(
        SyncJournalEntry.organization_id == org_id, SyncJournalEntry.kind == "error",
        SyncJournalEntry.created_at >= since_day).order_by(SyncJournalEntry.created_at.desc(),
                                                            SyncJournalEntry.id.desc())).all()
    item_errors_month = db.session.scalar(select(func.count(SyncJournalEntry.id)).where(
        SyncJournalEntry.organization_id == org_id, SyncJournalEntry.kind == "error",
        SyncJournalEntry.created_at >= since_month)) or 0
    users = db.session.scalars(select(User).where(User.organization_id == org_id, User.role != "helpdesk")
                               .order_by(User.email)).all()
    syncs = {row.user_id: row for row in db.session.scalars(
        select(CalendarSync).where(CalendarSync.organization_id == org_id))}
    emails = {u.id: u.email for u in users}

    def who(cycle):
        return emails.get(cycle.user_id, "a user") if cycle.user_id else "outbox (changes made in the portal)"

    # Quiet cycles are counted, not stored: each user's current run, and the run before each stored cycle.
    quiet_now = [(row.quiet_cycles, row.quiet_since, row.last_quiet_at) for row in syncs.values()
                 if row.quiet_cycles and row.last_quiet_at is not None]
    quiet_runs = [*quiet_now, *((m.quiet_before, m.quiet_first_at, m.quiet_last_at) for m in marks if m.quiet_before)]
    rows = collapse_cycles(newest_first, who=who, limit=CYCLE_ROWS, quiet_now=quiet_now)
    newest_first.close()

    def counted(since):
        return dict(db.session.execute(select(SyncCycle.error_code, func.count(SyncCycle.id)).where(
            SyncCycle.organization_id == org_id, SyncCycle.error_code.isnot(None), SyncCycle.started_at >= since)
            .group_by(SyncCycle.error_code)).all())

    current = Counter(row.error_code for row in syncs.values() if row.enabled and row.error_code)
    if integration is not None and integration.error_code and integration.is_paused:
        current[integration.error_code] += 1
    shown_errors = errors_day[:ITEM_ROWS]
    activity_ids = {e.activity_id for e in shown_errors if e.activity_id}
    activities = {a.id: a for a in db.session.scalars(select(Activity).where(Activity.id.in_(activity_ids)))} \
        if activity_ids else {}
    return Diagnostics(
        timeline=build_timeline(marks, errors_day, now=now, zone=zone, quiet_runs=quiet_runs),
        health=health_table(users, syncs, integration, now=now, session_lifetime=session_lifetime, state=state,
                            query=query, limit=limit),
        cycles=rows[:CYCLE_ROWS], more_cycles=len(rows) > CYCLE_ROWS,
        catalogue=catalogue(counted(since_day), counted(since_month), current, integration),
        item_errors=item_problems(shown_errors, activities),
        item_errors_day=len(errors_day), item_errors_month=item_errors_month,
        problem=integration_problem(integration),
    )


# ---------------------------------------------------------------------------------------------------------
# The helpdesk's list of organizations


def health_counts_by_organization(now: datetime, session_lifetime: timedelta) -> dict[int, Counter]:
    """Per organization, how many users are in each health state (helpdesk staff not counted)."""
    integrations = {row.organization_id: row for row in db.session.scalars(select(GoogleIntegration))}
    syncs = {row.user_id: row for row in db.session.scalars(select(CalendarSync))}
    counts: dict[int, Counter] = {}
    for user in db.session.scalars(select(User).where(User.role != "helpdesk")):
        health = user_health(syncs.get(user.id), integrations.get(user.organization_id), now=now,
                             session_lifetime=session_lifetime, user_active=user.active)
        counts.setdefault(user.organization_id, Counter())[health.state] += 1
    return counts


def organizations_matching(query: str) -> set[int] | None:
    """Ids of organizations whose name, or one of whose users' e-mail, contains `query`; None: no search."""
    from portal.models import Organization

    query = (query or "").strip().lower()[:254]
    if not query:
        return None
    by_name = db.session.scalars(select(Organization.id).where(
        func.lower(Organization.name).contains(query, autoescape=True)))
    return set(by_name) | {u.organization_id for u in users_matching(query)}


def users_matching(query: str, limit: int = 20) -> list[User]:
    """Users (not helpdesk staff) whose e-mail contains `query`, for the helpdesk's search."""
    query = (query or "").strip().lower()[:254]
    if not query:
        return []
    return list(db.session.scalars(select(User).where(func.lower(User.email).contains(query, autoescape=True),
                                                      User.role != "helpdesk").order_by(User.email).limit(limit)))


# What the diagnostics partials call; every page that includes them passes these along.
TEMPLATE_HELPERS = {"quiet_words": quiet_words, "span_words": span_words, "summary_of": summary_of}
