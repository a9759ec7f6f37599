"""Participants' answers and rights against the Google emulator: an answer given in the portal reaches the
participant's own Google copy (as Google lets an attendee answer: `events.patch` of their copy with their
attendee entry's `responseStatus`), a participant's own copy is never a way to change the owner's item, and the
organization's "participants may edit" becomes the event's `guestsCanModify`."""

from __future__ import annotations

import pytest
from googleapiclient.errors import HttpError
from sqlalchemy import select

from portal.extensions import db
from portal.models import Activity, ActivityParticipant, Organization
from portal.sync.models import SyncLink
from tests.conftest import EMAILS
from tests.helpers import make_activity
from tests.test_attendees_sync import times

COLLEAGUE = EMAILS["colleague"]


def event_id_of(app, activity_id) -> str:
    with app.app_context():
        return db.session.scalar(select(SyncLink.google_event_id).where(SyncLink.activity_id == activity_id))


def answer_row(app, activity_id) -> tuple[str, bool]:
    with app.app_context():
        row = db.session.scalar(select(ActivityParticipant).where(ActivityParticipant.activity_id == activity_id))
        return row.response_status, row.response_pending


def attendee_answer(event, email) -> str:
    return next(a.get("responseStatus") for a in event["attendees"] if a["email"] == email)


@pytest.fixture
def shared(app, world, connected, sync_on, run_sync):
    """The user's activity with the colleague taking part, in both Google calendars."""
    sync_on("user", "colleague")
    activity_id = make_activity(app, world["user"], subject="Planning", participants=[COLLEAGUE], **times())
    run_sync("user")
    run_sync("colleague")
    return activity_id


def test_an_answer_given_in_the_portal_reaches_the_participants_google_copy(app, api, shared, run_sync,
                                                                             google_user, emulator):
    event_id = event_id_of(app, shared)
    colleague = google_user(COLLEAGUE)
    assert attendee_answer(colleague.get(event_id), COLLEAGUE) == "needsAction"

    assert api("colleague").post(f"/api/v1/activities/{shared}/response",
                                 json={"response": "tentative"}).status_code == 200
    # The owner's cycle reads the old answer from Google: it does not overwrite the one not sent yet.
    run_sync("user")
    assert answer_row(app, shared) == ("tentative", True)

    cycle = run_sync("colleague")
    assert cycle.status == "ok", cycle.message
    assert attendee_answer(colleague.get(event_id), COLLEAGUE) == "tentative"
    assert attendee_answer(google_user(EMAILS["user"]).get(event_id), COLLEAGUE) == "tentative"
    assert answer_row(app, shared) == ("tentative", False)
    # Sent once: the next cycles find it there and write nothing.
    run_sync("user")
    patches = emulator.stats()["requests"].get("calendar.events.patch", 0)
    run_sync("colleague")
    assert emulator.stats()["requests"].get("calendar.events.patch", 0) == patches
    assert answer_row(app, shared) == ("tentative", False)

    # And an answer given in Google afterwards comes back as before.
    copy = colleague.get(event_id)
    colleague.patch(event_id, attendees=[{**a, "responseStatus": "declined"} if a.get("self") else a
                                         for a in copy["attendees"]])
    run_sync("colleague")
    assert answer_row(app, shared) == ("declined", False)


def test_a_participant_cannot_change_the_owners_item_through_their_google_copy(app, shared, run_sync, google_user):
    event_id = event_id_of(app, shared)
    colleague = google_user(COLLEAGUE)
    with pytest.raises(HttpError) as refused:
        colleague.patch(event_id, summary="Hijacked")
    assert refused.value.resp.status == 403
    # What they may change on their copy (their own reminders) changes nothing of the item.
    colleague.patch(event_id, reminders={"useDefault": False, "overrides": [{"method": "popup", "minutes": 5}]})
    run_sync("colleague")
    run_sync("user")
    with app.app_context():
        assert db.session.get(Activity, shared).subject == "Planning"
    assert google_user(EMAILS["user"]).get(event_id)["summary"] == "Planning"


def test_participants_may_edit_becomes_guests_can_modify(app, world, shared, api, run_sync, google_user):
    event_id = event_id_of(app, shared)
    organizer = google_user(EMAILS["user"])
    assert not organizer.get(event_id).get("guestsCanModify")
    with app.app_context():
        db.session.get(Organization, world["acme"]).participants_can_edit = True
        db.session.commit()
    # From the item's next write on.
    assert api("user").patch(f"/api/v1/activities/{shared}", json={"location": "Room 2"}).status_code == 200
    run_sync("user")
    assert organizer.get(event_id)["guestsCanModify"] is True
    # Google then takes the participant's change on their copy, and it comes to the portal.
    google_user(COLLEAGUE).patch(event_id, summary="Planning (agreed)")
    run_sync("user")
    with app.app_context():
        assert db.session.get(Activity, shared).subject == "Planning (agreed)"

    new_id = make_activity(app, world["user"], subject="Review", participants=[COLLEAGUE], **times(hours=3))
    run_sync("user")
    assert organizer.get(event_id_of(app, new_id))["guestsCanModify"] is True


def test_switching_participants_may_edit_off_takes_guests_can_modify_back(app, world, shared, api, run_sync,
                                                                         google_user):
    event_id = event_id_of(app, shared)
    organizer = google_user(EMAILS["user"])
    organizer.patch(event_id, guestsCanModify=True)  # as if it had been on
    run_sync("user")
    assert api("user").patch(f"/api/v1/activities/{shared}", json={"location": "Room 3"}).status_code == 200
    run_sync("user")
    assert organizer.get(event_id).get("guestsCanModify") is False
    with pytest.raises(HttpError):
        google_user(COLLEAGUE).patch(event_id, summary="Hijacked")


def test_an_answer_is_sent_by_the_next_cycle_even_while_push_makes_the_user_rarely_due(app, api, shared, run_sync,
                                                                                         google_user):
    # With a healthy push channel a user is due only every safety poll (15 minutes). An answer is no
    # change Google notifies us of: giving it makes the participant due at once, and their sync state says
    # there is an answer to send (idle cycles do not look for answers otherwise).
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from portal.sync.models import CalendarSync

    later = datetime.now(UTC) + timedelta(minutes=15)
    with app.app_context():
        db.session.execute(update(CalendarSync).values(due_at=later, push_expires_at=later + timedelta(days=1)))
        db.session.commit()
    assert api("colleague").post(f"/api/v1/activities/{shared}/response",
                                 json={"response": "accepted"}).status_code == 200
    with app.app_context():
        state = db.session.get(CalendarSync, db.session.scalar(
            select(ActivityParticipant.user_id).where(ActivityParticipant.activity_id == shared)))
        assert state.due_at <= datetime.now(UTC) and state.answers_pending
    run_sync("colleague")
    assert attendee_answer(google_user(COLLEAGUE).get(event_id_of(app, shared)), COLLEAGUE) == "accepted"
    with app.app_context():
        assert not db.session.get(CalendarSync, state.user_id).answers_pending
