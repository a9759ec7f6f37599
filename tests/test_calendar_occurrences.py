"""One occurrence of a series in the calendar pages: edited alone, with the following ones, or as the whole
series, and deleted alone or with the following ones."""

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from portal.activities import ValidationError, delete_occurrence, edit_occurrence
from portal.extensions import db
from portal.models import Activity, User
from tests.helpers import make_activity

AMS = ZoneInfo("Europe/Amsterdam")
HX = {"HX-Request": "true"}
# Mondays 09:00-10:00 Amsterdam from 4 January 2027, six times.
SERIES = {"subject": "Team sync", "start": "2027-01-04T09:00:00+01:00", "end": "2027-01-04T10:00:00+01:00",
          "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=6"]}
THIRD = "20270118T080000Z"  # 18 January, 09:00 in Amsterdam


def series(app, world, **extra):
    return make_activity(app, world["user"], **{**SERIES, **extra})


def occurrence_form(**changes):
    form = {"subject": "Team sync", "start_date": "2027-01-18", "start_time": "09:00", "end_date": "2027-01-18",
            "end_time": "10:00", "time_zone": "Europe/Amsterdam", "freq": "WEEKLY", "interval": "1",
            "ends": "count", "count": "6", "occurrence": THIRD, "scope": "this"}
    form.update(changes)
    return form


def load(app, activity_id):
    with app.app_context():
        activity = db.session.get(Activity, activity_id)
        _ = (activity.exceptions, activity.participants, activity.owner)
        db.session.expunge(activity)
        return activity


def day_html(page, day):
    start = page.index(f'data-day="{day}"')
    following = page.find('data-day="', start + 10)
    return page[start:following if following != -1 else len(page)]


def week_items(client, week):
    html = client.get(f"/calendar/?week={week}").get_data(as_text=True)
    return re.findall(r'<span class="when">([^<]*)</span>\s*<span class="subject">([^<]*)</span>', html)


def test_week_view_links_each_occurrence_with_its_key(app, world, login_as):
    activity_id = series(app, world)
    client = login_as("user")
    html = client.get("/calendar/?week=2027-01-18").get_data(as_text=True)
    assert f"/calendar/activities/{activity_id}?occurrence={THIRD}" in html
    form = client.get(f"/calendar/activities/{activity_id}?occurrence={THIRD}").get_data(as_text=True)
    assert 'name="start_date" value="2027-01-18"' in form and "occurrence of Mon 18 Jan 2027" in form
    for label in ("This occurrence", "This and following occurrences", "All occurrences"):
        assert label in form
    delete_form = re.search(r'<form[^>]*id="delete-form".*?</form>', form, re.S).group(0)
    assert 'name="scope" value="this"' in delete_form and 'name="scope" value="following"' in delete_form
    assert client.get(f"/calendar/activities/{activity_id}?occurrence=20270119T080000Z").status_code == 404
    assert client.get(f"/calendar/activities/{activity_id}?occurrence=garbage").status_code == 404


def test_edit_this_occurrence_only(app, world, login_as):
    activity_id = series(app, world)
    client = login_as("user")
    response = client.post(f"/calendar/activities/{activity_id}", data=occurrence_form(
        subject="Team sync (client visit)", start_time="14:00", end_time="15:30", location="Utrecht"))
    assert response.status_code == 302
    activity = load(app, activity_id)
    assert activity.subject == "Team sync" and activity.location == ""
    [exception] = activity.exceptions
    assert exception.original_start == THIRD and not exception.cancelled
    assert (exception.subject, exception.location) == ("Team sync (client visit)", "Utrecht")
    assert exception.start_at == datetime(2027, 1, 18, 13, 0, tzinfo=UTC)
    assert exception.end_at == datetime(2027, 1, 18, 14, 30, tzinfo=UTC)
    assert week_items(client, "2027-01-18") == [("14:00–15:30", "Team sync (client visit)")]
    assert week_items(client, "2027-01-11") == [("09:00–10:00", "Team sync")]
    # The moved occurrence opens with its own values and can be changed again.
    again = client.get(f"/calendar/activities/{activity_id}?occurrence={THIRD}").get_data(as_text=True)
    assert 'value="14:00"' in again and "Team sync (client visit)" in again


def test_edit_this_occurrence_is_validated(app, world, login_as):
    activity_id = series(app, world)
    client = login_as("user")
    response = client.post(f"/calendar/activities/{activity_id}", data=occurrence_form(end_time="08:00"),
                           headers=HX)
    assert response.status_code == 422 and "before the start" in response.get_data(as_text=True)
    assert load(app, activity_id).exceptions == []
    gone = client.post(f"/calendar/activities/{activity_id}", data=occurrence_form(occurrence="20270119T080000Z"))
    assert gone.status_code == 404


def test_all_occurrences_from_one_occurrence_moves_the_series_by_the_same(app, world, login_as):
    activity_id = series(app, world)
    client = login_as("user")
    client.post(f"/calendar/activities/{activity_id}", data=occurrence_form(subject="Team sync (special)"))
    response = client.post(f"/calendar/activities/{activity_id}", data=occurrence_form(
        scope="all", subject="Team sync (special)", start_time="10:00", end_time="11:30"))
    assert response.status_code == 302
    activity = load(app, activity_id)
    # The series keeps its first day and its own title; only the time moved, like the occurrence did.
    assert activity.subject == "Team sync"
    assert activity.start_at.astimezone(AMS).isoformat() == "2027-01-04T10:00:00+01:00"
    assert activity.end_at.astimezone(AMS).isoformat() == "2027-01-04T11:30:00+01:00"
    # The retitled occurrence moves along with the series, as Google re-anchors it: still special, at 10:00.
    assert [e.original_start for e in activity.exceptions] == ["20270118T090000Z"]
    assert week_items(client, "2027-01-18") == [("10:00–11:30", "Team sync (special)")]
    assert week_items(client, "2027-01-25") == [("10:00–11:30", "Team sync")]


def test_this_and_following_splits_the_series(app, world, login_as):
    activity_id = series(app, world, participants=["colleague@acme.test"])
    client = login_as("user")
    fifth = "20270201T080000Z"
    client.post(f"/calendar/activities/{activity_id}", data=occurrence_form(
        occurrence=fifth, start_date="2027-02-01", end_date="2027-02-01", subject="Moved one", start_time="12:00",
        end_time="13:00"))
    response = client.post(f"/calendar/activities/{activity_id}", data=occurrence_form(
        scope="following", subject="Team sync (new time)", start_time="11:00", end_time="12:00",
        participants=["colleague@acme.test"]))
    assert response.status_code == 302
    with app.app_context():
        old, new = db.session.scalars(select(Activity).order_by(Activity.id)).all()
        assert old.id == activity_id
        assert old.subject == "Team sync" and old.recurrence == ["RRULE:FREQ=WEEKLY;UNTIL=20270118T075959Z"]
        assert new.subject == "Team sync (new time)" and new.recurrence == ["RRULE:FREQ=WEEKLY;COUNT=4"]
        assert new.start_at.astimezone(AMS).isoformat() == "2027-01-18T11:00:00+01:00"
        assert [u.email for u in new.participants] == ["colleague@acme.test"] and new.owner_id == old.owner_id
        # The occurrence edited after the cut belonged to the 09:00 series; at 11:00 it has no slot any more.
        assert old.exceptions == [] and new.exceptions == []
    assert week_items(client, "2027-01-11") == [("09:00–10:00", "Team sync")]
    assert week_items(client, "2027-01-18") == [("11:00–12:00", "Team sync (new time)")]
    assert week_items(client, "2027-02-08") == [("11:00–12:00", "Team sync (new time)")]


def test_this_and_following_keeps_edited_occurrences_whose_slot_remains(app, world, login_as):
    activity_id = series(app, world)
    client = login_as("user")
    fifth = "20270201T080000Z"
    client.post(f"/calendar/activities/{activity_id}", data=occurrence_form(
        occurrence=fifth, start_date="2027-02-01", end_date="2027-02-01", subject="Demo day"))
    client.post(f"/calendar/activities/{activity_id}", data=occurrence_form(scope="following",
                                                                            location="Room 2"))
    with app.app_context():
        old, new = db.session.scalars(select(Activity).order_by(Activity.id)).all()
        assert old.exceptions == [] and new.location == "Room 2"
        assert [(e.original_start, e.subject) for e in new.exceptions] == [(fifth, "Demo day")]
    assert week_items(client, "2027-02-01") == [("09:00–10:00", "Demo day")]


def test_this_and_following_from_the_first_occurrence_changes_the_whole_series(app, world, login_as):
    activity_id = series(app, world)
    login_as("user").post(f"/calendar/activities/{activity_id}", data=occurrence_form(
        scope="following", occurrence="20270104T080000Z", start_date="2027-01-04", end_date="2027-01-04",
        subject="Renamed"))
    with app.app_context():
        [activity] = db.session.scalars(select(Activity)).all()
        assert activity.subject == "Renamed" and activity.recurrence == ["RRULE:FREQ=WEEKLY;COUNT=6"]


def test_delete_this_occurrence_and_this_and_following(app, world, login_as):
    activity_id = series(app, world)
    client = login_as("user")
    response = client.post(f"/calendar/activities/{activity_id}/delete", data={"occurrence": THIRD, "scope": "this"},
                           headers=HX)
    assert response.status_code == 200 and "Deleted the occurrence of Mon 18 Jan 2027" in response.get_data(
        as_text=True)
    activity = load(app, activity_id)
    assert not activity.is_deleted
    assert [(e.original_start, e.cancelled) for e in activity.exceptions] == [(THIRD, True)]
    assert week_items(client, "2027-01-18") == []
    assert week_items(client, "2027-01-25") == [("09:00–10:00", "Team sync")]

    client.post(f"/calendar/activities/{activity_id}/delete", data={"occurrence": "20270125T080000Z",
                                                                    "scope": "following"})
    activity = load(app, activity_id)
    assert activity.recurrence == ["RRULE:FREQ=WEEKLY;UNTIL=20270125T075959Z"]
    assert [e.original_start for e in activity.exceptions] == [THIRD]
    assert week_items(client, "2027-01-25") == [] and week_items(client, "2027-01-11") == [("09:00–10:00",
                                                                                             "Team sync")]
    # Without a scope the delete button removes the whole series, as before.
    client.post(f"/calendar/activities/{activity_id}/delete", data={"occurrence": "20270111T080000Z"})
    assert load(app, activity_id).is_deleted


def test_viewer_sees_timed_occurrences_in_their_zone_and_all_day_ones_on_their_day(app, world, login_as):
    from portal.models import User

    with app.app_context():
        db.session.get(User, world["colleague"]).time_zone = "Pacific/Honolulu"
        db.session.commit()
    make_activity(app, world["user"], subject="Timed", participants=["colleague@acme.test"], **{
        k: v for k, v in SERIES.items() if k != "subject"})
    make_activity(app, world["user"], subject="Holiday", all_day=True, start="2027-01-04", end="2027-01-05",
                  time_zone="Pacific/Tongatapu", recurrence=["RRULE:FREQ=WEEKLY;COUNT=3"],
                  participants=["colleague@acme.test"])
    page = login_as("colleague").get("/calendar/?week=2027-01-11").get_data(as_text=True)
    monday, tuesday = day_html(page, "2027-01-11"), day_html(page, "2027-01-12")
    assert "Holiday" in monday and "All day" in monday and "Holiday" not in tuesday
    assert "Holiday" not in day_html(page, "2027-01-17")
    # 09:00 in Amsterdam on Monday is 22:00 on Sunday evening in Honolulu.
    assert "22:00–23:00" in day_html(page, "2027-01-17") and "Timed" not in monday


def test_read_only_series_offers_no_occurrence_changes(app, world, login_as):
    activity_id = make_activity(app, world["user"], subject="Dates", start="2027-01-04T09:00:00+01:00",
                                end="2027-01-04T10:00:00+01:00", recurrence=["RDATE:20270111T080000Z"])
    client = login_as("user")
    form = client.get(f"/calendar/activities/{activity_id}?occurrence=20270111T080000Z").get_data(as_text=True)
    assert "list of dates (RDATE) only" in form and 'id="delete-scope"' not in form
    assert 'name="scope"' not in form
    refused = client.post(f"/calendar/activities/{activity_id}", data=occurrence_form(
        occurrence="20270111T080000Z", start_date="2027-01-11", end_date="2027-01-11"))
    assert refused.status_code == 422
    client.post(f"/calendar/activities/{activity_id}/delete", data={"occurrence": "20270111T080000Z",
                                                                    "scope": "this"})
    assert load(app, activity_id).is_deleted  # only the whole item can go


def test_participant_edits_an_occurrence_only_where_the_organization_lets_participants_edit(app, world, login_as):
    from portal.extensions import db
    from portal.models import Organization

    activity_id = series(app, world, participants=["colleague@acme.test"])
    colleague = login_as("colleague")
    refused = colleague.post(f"/calendar/activities/{activity_id}", data=occurrence_form(subject="Mine too"))
    assert refused.status_code == 403 and load(app, activity_id).exceptions == []
    with app.app_context():
        db.session.get(Organization, world["acme"]).participants_can_edit = True
        db.session.commit()
    assert colleague.post(f"/calendar/activities/{activity_id}",
                          data=occurrence_form(subject="Mine too")).status_code == 302
    assert [e.subject for e in load(app, activity_id).exceptions] == ["Mine too"]
    colleague.post("/logout")
    other = login_as("other")
    assert other.post(f"/calendar/activities/{activity_id}", data=occurrence_form()).status_code == 404
    assert other.post(f"/calendar/activities/{activity_id}/delete", data={"occurrence": THIRD,
                                                                          "scope": "this"}).status_code == 404


def test_all_day_occurrence_moves_by_days(app, world, login_as):
    activity_id = make_activity(app, world["user"], subject="Offsite", all_day=True, start="2027-01-04",
                                end="2027-01-05", recurrence=["RRULE:FREQ=WEEKLY;COUNT=4"])
    client = login_as("user")
    client.post(f"/calendar/activities/{activity_id}", data={
        "subject": "Offsite", "all_day": "on", "start_date": "2027-01-13", "end_date": "2027-01-14",
        "time_zone": "Europe/Amsterdam", "freq": "WEEKLY", "ends": "count", "count": "4",
        "occurrence": "20270111", "scope": "this"})
    [exception] = load(app, activity_id).exceptions
    assert (exception.original_start, str(exception.start_date), str(exception.end_date)) == (
        "20270111", "2027-01-13", "2027-01-15")
    page = client.get("/calendar/?week=2027-01-11").get_data(as_text=True)
    shown = [day for day in ("2027-01-11", "2027-01-12", "2027-01-13", "2027-01-14", "2027-01-15")
             if "Offsite" in day_html(page, day)]
    assert shown == ["2027-01-13", "2027-01-14"]


def test_moving_a_series_takes_its_changed_and_cancelled_occurrences_along(app, world, api):
    # As Google does: the series moves from 09:00 to 11:00; the retitled occurrence follows, the one moved to
    # 15:00 on its own stays there, the cancelled one stays cancelled; none is left on a time the rule lost.
    from datetime import UTC, datetime, timedelta
    from zoneinfo import ZoneInfo

    from portal.extensions import db
    from portal.models import Activity
    from tests.helpers import make_activity

    zone = ZoneInfo("Europe/Amsterdam")
    first = datetime(2027, 3, 1, 9, tzinfo=zone)
    activity_id = make_activity(app, world["user"], subject="Daily", start=first.isoformat(),
                                end=(first + timedelta(minutes=30)).isoformat(), time_zone="Europe/Amsterdam",
                                recurrence=["RRULE:FREQ=DAILY;COUNT=4"])
    key = [(first + timedelta(days=n)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ") for n in range(4)]
    with app.app_context():
        activity = db.session.get(Activity, activity_id)
        activity.set_exception(key[1], subject="Tuesday")
        moved = (first + timedelta(days=2)).replace(hour=15)
        activity.set_exception(key[2], start=moved.astimezone(UTC), end=(moved + timedelta(minutes=30)).astimezone(UTC))
        activity.set_exception(key[3], cancelled=True)
        db.session.commit()
    later = first.replace(hour=11)
    answer = api("user").patch(f"/api/v1/activities/{activity_id}", json={
        "start": later.isoformat(), "end": (later + timedelta(minutes=30)).isoformat()})
    assert answer.status_code == 200, answer.get_json()
    with app.app_context():
        activity = db.session.get(Activity, activity_id)
        seen = [(o.start.astimezone(zone).strftime("%a %H:%M"), o.subject) for o in activity.occurrences_between(
            first - timedelta(days=1), first + timedelta(days=5))]
    assert seen == [("Mon 11:00", "Daily"), ("Tue 11:00", "Tuesday"), ("Wed 15:00", "Daily")]
    with app.app_context():
        [cancelled] = [e for e in db.session.get(Activity, activity_id).exceptions if e.cancelled]
        # still cancelled as Google reads a cancelled occurrence: by its key alone, with no times of its own
        assert cancelled.original_start == (first + timedelta(days=3, hours=2)).astimezone(UTC).strftime(
            "%Y%m%dT%H%M%SZ")
        assert (cancelled.start_at, cancelled.end_at, cancelled.start_date, cancelled.end_date) == (None,) * 4


def test_occurrences_are_changed_from_plain_values_without_a_request(app, world):
    activity_id = series(app, world)
    with app.app_context():
        activity = db.session.get(Activity, activity_id)
        user = db.session.get(User, world["user"])
        third = activity.occurrence(THIRD)
        with pytest.raises(ValidationError) as refused:
            delete_occurrence(activity, third, "some")
        assert refused.value.fields == {"scope": "Choose which occurrences to delete."}
        values = {"subject": "Retro", "description": "", "location": "", "start": "2027-01-18T11:00",
                  "end": "2027-01-18T12:00"}
        scope, changed = edit_occurrence(activity, third, "this", values, actor=user,
                                         errors={"recurrence": "ignored: one occurrence has no rule"})
        assert (scope, changed) == ("this", activity)
        assert activity.occurrence(THIRD).subject == "Retro"
        assert activity.occurrence(THIRD).start == datetime(2027, 1, 18, 10, tzinfo=UTC)
        first = activity.occurrence("20270104T080000Z")
        assert delete_occurrence(activity, first, "following") == "all" and activity.is_deleted
        db.session.rollback()
