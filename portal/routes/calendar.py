"""Calendar: week and list views of a user's activities, created, edited and deleted in place."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import select

from portal import models
from portal.activities import (
    EARLIEST_YEAR,
    LATEST_YEAR,
    ValidationError,
    answer_activity,
    can_be_invited,
    can_delete,
    can_edit,
    can_own,
    clean_activity,
    create_activity,
    default_times,
    delete_activity,
    delete_occurrence,
    edit_activity,
    edit_occurrence,
    participation,
    refusal,
    visible_activities_query,
)
from portal.calendar_layout import ListRow, first_occurrence, next_occurrence, week_layout, zone_label
from portal.changes import changed_by
from portal.extensions import db
from portal.forms import (
    ENDS,
    FREQUENCIES,
    PERIODS,
    REPEATING,
    SCOPES,
    WEEKDAY_LABELS,
    WEEKDAYS,
    activity_to_form,
    form_to_values,
    form_with_posted,
    occurrence_to_form,
)
from portal.models import ACTIVITY_TEXTS, Activity, Project, utcnow
from portal.routes import local_address, refuse_with, render, wants_partial
from portal.sync.models import CalendarSync, SyncJournalEntry, SyncLink
from portal.sync.policy import integration_of
from portal.sync.recurrence import is_editable
from portal.sync.recurrence_text import describe
from portal.sync.status import StatusReader, user_health

bp = Blueprint("calendar", __name__, url_prefix="/calendar")


@login_required
def index():
    """Send people to their calendar (helpdesk staff to the helpdesk)."""
    if current_user.is_helpdesk:
        return redirect(url_for("helpdesk.index"))
    return redirect(url_for("calendar.week"))


def get_activity(activity_id: int, *, for_edit: bool = False, for_delete: bool = False) -> Activity:
    """The activity if the current user may see it (or edit, or delete it), else 404/403."""
    activity = db.session.get(Activity, activity_id)
    if activity is None or activity.is_deleted or not activity.visible_to(current_user):
        abort(404)
    if for_edit or for_delete:
        refuse(activity, deleting=for_delete)
    return activity


def refuse(activity: Activity, *, deleting: bool = False) -> None:
    """403 with the reason in words (the owner's and admins' to change; a participant answers instead)."""
    reason = refusal(current_user, activity, deleting=deleting,
                     how_to_answer="answer it instead with the buttons on its page")
    if reason:
        refuse_with(403, reason)


def parse_week(value: str | None) -> date:
    today = datetime.now(current_user.zone).date()
    try:
        day = date.fromisoformat(value) if value else today
    except ValueError:
        day = today
    if not EARLIEST_YEAR <= day.year <= LATEST_YEAR:
        day = today  # no item lives there, and the week's edges would fall off the calendar
    return day - timedelta(days=day.weekday())


@bp.route("/")
@login_required
def week():
    """Show the week (Monday to Sunday) in the viewer's time zone."""
    monday = parse_week(request.args.get("week"))
    return render("calendar/week.html", "calendar/_week.html", week_context(monday), target="calendar-view")


def week_context(monday: date) -> dict:
    zone = current_user.zone
    after = datetime.combine(monday, time.min, tzinfo=zone)
    before = after + timedelta(days=7)
    found_all, shown, cut, view_full = [], 0, [], False
    for activity in db.session.scalars(visible_activities_query(current_user).order_by(Activity.id)):
        room = models.OCCURRENCES_PER_VIEW_LIMIT - shown
        found, more = activity.occurrences_shown(after, before, limit=min(models.OCCURRENCES_PER_ITEM_LIMIT, room),
                                                 budget=models.EXPANSION_STEPS_LIMIT)
        shown += len(found)
        if more and room <= models.OCCURRENCES_PER_ITEM_LIMIT and len(found) == room:
            view_full = True
        elif more:
            cut.append(activity)
        found_all.extend(found)
    now = datetime.now(zone)
    layout = week_layout(found_all, monday, zone, now)
    return {
        "view": "week",
        "monday": monday,
        "week": layout,
        "days": layout.by_day(),
        "zone": zone,
        "zone_name": zone_label(zone, after, days=7),
        "previous_week": monday - timedelta(days=7),
        "next_week": monday + timedelta(days=7),
        "this_week": parse_week(None),
        "today": now.date(),
        "now": now,
        "statuses": statuses_of({o.activity for o in found_all}),
        "sync_banner": sync_banner(),
        # Said on the page rather than left out silently: which items show only part, and whether the week
        # held more than a page shows.
        "cut": cut[:CUT_NAMED],
        "cut_unnamed": max(0, len(cut) - CUT_NAMED),
        "view_full": view_full,
        "item_limit": models.OCCURRENCES_PER_ITEM_LIMIT,
        "view_limit": models.OCCURRENCES_PER_VIEW_LIMIT,
    }


def statuses_of(activities) -> dict[int, object]:
    """Each activity's sync status by id, their links read in one query."""
    activities = list(activities)
    if not activities:
        return {}
    reader = StatusReader(current_user.organization, activities)
    return {activity.id: reader(activity) for activity in activities}


def sync_banner() -> dict | None:
    """What the calendar says when the viewer's items are not syncing: the organization's sync is paused, or
    the viewer's own sync stopped with an error (their health, and the fix when one is known); else None."""
    if current_user.is_helpdesk:
        return None
    integration = integration_of(current_user.organization)
    row = db.session.get(CalendarSync, current_user.id)
    health = user_health(row, integration, now=utcnow(), session_lifetime=current_app.permanent_session_lifetime)
    if health.state == "paused":
        return {"health": health, "fix": integration.error_fix}
    if health.state == "error":
        return {"health": health, "fix": row.error_fix}
    return None


CUT_NAMED = 5  # a notice naming hundreds of items would be the flood it warns about


@bp.route("/list")
@login_required
def list_view():
    """List the viewer's current and upcoming activities; series appear once."""
    return render("calendar/list.html", "calendar/_rows.html", list_context(), target="calendar-view")


def list_context() -> dict:
    show_past = request.args.get("past") == "1"
    activities = db.session.scalars(visible_activities_query(current_user)).all()
    zone = current_user.zone
    now = datetime.now(zone)
    rows = []
    for activity in activities:
        # A series shows once, at its next occurrence; one with none left, and past items, only on request.
        occurrence = next_occurrence(activity, now, budget=models.EXPANSION_STEPS_LIMIT)
        if occurrence is not None:
            rows.append(ListRow(activity, occurrence, upcoming=activity.is_recurring))
        elif show_past:
            rows.append(ListRow(activity, first_occurrence(activity), upcoming=False))
    rows.sort(key=lambda row: row.sort_key(zone))
    return {"view": "list", "rows": rows, "zone": zone, "show_past": show_past,
            "statuses": statuses_of(row.activity for row in rows), "sync_banner": sync_banner(),
            "zone_name": zone_label(zone, now)}


ANSWERS = {"needsAction": "no answer yet", "accepted": "accepted", "tentative": "maybe", "declined": "declined"}


def locked_reason(activity: Activity | None) -> str | None:
    """Why nobody can change this activity in the portal (though it syncs), or None."""
    if activity is None:
        return None
    organizer = (activity.google_organizer or "").lower()
    if organizer and activity.organization.user_by_email(organizer) is None:
        return (f"Organized in Google Calendar by {activity.google_organizer}, who is outside your organization: "
                "only they can change it. Answer the invitation in Google Calendar.")
    editable, reason = is_editable(activity.recurrence)
    if not editable:
        return f"{reason}. Change it in Google Calendar; it keeps syncing."
    return None


def google_details(activity: Activity | None) -> dict:
    """What the activity's Google event adds that the portal does not edit: answers, guests, organizer."""
    if activity is None:
        return {"answers": [], "guests": [], "organizer_note": None}
    link = db.session.scalar(select(SyncLink).where(SyncLink.activity_id == activity.id))
    linked = link is not None and link.confirmed
    answers = [(p.user, ANSWERS.get(p.response_status, p.response_status)) for p in activity.participant_links]
    guests = [g for g in (link.external_attendees or []) if isinstance(g, dict)] if linked else []
    note = None
    organizer = (activity.google_organizer or "").lower()
    stand_in = activity.organization.user_by_email(organizer) if organizer else None
    if linked and stand_in is not None and stand_in.id != activity.owner_id:
        note = f"In Google Calendar this item is in the calendar of {stand_in.name} ({stand_in.email}), its organizer there"
        # The sync says why when it put the item there itself; an owner changed later is just another owner.
        placed = db.session.scalar(select(SyncJournalEntry.id).where(
            SyncJournalEntry.activity_id == activity.id, SyncJournalEntry.kind == "created",
            SyncJournalEntry.message.like("%is not a user of the Google Workspace%")).limit(1))
        note += f": the owner {activity.owner.email} is not a user of the Google Workspace." if placed else "."
    return {"answers": answers, "guests": guests, "organizer_note": note,
            "answer_labels": ANSWERS}


def form_context(fields: dict, errors: dict, activity: Activity | None, occurrence=None, answered=None) -> dict:
    organization = current_user.organization
    projects = db.session.scalars(
        select(Project).where(Project.organization_id == organization.id).order_by(Project.name)
    ).all()
    # Whom an admin may give the item to, and its owner now (kept even if they could not be given it today).
    users = [u for u in organization.users if can_own(u) or (activity is not None and u.id == activity.owner_id)]
    readonly = activity is not None and not can_edit(current_user, activity)
    locked = locked_reason(activity)
    sync_status = StatusReader(organization)(activity) if activity is not None else None
    conflicts = lost_values(activity) if activity is not None else []
    return {
        "sync_status": sync_status,
        "conflicts": conflicts,
        "fields": fields,
        "errors": errors,
        "activity": activity,
        "occurrence": occurrence,
        "scopes": SCOPES,
        "locked": locked,
        "google": google_details(activity),
        "can_delete": activity is not None and can_delete(current_user, activity),
        "my_answer": participation(current_user, activity) if activity is not None else None,
        "answered": answered,
        "span": shown_span(activity, occurrence) if activity is not None else None,
        # Someone who may not change the item reads it (and answers it) rather than seeing a form greyed out.
        "read_view": readonly,
        "readonly": readonly or not current_user.can_edit_activities or locked is not None,
        "activity_types": organization.activity_types,
        "users": users,
        "invitable": invitable_people(organization, fields, activity),
        "custom_rule": custom_rule_text(fields, activity),
        "projects": projects,
        "frequencies": FREQUENCIES,
        "repeating": REPEATING,
        "periods": PERIODS,
        "ends_choices": ENDS,
        "weekdays": WEEKDAYS,
        "weekday_labels": WEEKDAY_LABELS,
        "return_to": local_address(request.values.get("return_to"), url_for("calendar.week")),
    }


def shown_span(activity: Activity, occurrence=None) -> tuple:
    """Start and end as a reader sees them: instants, or for all-day items the first and the last day."""
    start, end = (occurrence.start, occurrence.end) if occurrence is not None else activity.span
    return (start, end - timedelta(days=1)) if activity.all_day else (start, end)


def invitable_people(organization, fields: dict, activity: Activity | None) -> list:
    """Whom the participant list offers: the people who can be invited, and those already on the item (so
    they can be taken off), by name."""
    owner = organization.user_by_email(fields.get("owner") or "") or (activity.owner if activity else current_user)
    chosen = set(fields.get("participants") or [])
    people = [u for u in organization.users if can_be_invited(u, organization, owner) or u.email in chosen]
    return sorted(people, key=lambda u: (u.email not in chosen, u.name.lower(), u.email))


def custom_rule_text(fields: dict, activity: Activity | None) -> str | None:
    """A rule the picker cannot show, in words (it is kept as it is unless another repeat is chosen)."""
    if fields.get("freq") != "CUSTOM":
        return None
    lines = fields.get("recurrence_lines", "").splitlines() or (activity.recurrence if activity else [])
    return describe(lines) if lines else None


def render_form(fields: dict, errors: dict, activity: Activity | None, status: int = 200, occurrence=None,
                answered=None):
    return render("calendar/form.html", "calendar/_form.html",
                  form_context(fields, errors, activity, occurrence, answered), status=status)


@bp.route("/activities/new")
@login_required
def new_activity():
    """Show an empty activity form (on a chosen day if one is given)."""
    if not current_user.can_edit_activities:
        abort(403)
    try:
        day = date.fromisoformat(request.args.get("day", ""))
    except ValueError:
        day = None
    start, end = default_times(current_user, day)
    return render_form(activity_to_form(None, current_user, start=start, end=end), {}, None)


@bp.route("/activities", methods=("POST",))
@login_required
def create():
    """Create an activity from the form."""
    if not current_user.can_edit_activities:
        abort(403)
    return save_from_form(None)


@bp.route("/activities/<int:activity_id>")
@login_required
def edit(activity_id: int):
    """Show one activity's form (read-only for those who may not change it); with ``occurrence``, the form of
    that one occurrence of a series, which can change it alone, it and the following ones, or all of them."""
    activity = get_activity(activity_id)
    key = request.args.get("occurrence", "").strip().upper()
    if key and activity.is_recurring:
        occurrence = get_occurrence(activity, key)
        return render_form(occurrence_to_form(activity, occurrence, current_user), {}, activity,
                           occurrence=occurrence)
    return render_form(activity_to_form(activity, current_user), {}, activity)


def get_occurrence(activity: Activity, key: str):
    occurrence = activity.occurrence(key)
    if occurrence is None:
        abort(404, description="This occurrence is not part of the series (any more).")
    return occurrence


@bp.route("/activities/<int:activity_id>", methods=("POST",))
@login_required
def update(activity_id: int):
    """Save changes to an activity, or to one occurrence of a series and maybe those after it."""
    activity = get_activity(activity_id, for_edit=True)
    key = request.form.get("occurrence", "").strip().upper()
    occurrence = get_occurrence(activity, key) if key and activity.is_recurring else None
    locked = locked_reason(activity)
    if locked:
        return render_form(form_with_posted(request.form), {"form": locked}, activity, status=422,
                           occurrence=occurrence)
    if occurrence is None:
        return save_from_form(activity)
    values, picker_errors = form_to_values(request.form, kept_rule=activity.recurrence)
    changed_by(db.session, current_user.id)
    try:
        scope, series = edit_occurrence(activity, occurrence, request.form.get("scope", "all"), values,
                                        actor=current_user, errors=picker_errors)
    except ValidationError as exc:
        return render_form(form_with_posted(request.form), exc.fields, activity, status=422, occurrence=occurrence)
    db.session.commit()
    if scope == "this":
        return after_change(f"Saved this occurrence of “{activity.subject}”.")
    if scope == "following":
        return after_change(f"Saved “{series.subject}” from {occurrence_label(activity, occurrence)} on.")
    return after_change(f"Saved “{series.subject}”.")


def save_from_form(activity: Activity | None):
    values, picker_errors = form_to_values(request.form, kept_rule=activity.recurrence if activity else None)
    organization = current_user.organization
    try:
        data = clean_activity(values, organization=organization, actor=current_user, existing=activity,
                              allow_local_times=True)
        if picker_errors:
            raise ValidationError(picker_errors)
    except ValidationError as exc:
        errors = {**exc.fields, **picker_errors}
        return render_form(form_with_posted(request.form), errors, activity, status=422)
    changed_by(db.session, current_user.id)
    if activity is None:
        activity = create_activity(organization, data)
        message = f"Created “{data.subject}”."
    else:
        edit_activity(activity, data)
        message = f"Saved “{data.subject}”."
    db.session.commit()
    return after_change(message)


def occurrence_label(activity: Activity, occurrence) -> str:
    start = occurrence.start if activity.all_day else occurrence.start.astimezone(activity.zone)
    return start.strftime("%a %d %b %Y")


@bp.route("/activities/<int:activity_id>/delete", methods=("POST",))
@login_required
def delete(activity_id: int):
    """Delete an activity (kept as a tombstone so the sync sees the deletion), or with ``occurrence`` one
    occurrence of a series (``scope=this``) or it and all after it (``scope=following``)."""
    activity = get_activity(activity_id, for_delete=True)
    key = request.form.get("occurrence", "").strip().upper()
    scope = request.form.get("scope", "all")
    if key and activity.is_recurring and scope in ("this", "following") and locked_reason(activity):
        scope = "all"  # only Google can change the occurrences of a locked series: here it goes whole
    if key and activity.is_recurring and scope != "all":
        occurrence = get_occurrence(activity, key)
        changed_by(db.session, current_user.id)
        try:
            scope = delete_occurrence(activity, occurrence, scope)
        except ValidationError as exc:
            return render_form(occurrence_to_form(activity, occurrence, current_user), exc.fields, activity,
                               status=422, occurrence=occurrence)
    else:
        changed_by(db.session, current_user.id)
        delete_activity(activity)
    db.session.commit()
    if scope == "this":
        return after_change(f"Deleted the occurrence of {occurrence_label(activity, occurrence)} of "
                            f"“{activity.subject}”.")
    if scope == "following":
        return after_change(f"Deleted “{activity.subject}” from {occurrence_label(activity, occurrence)} on.")
    return after_change(f"Deleted “{activity.subject}”.")


def after_change(message: str):
    """Back where the change was made: a redirect for plain forms (to any page of this site, such as My
    profile, where lost values are put back too), the refreshed calendar view in place for HTMX."""
    return_to = local_address(request.form.get("return_to"), url_for("calendar.week"))
    if not wants_partial():
        flash(message)
        return redirect(return_to)
    if not return_to.startswith("/calendar"):  # in place, only a calendar view can be refreshed
        return_to = url_for("calendar.week")
    view = "list" if return_to.startswith(url_for("calendar.list_view")) else "week"
    if view == "list":
        context = list_context()
        partial = "calendar/_rows.html"
    else:
        week_arg = return_to.split("week=", 1)[1][:10] if "week=" in return_to else None
        context = week_context(parse_week(week_arg))
        partial = "calendar/_week.html"
    return render(None, "calendar/_saved.html", {**context, "message": message, "partial": partial})


@bp.route("/activities/<int:activity_id>/response", methods=("POST",))
@login_required
def answer(activity_id: int):
    """A participant's answer to an activity (a series as a whole); it reaches their Google copy with their sync.
    The item stays open with the answer marked."""
    activity = get_activity(activity_id)
    changed_by(db.session, current_user.id)
    try:
        answer_activity(activity, current_user, request.form.get("response"))
    except PermissionError as exc:
        refuse_with(403, str(exc))
    except ValidationError as exc:
        refuse_with(400, exc.fields["response"])
    db.session.commit()
    message = f"Answered “{activity.subject}”: {ANSWERS[request.form['response']]}."
    key = request.form.get("occurrence", "").strip().upper()
    occurrence = activity.occurrence(key) if key and activity.is_recurring else None
    if not wants_partial():
        flash(message)
        return redirect(url_for("calendar.edit", activity_id=activity.id, occurrence=occurrence.key if occurrence
                                else None, return_to=local_address(request.form.get("return_to"), None)))
    fields = occurrence_to_form(activity, occurrence, current_user) if occurrence else activity_to_form(
        activity, current_user)
    return render_form(fields, {}, activity, occurrence=occurrence, answered=message)


# Only texts: a lost start or end alone would make a time slot nobody chose.
RESTORABLE_FIELDS = tuple(ACTIVITY_TEXTS)
TRASH_DAYS = 30


def lost_values(activity: Activity) -> list[SyncJournalEntry]:
    """Values that lost a sync conflict on this activity, newest first: each can be put back."""
    return db.session.scalars(
        select(SyncJournalEntry).where(SyncJournalEntry.activity_id == activity.id,
                                       SyncJournalEntry.kind == "conflict")
        .order_by(SyncJournalEntry.id.desc()).limit(10)
    ).all()


@bp.route("/activities/<int:activity_id>/restore-value/<int:entry_id>", methods=("POST",))
@login_required
def restore_value(activity_id: int, entry_id: int):
    """Put back a value that lost a sync conflict (it then syncs like any edit)."""
    activity = get_activity(activity_id, for_edit=True)
    entry = db.session.get(SyncJournalEntry, entry_id)
    if entry is None or entry.activity_id != activity.id or entry.kind != "conflict":
        abort(404)
    if entry.field not in RESTORABLE_FIELDS or not isinstance(entry.before, str):
        abort(400, description="Only a subject, description or location can be put back this way.")
    changed_by(db.session, current_user.id)
    setattr(activity, entry.field, entry.before)
    db.session.commit()
    return after_change(f"Restored the {entry.field} of “{activity.subject}”.")


@bp.route("/trash")
@login_required
def trash():
    """List the user's activities deleted in the last 30 days (in the portal or in Google)."""
    since = utcnow() - timedelta(days=TRASH_DAYS)
    query = visible_activities_query(current_user, include_deleted=True).where(Activity.deleted_at >= since)
    items = db.session.scalars(query.order_by(Activity.deleted_at.desc())).all()
    restorable = {a.id for a in items if can_delete(current_user, a)}
    until = {a.id: a.deleted_at + timedelta(days=TRASH_DAYS) for a in items}
    return render_template("calendar/trash.html", items=items, restorable=restorable, until=until,
                           zone=current_user.zone, view="trash")


@bp.route("/trash/<int:activity_id>/restore", methods=("POST",))
@login_required
def restore(activity_id: int):
    """Bring a deleted activity back; the sync puts it in Google again."""
    activity = db.session.get(Activity, activity_id)
    if activity is None or not activity.is_deleted or not activity.visible_to(current_user):
        abort(404)
    refuse(activity, deleting=True)
    if activity.deleted_at < utcnow() - timedelta(days=TRASH_DAYS):
        abort(410, description="Deleted more than 30 days ago: it can no longer be restored.")
    changed_by(db.session, current_user.id)
    activity.deleted_at = None
    db.session.commit()
    flash(f"Restored “{activity.subject}”.")
    return redirect(url_for("calendar.trash"))
