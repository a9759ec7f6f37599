"""Recurring series both ways against the Google emulator: every rule part, DST, occurrences edited and
cancelled on either side, series edits that keep (or orphan) them, "this and following" splits, rules the
portal cannot edit, and the first sync's matching and window."""

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from portal.changes import changed_by
from portal.extensions import db
from portal.models import Activity
from portal.sync.models import SyncJournalEntry
from portal.sync.recurrence import normalize_recurrence
from tests.helpers import make_activity
from tests.test_sync_engine import activities

AMS = "Europe/Amsterdam"
WINDOW_START = datetime(2027, 1, 1, tzinfo=UTC)
WINDOW_END = datetime(2028, 2, 1, tzinfo=UTC)


def wall(day: date, hour=9, minute=0, zone=AMS) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZoneInfo(zone))


def google_when(moment, zone=AMS):
    if isinstance(moment, datetime):
        return {"dateTime": moment.replace(tzinfo=None).isoformat(), "timeZone": zone}
    return {"date": moment.isoformat()}


def google_moment(value):
    if "dateTime" in value:
        return datetime.fromisoformat(value["dateTime"].replace("Z", "+00:00")).astimezone(UTC)
    return date.fromisoformat(value["date"])


def google_occurrences(person, event_id, after=WINDOW_START, before=WINDOW_END):
    answer = person.events.instances(calendarId="primary", eventId=event_id, maxResults=2500,
                                     timeMin=after.isoformat().replace("+00:00", "Z"),
                                     timeMax=before.isoformat().replace("+00:00", "Z")).execute()
    return [(google_moment(i["start"]), i.get("summary")) for i in answer["items"]]


def portal_occurrences(app, activity_id, after=WINDOW_START, before=WINDOW_END):
    with app.app_context():
        activity = db.session.get(Activity, activity_id)
        return [(o.start if o.all_day else o.start.astimezone(UTC), o.subject)
                for o in activity.occurrences_between(after, before)]


def only_event(person):
    [event] = [e for e in person.live() if not e.get("recurringEventId")]
    return event


def synced_weekly_series(app, world, run_sync, google_user, subject):
    """A four-week series of "user"'s, synced to Google: (activity id, their Google calendar, its event, the
    key of its second occurrence)."""
    activity_id = make_activity(app, world["user"], subject=subject, start=wall(FIRST).isoformat(),
                                end=wall(FIRST, 10).isoformat(), time_zone=AMS,
                                recurrence=["RRULE:FREQ=WEEKLY;COUNT=4"])
    run_sync("user")
    person = google_user("user@acme.test")
    return activity_id, person, only_event(person), utc_key(FIRST + timedelta(days=7))


def utc_key(day: date, hour=9) -> str:
    """The key Google names an occurrence starting at that Amsterdam wall time by."""
    return wall(day, hour).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def edit(app, activity_id, change):
    """Change an activity the way a person in the portal does (their change is pushed)."""
    with app.app_context():
        activity = db.session.get(Activity, activity_id)
        changed_by(db.session, activity.owner_id)
        change(activity)
        db.session.commit()


# Rules with every part the issue names. Google-side spellings are deliberately not canonical.
RULES = [
    pytest.param(False, ["RRULE:FREQ=DAILY;COUNT=5"], ["RRULE:COUNT=5;FREQ=DAILY"], id="daily-count"),
    pytest.param(False, ["RRULE:FREQ=DAILY;UNTIL=20270120T225959Z;INTERVAL=3"],
                 ["RRULE:FREQ=DAILY;INTERVAL=3;UNTIL=20270120T225959Z"], id="daily-interval-until"),
    pytest.param(False, ["RRULE:FREQ=WEEKLY;COUNT=8;INTERVAL=2;BYDAY=MO,TH;WKST=SU"],
                 ["RRULE:FREQ=WEEKLY;WKST=SU;BYDAY=TH,MO;INTERVAL=2;COUNT=8"], id="weekly-byday-wkst"),
    pytest.param(False, ["RRULE:FREQ=MONTHLY;COUNT=6;BYDAY=2TU"], ["RRULE:FREQ=MONTHLY;BYDAY=+2TU;COUNT=6"],
                 id="monthly-second-tuesday"),
    pytest.param(False, ["RRULE:FREQ=MONTHLY;COUNT=6;BYDAY=-1FR"], ["RRULE:FREQ=MONTHLY;BYDAY=-1FR;COUNT=6"],
                 id="monthly-last-friday"),
    pytest.param(False, ["RRULE:FREQ=MONTHLY;COUNT=6;BYMONTHDAY=15,-1"],
                 ["RRULE:FREQ=MONTHLY;BYMONTHDAY=-1,15;COUNT=6"], id="monthly-bymonthday"),
    pytest.param(False, ["RRULE:FREQ=MONTHLY;COUNT=6;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1"],
                 ["RRULE:FREQ=MONTHLY;BYSETPOS=-1;BYDAY=MO,TU,WE,TH,FR;COUNT=6"], id="monthly-bysetpos"),
    pytest.param(False, ["RRULE:FREQ=YEARLY;COUNT=3;BYDAY=1MO;BYMONTH=3,9"],
                 ["RRULE:FREQ=YEARLY;BYMONTH=9,3;BYDAY=1MO;COUNT=3"], id="yearly-bymonth-byday"),
    pytest.param(False, ["RRULE:FREQ=WEEKLY;COUNT=6", "RDATE:20270107T140000Z", "EXDATE:20270111T080000Z"],
                 ["RRULE:FREQ=WEEKLY;COUNT=6", "RDATE;TZID=Europe/Amsterdam:20270107T150000",
                  "EXDATE;TZID=Europe/Amsterdam:20270111T090000"], id="exdate-rdate"),
    pytest.param(True, ["RRULE:FREQ=WEEKLY;UNTIL=20270131;BYDAY=MO,WE"],
                 ["RRULE:FREQ=WEEKLY;BYDAY=WE,MO;UNTIL=20270131"], id="all-day-weekly-until"),
    pytest.param(True, ["RRULE:FREQ=YEARLY;COUNT=2;BYMONTHDAY=4;BYMONTH=1"],
                 ["RRULE:FREQ=YEARLY;BYMONTH=1;BYMONTHDAY=4;COUNT=2"], id="all-day-yearly"),
    pytest.param(True, ["RRULE:FREQ=DAILY;COUNT=4", "EXDATE;VALUE=DATE:20270105", "RDATE;VALUE=DATE:20270110"],
                 ["RRULE:FREQ=DAILY;COUNT=4", "EXDATE;VALUE=DATE:20270105", "RDATE;VALUE=DATE:20270110"],
                 id="all-day-exdate-rdate"),
]
FIRST = date(2027, 1, 4)  # a Monday


@pytest.mark.parametrize(("all_day", "portal_lines", "google_lines"), RULES)
def test_rule_travels_from_the_portal_to_google(app, world, connected, sync_on, run_sync, google_user, all_day,
                                                portal_lines, google_lines):
    sync_on("user")
    run_sync("user")
    if all_day:
        times = {"all_day": True, "start": FIRST.isoformat(), "end": (FIRST + timedelta(days=1)).isoformat()}
    else:
        times = {"start": wall(FIRST).isoformat(), "end": wall(FIRST, 10).isoformat()}
    activity_id = make_activity(app, world["user"], subject="Rule", recurrence=portal_lines, time_zone=AMS, **times)
    assert run_sync("user").google_created == 1
    person = google_user("user@acme.test")
    event = only_event(person)
    assert normalize_recurrence(event["recurrence"], time_zone=None if all_day else AMS) == \
        normalize_recurrence(portal_lines, time_zone=None if all_day else AMS)
    in_google = google_occurrences(person, event["id"])
    assert len(in_google) >= 2
    assert in_google == portal_occurrences(app, activity_id)
    quiet = run_sync("user")
    assert (quiet.google_updated, quiet.portal_updated) == (0, 0)


@pytest.mark.parametrize(("all_day", "portal_lines", "google_lines"), RULES)
def test_rule_travels_from_google_to_the_portal(app, world, connected, sync_on, run_sync, google_user, all_day,
                                                portal_lines, google_lines):
    sync_on("user")
    run_sync("user")
    person = google_user("user@acme.test")
    if all_day:
        start, end = google_when(FIRST), google_when(FIRST + timedelta(days=1))
    else:
        start, end = google_when(wall(FIRST)), google_when(wall(FIRST, 10))
    event = person.insert(summary="Rule", start=start, end=end, recurrence=google_lines)
    assert run_sync("user").portal_created == 1
    [activity] = activities(app)
    zone = None if all_day else AMS
    assert activity.recurrence == list(normalize_recurrence(portal_lines, time_zone=zone))
    assert activity.all_day is all_day
    in_portal = portal_occurrences(app, activity.id)
    assert len(in_portal) >= 2
    assert in_portal == google_occurrences(person, event["id"])
    quiet = run_sync("user")
    assert (quiet.google_updated, quiet.portal_updated, quiet.requests) == (0, 0, 1)


def test_weekly_series_keeps_nine_oclock_across_dst_both_ways(app, world, connected, sync_on, run_sync,
                                                              google_user):
    sync_on("user")
    run_sync("user")
    first = date(2027, 3, 15)  # DST starts on 28 March 2027
    portal_id = make_activity(app, world["user"], subject="From the portal", start=wall(first).isoformat(),
                              end=wall(first, 10).isoformat(), time_zone=AMS, recurrence=["RRULE:FREQ=WEEKLY;COUNT=4"])
    person = google_user("user@acme.test")
    person.insert(summary="From Google", start=google_when(wall(first, 11)), end=google_when(wall(first, 12)),
                  recurrence=["RRULE:FREQ=WEEKLY;COUNT=4"])
    run_sync("user")
    [from_google] = [a for a in activities(app) if a.subject == "From Google"]
    zone = ZoneInfo(AMS)
    for event in [e for e in person.live() if not e.get("recurringEventId")]:
        starts = [google_moment(i["start"]) for i in person.events.instances(
            calendarId="primary", eventId=event["id"]).execute()["items"]]
        hours = {s.astimezone(zone).strftime("%H:%M") for s in starts}
        assert len(starts) == 4 and hours == ({"09:00"} if event["summary"] == "From the portal" else {"11:00"})
        assert {s.utcoffset() for s in starts} == {timedelta(0)}
        assert len({s.astimezone(UTC).hour for s in starts}) == 2  # the UTC time moves, the local time does not
    for activity_id, hour in ((portal_id, "09:00"), (from_google.id, "11:00")):
        starts = [s for s, _ in portal_occurrences(app, activity_id)]
        assert len(starts) == 4 and {s.astimezone(zone).strftime("%H:%M") for s in starts} == {hour}


def test_occurrence_edited_and_cancelled_in_google_become_exceptions(app, world, connected, sync_on, run_sync,
                                                                     google_user):
    sync_on("user")
    run_sync("user")
    person = google_user("user@acme.test")
    series = person.insert(summary="Standup", start=google_when(wall(FIRST)), end=google_when(wall(FIRST, 10)),
                           recurrence=["RRULE:FREQ=DAILY;COUNT=5"])
    run_sync("user")
    second, third = (utc_key(FIRST + timedelta(days=n)) for n in (1, 2))
    person.patch(f"{series['id']}_{second}", summary="Standup (late)",
                 start=google_when(wall(FIRST + timedelta(days=1), 11)),
                 end=google_when(wall(FIRST + timedelta(days=1), 12)))
    person.delete(f"{series['id']}_{third}")
    cycle = run_sync("user")
    assert cycle.portal_updated == 1 and cycle.google_updated == 0
    [activity] = activities(app)
    exceptions = {e.original_start: e for e in activity.exceptions}
    assert set(exceptions) == {second, third}
    assert exceptions[second].subject == "Standup (late)" and not exceptions[second].cancelled
    assert exceptions[second].start_at == wall(FIRST + timedelta(days=1), 11).astimezone(UTC)
    assert exceptions[third].cancelled
    shown = portal_occurrences(app, activity.id)
    assert shown == google_occurrences(person, series["id"])
    assert len(shown) == 4 and (wall(FIRST + timedelta(days=1), 11).astimezone(UTC), "Standup (late)") in shown
    quiet = run_sync("user")
    assert (quiet.google_updated, quiet.portal_updated) == (0, 0)


def test_occurrence_edited_and_cancelled_in_the_portal_reach_google(app, world, connected, sync_on, run_sync,
                                                                    google_user):
    sync_on("user")
    activity_id = make_activity(app, world["user"], subject="Standup", start=wall(FIRST).isoformat(),
                                end=wall(FIRST, 10).isoformat(), time_zone=AMS,
                                recurrence=["RRULE:FREQ=DAILY;COUNT=5"])
    run_sync("user")
    second, third = (utc_key(FIRST + timedelta(days=n)) for n in (1, 2))
    moved = wall(FIRST + timedelta(days=1), 14)

    def change(activity):
        activity.set_exception(second, subject="Standup (afternoon)", start=moved.astimezone(UTC),
                               end=(moved + timedelta(hours=1)).astimezone(UTC))
        activity.set_exception(third, cancelled=True)

    edit(app, activity_id, change)
    assert run_sync("user").status == "ok"
    person = google_user("user@acme.test")
    event = only_event(person)
    in_google = google_occurrences(person, event["id"])
    assert len(in_google) == 4
    assert (moved.astimezone(UTC), "Standup (afternoon)") in in_google
    assert in_google == portal_occurrences(app, activity_id)
    # Google now lists the two exceptions as changed: reading them back changes nothing in the portal.
    echo = run_sync("user")
    assert (echo.portal_updated, echo.google_updated) == (0, 0)
    [activity] = activities(app)
    assert {e.original_start for e in activity.exceptions} == {second, third}


def test_exception_survives_a_series_title_change_on_either_side(app, world, connected, sync_on, run_sync,
                                                                  google_user):
    sync_on("user")
    activity_id, person, event, key = synced_weekly_series(app, world, run_sync, google_user, "Weekly")
    moved = wall(FIRST + timedelta(days=8), 15)  # a day later, in the afternoon
    person.patch(f"{event['id']}_{key}", start=google_when(moved), end=google_when(moved + timedelta(hours=1)))
    run_sync("user")

    edit(app, activity_id, lambda a: setattr(a, "subject", "Weekly (portal title)"))
    assert run_sync("user").google_updated == 1
    in_google = google_occurrences(person, event["id"])
    assert (moved.astimezone(UTC), "Weekly (portal title)") in in_google
    assert {summary for _, summary in in_google} == {"Weekly (portal title)"}
    assert in_google == portal_occurrences(app, activity_id)

    person.patch(event["id"], summary="Weekly (google title)")
    run_sync("user")
    [activity] = activities(app)
    assert activity.subject == "Weekly (google title)"
    assert [e.original_start for e in activity.exceptions] == [key]
    assert activity.exceptions[0].start_at == moved.astimezone(UTC)
    # Each occurrence shows the same in both calendars, the moved one still moved.
    shown = portal_occurrences(app, activity_id)
    assert shown == google_occurrences(person, event["id"])
    assert moved.astimezone(UTC) in [start for start, _ in shown]
    assert len(portal_occurrences(app, activity_id)) == 4

    # A longer series keeps the occurrence it still has, on both sides.
    edit(app, activity_id, lambda a: setattr(a, "recurrence", ["RRULE:FREQ=WEEKLY;COUNT=6"]))
    run_sync("user")
    person.patch(event["id"], location="Room 7")
    run_sync("user")
    shown = portal_occurrences(app, activity_id)
    assert len(shown) == 6 and moved.astimezone(UTC) in [start for start, _ in shown]
    assert shown == google_occurrences(person, event["id"])
    [activity] = activities(app)
    assert [e.original_start for e in activity.exceptions] == [key] and activity.location == "Room 7"


@pytest.mark.parametrize("side", ["portal", "page", "google"])
def test_series_time_change_takes_its_exceptions_along_without_duplicates(app, world, connected, sync_on, run_sync,
                                                                          google_user, login_as, side):
    # Google re-anchors a series' changed occurrences on its new start: one moved on its own keeps its time,
    # and no day ends up with two (before, the emulator kept the old exception beside the new occurrence).
    sync_on("user")
    activity_id, person, event, key = synced_weekly_series(app, world, run_sync, google_user, "Review")
    cancelled = utc_key(FIRST + timedelta(days=14))
    person.patch(f"{event['id']}_{key}", summary="Review (special)",
                 start=google_when(wall(FIRST + timedelta(days=7), 16)),
                 end=google_when(wall(FIRST + timedelta(days=7), 17)))
    person.delete(f"{event['id']}_{cancelled}")
    run_sync("user")
    if side == "portal":
        def later(activity):
            activity.start_at += timedelta(hours=2)
            activity.end_at += timedelta(hours=2)
        edit(app, activity_id, later)
    elif side == "page":
        client = login_as("user")
        form = {"subject": "Review", "description": "", "location": "", "time_zone": AMS,
                "start_date": FIRST.isoformat(), "start_time": "11:00", "end_date": FIRST.isoformat(),
                "end_time": "12:00", "freq": "WEEKLY", "interval": "1", "ends": "count", "count": "4",
                "scope": "all", "activity_type": str(activities(app)[0].activity_type_id)}
        answer = client.post(f"/calendar/activities/{activity_id}", data=form)
        assert answer.status_code in (200, 302), answer.get_data(as_text=True)[:2000]
    else:
        person.patch(event["id"], start=google_when(wall(FIRST, 11)), end=google_when(wall(FIRST, 12)))
    assert run_sync("user").status == "ok"
    run_sync("user")
    expected = [(wall(FIRST, 11).astimezone(UTC), "Review"),
                (wall(FIRST + timedelta(days=7), 16).astimezone(UTC), "Review (special)"),
                (wall(FIRST + timedelta(days=21), 11).astimezone(UTC), "Review")]
    assert portal_occurrences(app, activity_id) == expected
    live = [(google_moment(e["start"]), e["summary"]) for e in person.live(singleEvents=True)]
    assert sorted(live) == expected  # nothing shows twice, the cancelled day stays cancelled


def test_this_and_following_split_in_google_becomes_two_series(app, world, connected, sync_on, run_sync,
                                                               google_user):
    sync_on("user")
    make_activity(app, world["user"], subject="Planning", start=wall(FIRST).isoformat(),
                  end=wall(FIRST, 10).isoformat(), time_zone=AMS, recurrence=["RRULE:FREQ=WEEKLY;COUNT=6"])
    run_sync("user")
    person = google_user("user@acme.test")
    old = only_event(person)
    # Google's "this and following" from the 4th occurrence: the old series ends before it, a new one starts.
    split = wall(FIRST + timedelta(days=21))
    until = (split.astimezone(UTC) - timedelta(seconds=1)).strftime("%Y%m%dT%H%M%SZ")
    person.patch(old["id"], recurrence=[f"RRULE:FREQ=WEEKLY;UNTIL={until}"])
    # Google copies the series' private properties (the portal's activity id among them) onto the new one.
    new = person.insert(summary="Planning (new format)", start=google_when(wall(split.date(), 14)),
                        end=google_when(wall(split.date(), 15)), recurrence=["RRULE:FREQ=WEEKLY;COUNT=3"],
                        extendedProperties=person.get(old["id"]).get("extendedProperties"))
    cycle = run_sync("user")
    assert (cycle.portal_created, cycle.portal_updated) == (1, 1)
    first, second = activities(app)
    assert first.subject == "Planning" and first.recurrence == [f"RRULE:FREQ=WEEKLY;UNTIL={until}"]
    assert second.subject == "Planning (new format)" and second.recurrence == ["RRULE:FREQ=WEEKLY;COUNT=3"]
    assert len(portal_occurrences(app, first.id)) == 3 and len(portal_occurrences(app, second.id)) == 3
    assert portal_occurrences(app, first.id) == google_occurrences(person, old["id"])
    assert portal_occurrences(app, second.id) == google_occurrences(person, new["id"])
    with app.app_context():
        from portal.sync.models import SyncLink
        links = {link.activity_id: link.google_event_id for link in db.session.scalars(select(SyncLink))}
    assert links == {first.id: old["id"], second.id: new["id"]}


@pytest.mark.parametrize(("lines", "count", "reason"), [
    (["RDATE;TZID=Europe/Amsterdam:20270201T090000,20270315T090000"], 3, "list of dates (RDATE) only"),
    (["RRULE:FREQ=DAILY;COUNT=10", "EXRULE:FREQ=DAILY;INTERVAL=2"], 5, "exclusion rule (EXRULE)"),
    (["RRULE:FREQ=WEEKLY;COUNT=3", "RRULE:FREQ=MONTHLY;COUNT=3;BYMONTHDAY=20"], 6, "several repeat rules"),
], ids=["rdate-only", "exrule", "two-rrules"])
def test_rules_the_portal_cannot_edit_sync_and_are_read_only(app, world, connected, sync_on, run_sync, google_user,
                                                              login_as, lines, count, reason):
    sync_on("user")
    run_sync("user")
    person = google_user("user@acme.test")
    event = person.insert(summary="Board meetings", start=google_when(wall(FIRST)), end=google_when(wall(FIRST, 10)),
                          recurrence=lines)
    person.insert(summary="Ordinary", start=google_when(wall(FIRST, 12)), end=google_when(wall(FIRST, 13)))
    cycle = run_sync("user")
    assert cycle.status == "ok" and cycle.portal_created == 2
    board = next(a for a in activities(app) if a.subject == "Board meetings")
    assert len(portal_occurrences(app, board.id)) == count
    assert portal_occurrences(app, board.id) == google_occurrences(person, event["id"])
    client = login_as("user")
    html = client.get(f"/calendar/activities/{board.id}").get_data(as_text=True)
    assert reason in html and "<fieldset disabled" in html
    refused = client.post(f"/calendar/activities/{board.id}", data={
        "subject": "Renamed", "start_date": "2027-01-04", "start_time": "09:00", "end_date": "2027-01-04",
        "end_time": "10:00", "time_zone": AMS, "freq": "CUSTOM", "recurrence_lines": "RRULE:FREQ=DAILY"})
    assert refused.status_code == 422 and reason in refused.get_data(as_text=True)
    # Changes made in Google keep coming in, and nothing is written back.
    person.patch(event["id"], summary="Board meetings (2027)")
    changed = run_sync("user")
    assert (changed.portal_updated, changed.google_updated) == (1, 0)
    assert any(a.subject == "Board meetings (2027)" for a in activities(app))


def only_event_named(person, summary):
    [event] = [e for e in person.live() if e.get("summary") == summary]
    return event


def test_first_sync_matches_equivalent_rule_spellings(app, world, connected, sync_on, run_sync, google_user):
    person = google_user("user@acme.test")
    pairs = [
        ("Daily", ["RRULE:FREQ=DAILY;INTERVAL=1;COUNT=10"], ["RRULE:COUNT=10;FREQ=DAILY"]),
        ("Weekly", ["RRULE:FREQ=WEEKLY;BYDAY=FR,MO;WKST=MO"], ["RRULE:FREQ=WEEKLY;BYDAY=MO,FR"]),
        ("Monthly", ["RRULE:FREQ=MONTHLY;BYDAY=+1MO"], ["rrule:freq=monthly;byday=1mo"]),
        ("Until", ["RRULE:FREQ=WEEKLY;UNTIL=20270301T000000Z"], ["RRULE:UNTIL=20270301T000000Z;FREQ=WEEKLY"]),
    ]
    for n, (subject, portal_lines, google_lines) in enumerate(pairs):
        start = wall(FIRST, 8 + n)
        make_activity(app, world["user"], subject=subject, start=start.isoformat(),
                      end=(start + timedelta(hours=1)).isoformat(), time_zone=AMS, recurrence=portal_lines)
        person.insert(summary=subject, start=google_when(start), end=google_when(start + timedelta(hours=1)),
                      recurrence=google_lines)
    # Same subject and times but another pattern: not the same item.
    make_activity(app, world["user"], subject="Daily", start=wall(FIRST, 8).isoformat(),
                  end=wall(FIRST, 9).isoformat(), time_zone=AMS, recurrence=["RRULE:FREQ=DAILY;COUNT=11"])
    sync_on("user")
    cycle = run_sync("user")
    assert cycle.status == "ok", cycle.message
    assert sorted(a.subject for a in activities(app)) == ["Daily", "Daily", "Monthly", "Until", "Weekly"]
    assert sorted(e["summary"] for e in person.live()) == ["Daily", "Daily", "Monthly", "Until", "Weekly"]
    with app.app_context():
        linked = db.session.scalars(select(SyncJournalEntry).where(SyncJournalEntry.kind == "linked")).all()
    assert len(linked) == 4


def test_first_sync_keeps_old_series_that_go_on_and_skips_old_ones_that_ended(app, world, connected, sync_on,
                                                                              run_sync, google_user):
    person = google_user("user@acme.test")
    today = datetime.now(UTC).astimezone(ZoneInfo(AMS)).date()
    long_ago = today - timedelta(days=60)
    person.insert(summary="Google: still going", start=google_when(wall(long_ago)),
                  end=google_when(wall(long_ago, 10)), recurrence=["RRULE:FREQ=WEEKLY"])
    person.insert(summary="Google: ended", start=google_when(wall(long_ago)), end=google_when(wall(long_ago, 10)),
                  recurrence=["RRULE:FREQ=WEEKLY;COUNT=3"])
    make_activity(app, world["user"], subject="Portal: still going", start=wall(long_ago, 11).isoformat(),
                  end=wall(long_ago, 12).isoformat(), time_zone=AMS, recurrence=["RRULE:FREQ=DAILY"])
    make_activity(app, world["user"], subject="Portal: ended", start=wall(long_ago, 11).isoformat(),
                  end=wall(long_ago, 12).isoformat(), time_zone=AMS, recurrence=["RRULE:FREQ=DAILY;COUNT=5"])
    sync_on("user")
    assert run_sync("user").status == "ok"
    in_google = sorted(e["summary"] for e in person.live())
    assert in_google == ["Google: ended", "Google: still going", "Portal: still going"]
    in_portal = sorted(a.subject for a in activities(app))
    assert in_portal == ["Google: still going", "Portal: ended", "Portal: still going"]


def occurrence_post(activity_id, key, day, **changes):
    form = {"subject": "Team sync", "start_date": day, "start_time": "09:00", "end_date": day, "end_time": "10:00",
            "time_zone": AMS, "freq": "WEEKLY", "interval": "1", "ends": "count", "count": "6", "occurrence": key,
            "scope": "this"}
    form.update(changes)
    return f"/calendar/activities/{activity_id}", form


def test_this_and_following_in_the_portal_splits_the_series_in_google(app, world, connected, sync_on, run_sync,
                                                                      google_user, login_as):
    sync_on("user")
    activity_id = make_activity(app, world["user"], subject="Team sync", start=wall(FIRST).isoformat(),
                                end=wall(FIRST, 10).isoformat(), time_zone=AMS,
                                recurrence=["RRULE:FREQ=WEEKLY;COUNT=6"])
    run_sync("user")
    client = login_as("user")
    keys = [utc_key(FIRST + timedelta(days=7 * n)) for n in range(6)]
    days = [(FIRST + timedelta(days=7 * n)).isoformat() for n in range(6)]
    # The fifth occurrence gets its own title; the sixth is cancelled; both from the week view's form.
    url, form = occurrence_post(activity_id, keys[4], days[4], subject="Demo day")
    assert client.post(url, data=form).status_code == 302
    assert client.post(f"/calendar/activities/{activity_id}/delete",
                       data={"occurrence": keys[5], "scope": "this"}).status_code == 302
    run_sync("user")
    person = google_user("user@acme.test")
    [event] = [e for e in person.live() if not e.get("recurringEventId")]
    assert [s for _, s in google_occurrences(person, event["id"])] == ["Team sync"] * 4 + ["Demo day"]

    # "This and following" from the third occurrence: new place from then on.
    url, form = occurrence_post(activity_id, keys[2], days[2], scope="following", location="Room 2")
    assert client.post(url, data=form).status_code == 302
    cycle = run_sync("user")
    assert cycle.status == "ok" and cycle.google_created == 1 and cycle.google_updated == 1
    old_event, new_event = sorted((e for e in person.live() if not e.get("recurringEventId")),
                                  key=lambda e: e["start"]["dateTime"])
    assert old_event["id"] == event["id"]
    until = (wall(FIRST + timedelta(days=14)).astimezone(UTC) - timedelta(seconds=1)).strftime("%Y%m%dT%H%M%SZ")
    assert old_event["recurrence"] == [f"RRULE:FREQ=WEEKLY;UNTIL={until}"]
    assert new_event["recurrence"] == ["RRULE:FREQ=WEEKLY;COUNT=4"] and new_event["location"] == "Room 2"
    everything = sorted((google_moment(e["start"]), e["summary"], e.get("location", ""))
                        for e in person.live(singleEvents=True))
    assert everything == [
        (wall(FIRST).astimezone(UTC), "Team sync", ""),
        (wall(FIRST + timedelta(days=7)).astimezone(UTC), "Team sync", ""),
        (wall(FIRST + timedelta(days=14)).astimezone(UTC), "Team sync", "Room 2"),
        (wall(FIRST + timedelta(days=21)).astimezone(UTC), "Team sync", "Room 2"),
        (wall(FIRST + timedelta(days=28)).astimezone(UTC), "Demo day", "Room 2"),
    ]  # nothing twice: the old series' edited occurrences moved to the new one
    quiet = run_sync("user")
    assert (quiet.google_updated, quiet.portal_updated, quiet.google_created, quiet.portal_created) == (0, 0, 0, 0)
    old, new = activities(app)
    assert portal_occurrences(app, old.id) == google_occurrences(person, old_event["id"])
    assert portal_occurrences(app, new.id) == google_occurrences(person, new_event["id"])


def add_person(app, world, connected, key, email, zone):
    from portal.accounts import add_user
    from portal.models import Organization

    connected.add_user(email, time_zone=zone)
    with app.app_context():
        user = add_user(db.session.get(Organization, world["acme"]), email, key.title(), "user", "long-enough-pw",
                        zone)
        db.session.commit()
        world[key] = user.id


def days_shown(client, week, subject):
    html = client.get(f"/calendar/?week={week}").get_data(as_text=True)
    sections = html.split('data-day="')[1:]
    return [section[:10] for section in sections if subject in section.split("</section>")[0]]


def test_all_day_series_stay_on_their_days_ten_hours_behind_and_thirteen_ahead(app, world, connected, sync_on,
                                                                               run_sync, google_user, client):
    add_person(app, world, connected, "hana", "hana@acme.test", "Pacific/Honolulu")  # UTC-10
    add_person(app, world, connected, "sione", "sione@acme.test", "Pacific/Tongatapu")  # UTC+13
    sync_on("hana", "sione")
    run_sync("hana")
    run_sync("sione")
    # From Google, in Honolulu: Mondays, with Sione invited.
    google_user("hana@acme.test").insert(
        summary="Surf day", start={"date": "2027-01-04"}, end={"date": "2027-01-05"},
        recurrence=["RRULE:FREQ=WEEKLY;COUNT=3"], attendees=[{"email": "sione@acme.test"}])
    run_sync("hana")
    # From the portal, in Tonga: Wednesdays, with Hana taking part.
    make_activity(app, world["sione"], subject="Market day", all_day=True, start="2027-01-06", end="2027-01-07",
                  time_zone="Pacific/Tongatapu", recurrence=["RRULE:FREQ=WEEKLY;COUNT=3"],
                  participants=["hana@acme.test"])
    run_sync("sione")
    run_sync("hana")
    run_sync("sione")
    for who in ("hana", "sione"):
        quiet = run_sync(who)
        assert (quiet.portal_updated, quiet.google_updated) == (0, 0)
    # Each guest's copy of an all-day event reads the same, whatever their calendar's zone.
    surf_event = next(e for e in google_user("hana@acme.test").live() if e["summary"] == "Surf day")
    google_user("hana@acme.test").patch(surf_event["id"], location="North shore")
    assert run_sync("sione").portal_updated == 1
    assert run_sync("hana").portal_updated == 0
    assert next(a for a in activities(app) if a.subject == "Surf day").time_zone == "Pacific/Honolulu"
    surf = next(a for a in activities(app) if a.subject == "Surf day")
    assert (surf.all_day, surf.start_date.isoformat(), surf.end_date.isoformat()) == (True, "2027-01-04", "2027-01-05")
    assert [u.email for u in surf.participants] == ["sione@acme.test"]
    for email in ("hana@acme.test", "sione@acme.test"):
        person = google_user(email)
        starts = {e["summary"]: [] for e in person.live()}
        for instance in person.live(singleEvents=True):
            starts[instance["summary"]].append(instance["start"])
        assert starts["Surf day"] == [{"date": d} for d in ("2027-01-04", "2027-01-11", "2027-01-18")]
        assert starts["Market day"] == [{"date": d} for d in ("2027-01-06", "2027-01-13", "2027-01-20")]
    for email in ("hana@acme.test", "sione@acme.test"):
        client.post("/logout")
        client.post("/login", data={"email": email, "password": "long-enough-pw"})
        assert days_shown(client, "2027-01-11", "Surf day") == ["2027-01-11"]
        assert days_shown(client, "2027-01-11", "Market day") == ["2027-01-13"]
    assert len(activities(app)) == 2


def test_rules_the_portal_refuses_are_item_errors_and_the_cycle_goes_on(app, world, connected, sync_on, run_sync,
                                                                        google_user, login_as):
    sync_on("user")
    run_sync("user")
    person = google_user("user@acme.test")
    for n, lines in enumerate((["RRULE:FREQ=WEEKLY;COUNT=3", "EXDATE;TZID=Mars/Olympus:20270111T090000"],
                               ["RRULE:FREQ=WEEKLY;BYDAY=2MO;COUNT=3"])):
        person.insert(summary=f"Odd {n}", start=google_when(wall(FIRST, 8 + n)), end=google_when(wall(FIRST, 9 + n)),
                      recurrence=lines)
    person.insert(summary="Fine", start=google_when(wall(FIRST, 12)), end=google_when(wall(FIRST, 13)),
                  recurrence=["RRULE:FREQ=WEEKLY;COUNT=3"])
    cycle = run_sync("user")
    assert cycle.status == "partial" and cycle.errors == 2
    assert [a.subject for a in activities(app)] == ["Fine"]
    with app.app_context():
        messages = sorted(e.message for e in db.session.scalars(
            select(SyncJournalEntry).where(SyncJournalEntry.kind == "error")))
    assert "Unknown time zone 'Mars/Olympus'" in messages[0] + messages[1]
    assert "need FREQ=MONTHLY or YEARLY" in messages[0] + messages[1]
    assert run_sync("user").status == "ok"  # reported once, not every cycle


def test_full_resync_keeps_occurrences_edited_before_its_window(app, world, connected, sync_on, run_sync,
                                                                google_user):
    sync_on("user")
    run_sync("user")
    person = google_user("user@acme.test")
    first = datetime.now(UTC).astimezone(ZoneInfo(AMS)).date() - timedelta(days=63)
    series = person.insert(summary="Long running", start=google_when(wall(first)), end=google_when(wall(first, 10)),
                           recurrence=["RRULE:FREQ=WEEKLY"])
    old_key = utc_key(first + timedelta(days=7))
    person.patch(f"{series['id']}_{old_key}", summary="Long running (offsite)")
    recent_key = utc_key(first + timedelta(days=56))
    person.delete(f"{series['id']}_{recent_key}")
    run_sync("user")
    [activity] = activities(app)
    assert sorted(e.original_start for e in activity.exceptions) == sorted([old_key, recent_key])

    connected.control("POST", "/faults", {"kind": "expire_sync_tokens", "user": "user@acme.test"})
    cycle = run_sync("user")
    assert cycle.status == "ok" and (cycle.portal_updated, cycle.google_updated) == (0, 0)
    [activity] = activities(app)
    exceptions = {e.original_start: e for e in activity.exceptions}
    assert exceptions[old_key].subject == "Long running (offsite)" and exceptions[recent_key].cancelled


@pytest.mark.parametrize("deleted_in", ["google", "portal", "portal, after a retitle in google"])
def test_cancelling_an_occurrence_does_not_bring_back_a_series_deleted_on_the_other_side(
        app, world, connected, sync_on, run_sync, google_user, login_as, deleted_in):
    # Found by the chaos run (seed 178). Cancelling one occurrence goes the same way as deleting the whole
    # series: it is no edit that should bring the series back, whichever side cancelled and whether or not
    # the cancellation reached the other side before the delete. (Seed 63 on PostgreSQL: also when the
    # occurrence had been retitled in Google first; the sync meets only its end, cancelled.)
    sync_on("user")
    activity_id, person, event, key = synced_weekly_series(app, world, run_sync, google_user, "Team sync")
    client = login_as("user")
    if deleted_in == "google":
        assert client.post(f"/calendar/activities/{activity_id}/delete",
                           data={"occurrence": key, "scope": "this"}).status_code == 302
        person.delete(event["id"])
    elif deleted_in == "portal":
        person.delete(f"{event['id']}_{key}")
        assert client.post(f"/calendar/activities/{activity_id}/delete", data={"scope": "all"}).status_code == 302
    else:  # retitled in Google, deleted in the portal, then that occurrence cancelled in Google
        person.patch(f"{event['id']}_{key}", summary="Team sync (moved)")
        assert client.post(f"/calendar/activities/{activity_id}/delete", data={"scope": "all"}).status_code == 302
        person.delete(f"{event['id']}_{key}")
    run_sync("user")
    run_sync("user")
    assert activities(app) == []
    assert person.live() == []


def test_a_series_restored_after_its_delete_beat_a_cancelled_occurrence_comes_back_as_the_portal_had_it(
        app, world, connected, sync_on, run_sync, google_user, login_as):
    # Found by the chaos run (seed 14): the occurrence Google cancelled went with the delete it did not beat;
    # restoring the series from the portal's trash brings it back as the portal had it, on both sides.
    sync_on("user")
    activity_id, person, event, key = synced_weekly_series(app, world, run_sync, google_user, "Team sync")
    person.delete(f"{event['id']}_{key}")
    client = login_as("user")
    assert client.post(f"/calendar/activities/{activity_id}/delete", data={"scope": "all"}).status_code == 302
    run_sync("user")
    assert activities(app) == [] and person.live() == []
    assert client.post(f"/calendar/trash/{activity_id}/restore", data={}).status_code in (200, 302)
    run_sync("user")
    run_sync("user")
    expected = [(wall(FIRST + timedelta(days=7 * n)).astimezone(UTC), "Team sync") for n in range(4)]
    assert portal_occurrences(app, activity_id) == expected
    assert sorted((google_moment(e["start"]), e["summary"]) for e in person.live(singleEvents=True)) == expected
