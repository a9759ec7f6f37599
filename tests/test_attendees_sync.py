"""Participants and attendees both ways against the Google emulator: users of the organization, guests from
outside, answers, attendees' own copies, invitations from outside, and owners Google does not know."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from portal.changes import changed_by
from portal.extensions import db
from portal.models import Activity, ActivityParticipant, Organization
from portal.sync.models import SyncJournalEntry, SyncLink
from tests.conftest import PASSWORD
from tests.helpers import make_activity
from tests.test_sync_engine import activities

START = datetime.now(UTC).replace(microsecond=0, second=0, minute=0) + timedelta(days=3)


def slot(hours=0, length=1):
    return ({"dateTime": (START + timedelta(hours=hours)).isoformat(), "timeZone": "Europe/Amsterdam"},
            {"dateTime": (START + timedelta(hours=hours + length)).isoformat(), "timeZone": "Europe/Amsterdam"})


def times(hours=0, length=1):
    return {"start": (START + timedelta(hours=hours)).isoformat(),
            "end": (START + timedelta(hours=hours + length)).isoformat()}


def answers(app, activity_id):
    with app.app_context():
        rows = db.session.scalars(select(ActivityParticipant).where(ActivityParticipant.activity_id == activity_id))
        return {row.user.email: row.response_status for row in rows}


def edit(app, activity_id, change, by=None):
    with app.app_context():
        activity = db.session.get(Activity, activity_id)
        changed_by(db.session, by or activity.owner_id)
        change(activity)
        db.session.commit()


def test_two_colleagues_and_a_guest_stay_one_activity_through_edits_on_both_sides(app, world, connected, sync_on,
                                                                                   run_sync, google_user, login_as):
    sync_on("user", "colleague")
    organizer = google_user("user@acme.test")
    start, end = slot()
    event = organizer.insert(summary="Design review", start=start, end=end, attendees=[
        {"email": "colleague@acme.test"}, {"email": "admin@acme.test"},
        {"email": "guest@example.com", "displayName": "Gina Guest", "responseStatus": "tentative"}])
    run_sync("colleague")
    run_sync("user")
    [activity] = activities(app)
    assert activity.owner.email == "user@acme.test"
    assert sorted(u.email for u in activity.participants) == ["admin@acme.test", "colleague@acme.test"]

    # The colleague accepts in Google: the answer shows in the portal and is never sent back.
    colleague = google_user("colleague@acme.test")
    copy = colleague.get(event["id"])
    colleague.patch(event["id"], attendees=[{**a, "responseStatus": "accepted"} if a.get("self") else a
                                            for a in copy["attendees"]])
    run_sync("colleague")
    assert answers(app, activity.id) == {"admin@acme.test": "needsAction", "colleague@acme.test": "accepted"}

    # Edits on both sides.
    organizer.patch(event["id"], summary="Design review (v2)", location="Room 4")
    run_sync("user")
    edit(app, activity.id, lambda a: setattr(a, "description", "Bring the mock-ups"))
    assert run_sync("colleague").google_updated == 1
    run_sync("user")

    [activity] = activities(app)
    assert (activity.subject, activity.location, activity.description) == (
        "Design review (v2)", "Room 4", "Bring the mock-ups")
    assert sorted(u.email for u in activity.participants) == ["admin@acme.test", "colleague@acme.test"]
    google = organizer.get(event["id"])
    assert google["description"] == "Bring the mock-ups"
    attendees = {a["email"]: a.get("responseStatus") for a in google["attendees"]}
    assert attendees == {"colleague@acme.test": "accepted", "admin@acme.test": "needsAction",
                         "guest@example.com": "tentative"}
    assert [e["id"] for e in colleague.live()] == [event["id"]]
    assert [e["id"] for e in google_user("admin@acme.test").live()] == [event["id"]]
    assert connected.control("GET", "/stats")["emails_sent"] == 0

    html = login_as("user").get(f"/calendar/activities/{activity.id}").get_data(as_text=True)
    assert "Gina Guest guest@example.com" in html and "maybe" in html  # read-only, from Google
    assert "Carl Colleague (colleague@acme.test): accepted" in html
    with app.app_context():
        link = db.session.scalars(select(SyncLink)).one()
        assert [g["email"] for g in link.external_attendees] == ["guest@example.com"]


def test_participant_with_sync_off_gets_the_item_in_both_systems(app, world, connected, sync_on, run_sync,
                                                                 google_user, login_as):
    sync_on("user")  # the colleague's own sync stays off
    make_activity(app, world["user"], subject="From the portal", participants=["colleague@acme.test"], **times())
    start, end = slot(3)
    google_user("user@acme.test").insert(summary="From Google", start=start, end=end,
                                         attendees=[{"email": "colleague@acme.test"}])
    run_sync("user")
    assert sorted(e["summary"] for e in google_user("colleague@acme.test").live()) == ["From Google",
                                                                                       "From the portal"]
    for activity in activities(app):
        assert [u.email for u in activity.participants] == ["colleague@acme.test"]
    week = START.date() - timedelta(days=START.weekday())
    page = login_as("colleague").get(f"/calendar/?week={week.isoformat()}").get_data(as_text=True)
    assert "From Google" in page and "From the portal" in page


def test_attendee_removing_their_copy_declines_and_deletes_nothing(app, world, connected, sync_on, run_sync,
                                                                   google_user):
    sync_on("user", "colleague")
    activity_id = make_activity(app, world["user"], subject="Weekly 1:1", participants=["colleague@acme.test"],
                                recurrence=["RRULE:FREQ=WEEKLY;COUNT=4"], **times())
    run_sync("user")
    run_sync("colleague")
    colleague = google_user("colleague@acme.test")
    [series] = colleague.live()
    second = (START + timedelta(days=7)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    colleague.delete(f"{series['id']}_{second}")  # "not this one" in their own calendar
    cycle = run_sync("colleague")
    assert cycle.status == "ok" and (cycle.portal_updated, cycle.portal_deleted, cycle.google_updated) == (0, 0, 0)
    [activity] = activities(app)
    assert activity.exceptions == []  # the organizer's series still has that occurrence
    assert len(google_user("user@acme.test").live(singleEvents=True)) == 4

    colleague.delete(series["id"])  # removes the whole series from their calendar: that declines it
    cycle = run_sync("colleague")
    assert cycle.status == "ok" and cycle.portal_deleted == 0 and cycle.google_deleted == 0
    [activity] = activities(app)
    assert activity.id == activity_id and [u.email for u in activity.participants] == ["colleague@acme.test"]
    assert answers(app, activity_id) == {"colleague@acme.test": "declined"}
    organizers = google_user("user@acme.test")
    assert [e["summary"] for e in organizers.live() if not e.get("recurringEventId")] == ["Weekly 1:1"]
    assert len(organizers.live(singleEvents=True)) == 4
    assert run_sync("user").portal_deleted == 0


def invitation_from_outside(app, world, connected, google_user):
    """An event organized by someone Google knows but the portal does not, inviting our user."""
    connected.add_user("partner@partner.test", time_zone="Europe/Amsterdam")
    start, end = slot(5)
    return google_user("partner@partner.test").insert(summary="Partner meeting", start=start, end=end,
                                                      location="Their office",
                                                      attendees=[{"email": "user@acme.test"}])


def test_change_to_an_invitation_from_outside_is_not_pushed_or_retried(app, world, connected, sync_on, run_sync,
                                                                       google_user, login_as):
    sync_on("user")
    run_sync("user")
    event = invitation_from_outside(app, world, connected, google_user)
    run_sync("user")
    [activity] = activities(app)
    assert activity.owner.email == "user@acme.test" and activity.google_organizer == "partner@partner.test"
    html = login_as("user").get(f"/calendar/activities/{activity.id}").get_data(as_text=True)
    assert "Organized in Google Calendar by partner@partner.test" in html and "<fieldset disabled" in html

    # A change made anyway (the API, a script): Google would refuse it, so it is not even sent.
    connected.control("DELETE", "/stats")
    edit(app, activity.id, lambda a: setattr(a, "location", "Our office"))
    cycle = run_sync("user")
    assert cycle.status == "ok" and cycle.google_updated == 0
    assert connected.control("GET", "/stats")["requests"].get("calendar.events.patch", 0) == 0
    [activity] = activities(app)
    assert activity.location == "Their office"
    with app.app_context():
        lost = db.session.scalars(select(SyncJournalEntry).where(SyncJournalEntry.kind == "conflict")).one()
        assert (lost.field, lost.before, lost.after) == ("location", "Our office", "Their office")
        assert "partner@partner.test" in lost.message

    # Without knowing the organizer (nor the organizer's etag) the event is read first: Google says who
    # organizes it, so the change is not even sent.
    edit(app, activity.id, lambda a: (setattr(a, "google_organizer", None), setattr(a, "subject", "Mine now")))
    connected.control("DELETE", "/stats")
    cycle = run_sync("user")
    assert cycle.status == "ok"
    assert connected.control("GET", "/stats")["requests"].get("calendar.events.patch", 0) == 0
    assert connected.control("GET", "/stats")["requests"].get("calendar.events.get", 0) == 1
    [activity] = activities(app)
    assert activity.subject == "Partner meeting"
    idle = run_sync("user")
    assert (idle.requests, idle.google_updated, idle.errors) == (1, 0, 0)
    assert google_user("partner@partner.test").get(event["id"])["summary"] == "Partner meeting"

    # The organizer's own changes still come in.
    google_user("partner@partner.test").patch(event["id"], summary="Partner meeting (moved)")
    run_sync("user")
    [activity] = activities(app)
    assert activity.subject == "Partner meeting (moved)"


def add_freelancer(app, world):
    """A portal user whose address is not in the Google Workspace."""
    from portal.accounts import add_user

    with app.app_context():
        user = add_user(db.session.get(Organization, world["acme"]), "freelancer@acme.test", "Fay Freelancer",
                        "user", PASSWORD)
        db.session.commit()
        world["freelancer"] = user.id
    return world["freelancer"]


def test_owner_outside_the_workspace_gets_a_syncing_participants_calendar(app, world, connected, sync_on,
                                                                          run_sync, google_user, login_as):
    add_freelancer(app, world)
    sync_on("colleague")
    activity_id = make_activity(app, world["freelancer"], subject="Workshop", participants=["colleague@acme.test"],
                                **times())
    cycle = run_sync("colleague")
    assert cycle.status == "ok" and cycle.google_created == 1, cycle.message
    colleague = google_user("colleague@acme.test")
    [event] = colleague.live()
    assert event["organizer"]["email"] == "colleague@acme.test"
    assert {a["email"] for a in event["attendees"]} == {"colleague@acme.test", "freelancer@acme.test"}
    [activity] = activities(app)
    assert activity.owner.email == "freelancer@acme.test" and activity.google_organizer == "colleague@acme.test"
    client = login_as("colleague")
    html = client.get(f"/calendar/activities/{activity_id}").get_data(as_text=True)
    assert "in the calendar of Carl Colleague (colleague@acme.test)" in html
    assert "freelancer@acme.test is not a user of the Google Workspace" in html
    with app.app_context():
        from portal.sync.models import CalendarSync
        assert db.session.get(CalendarSync, world["colleague"]).error_code is None

    # Both ways from here on, and the owner stays the owner.
    colleague.patch(event["id"], summary="Workshop (room 3)")
    assert run_sync("colleague").portal_updated == 1
    edit(app, activity_id, lambda a: setattr(a, "description", "Agenda attached"))
    assert run_sync("colleague").google_updated == 1
    google = colleague.get(event["id"])
    assert (google["summary"], google["description"]) == ("Workshop (room 3)", "Agenda attached")
    [activity] = activities(app)
    assert activity.owner.email == "freelancer@acme.test"
    assert [u.email for u in activity.participants] == ["colleague@acme.test"]

    # The organizer in Google drops the owner from the guests: the owner is never dropped.
    colleague.patch(event["id"], attendees=[a for a in google["attendees"] if a["email"] != "freelancer@acme.test"])
    run_sync("colleague")
    [activity] = activities(app)
    assert activity.owner.email == "freelancer@acme.test"
    run_sync("colleague")
    assert "freelancer@acme.test" in {a["email"] for a in colleague.get(event["id"])["attendees"]}
    quiet = run_sync("colleague")
    assert (quiet.google_updated, quiet.portal_updated) == (0, 0)


def test_owner_outside_the_workspace_without_a_syncing_participant_says_why(app, world, connected, sync_on,
                                                                            run_sync, google_user, login_as):
    from portal.sync.engine import push_pending

    add_freelancer(app, world)
    sync_on("freelancer")  # on in the portal, but Google does not know the address
    activity_id = make_activity(app, world["freelancer"], subject="Solo", participants=["colleague@acme.test"],
                                **times())
    own = run_sync("freelancer")
    assert own.status == "failed"  # their own calendar cannot be read: their banner says so
    with app.app_context():
        cycle = push_pending(world["acme"])
        assert cycle.status == "partial" and cycle.errors == 1
        link = db.session.scalars(select(SyncLink)).one()
        assert not link.confirmed and "no participant who is has calendar sync switched on" in link.error_message
    html = login_as("admin").get(f"/calendar/activities/{activity_id}").get_data(as_text=True)
    assert "not synced" in html and "freelancer@acme.test is not a user of the Google Workspace" in html

    # No loop: the next pushes do not ask Google about the owner again while nothing changed.
    tokens = connected.control("GET", "/stats")["requests"].get("oauth2.token", 0)
    with app.app_context():
        again = push_pending(world["acme"])
        assert again.errors == 0 and again.requests == 0
    assert connected.control("GET", "/stats")["requests"].get("oauth2.token", 0) == tokens

    # Once a participant syncs, the item goes to their calendar.
    sync_on("colleague")
    assert run_sync("colleague").google_created == 1
    assert [e["summary"] for e in google_user("colleague@acme.test").live()] == ["Solo"]
    with app.app_context():
        link = db.session.scalars(select(SyncLink)).one()
        assert link.confirmed and link.error_message is None and link.calendar_email == "colleague@acme.test"


def test_an_answer_read_while_someone_edits_the_activity_is_stored_without_a_crash(
        app, world, connected, sync_on, run_sync, google_user, caplog):
    # Found by the chaos run on PostgreSQL (seed 59): storing the answers Google shows met an activity a
    # person had just changed; the versioned update failed, which is a race like any other (taken in again
    # by reading the activity again), not a crash to log with a traceback.
    import logging

    from sqlalchemy import text

    from portal.sync import engine

    sync_on("user", "colleague")
    organizer = google_user("user@acme.test")
    start, end = slot()
    event = organizer.insert(summary="Design review", start=start, end=end,
                             attendees=[{"email": "colleague@acme.test"}])
    run_sync("colleague")
    run_sync("user")
    [activity] = activities(app)
    colleague = google_user("colleague@acme.test")
    copy = colleague.get(event["id"])
    colleague.patch(event["id"], attendees=[{**a, "responseStatus": "accepted"} if a.get("self") else a
                                            for a in copy["attendees"]])

    def person_edits(name):
        if name == "applied":  # after the cycle read the activity, before it stores the answers
            with db.engine.begin() as connection:
                connection.execute(text("UPDATE activities SET location = 'Room 9', version = version + 1 "
                                        "WHERE id = :id"), {"id": activity.id})

    engine.CHECKPOINTS.append(person_edits)
    try:
        with caplog.at_level(logging.ERROR, logger="portal"):
            cycle = run_sync("colleague")
    finally:
        engine.CHECKPOINTS.remove(person_edits)
    assert cycle.status in ("ok", "partial"), cycle.message
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info], caplog.text
    assert answers(app, activity.id) == {"colleague@acme.test": "accepted"}  # read again and stored
    with app.app_context():
        assert db.session.get(Activity, activity.id).location == "Room 9"  # the person's edit stands
