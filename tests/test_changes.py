"""Change tracking: every committed create, update and delete leaves an outbox row, in the same transaction."""

from sqlalchemy import select

from portal.extensions import db
from portal.models import Activity, ChangeRecord
from tests.helpers import make_activity


def records(app):
    with app.app_context():
        return [(r.activity_id, r.action, r.origin, r.changed_by_id)
                for r in db.session.scalars(select(ChangeRecord).order_by(ChangeRecord.id))]


def test_page_create_update_delete_are_recorded(app, login_as, world):
    client = login_as("user")
    form = {"subject": "A", "start_date": "2026-03-02", "start_time": "09:00", "end_date": "2026-03-02",
            "end_time": "10:00", "time_zone": "UTC"}
    client.post("/calendar/activities", data=form)
    client.post("/calendar/activities/1", data={**form, "subject": "B"})
    client.post("/calendar/activities/1/delete")
    assert records(app) == [(1, "create", "portal", world["user"]), (1, "update", "portal", world["user"]),
                            (1, "delete", "portal", world["user"])]


def test_api_changes_are_recorded(app, api, world):
    client = api("user")
    created = client.post("/api/v1/activities", json={"subject": "A", "start": "2026-03-02T09:00:00Z",
                                                       "end": "2026-03-02T10:00:00Z"}).get_json()
    client.patch(f"/api/v1/activities/{created['id']}", json={"participants": ["colleague@acme.test"]})
    client.delete(f"/api/v1/activities/{created['id']}")
    assert [r[1] for r in records(app)] == ["create", "update", "delete"]


def test_participant_and_exception_changes_count_as_activity_changes(app, world):
    from portal.models import RecurrenceException, User

    activity_id = make_activity(app, world["user"], recurrence=["RRULE:FREQ=DAILY;COUNT=3"])
    with app.app_context():
        activity = db.session.get(Activity, activity_id)
        activity.set_participants([db.session.get(User, world["colleague"])])
        db.session.commit()
        db.session.add(RecurrenceException(activity_id=activity_id, original_start="20260303T080000Z",
                                           cancelled=True))
        db.session.commit()
        assert db.session.get(Activity, activity_id).version == 3
    assert [r[1] for r in records(app)] == ["create", "update", "update"]


def test_unchanged_save_records_nothing(app, world):
    activity_id = make_activity(app, world["user"])
    with app.app_context():
        activity = db.session.get(Activity, activity_id)
        activity.subject = activity.subject  # same value: not a change
        db.session.commit()
    assert len(records(app)) == 1


def test_rolled_back_change_leaves_no_record(app, world):
    activity_id = make_activity(app, world["user"])
    with app.app_context():
        activity = db.session.get(Activity, activity_id)
        activity.subject = "Never saved"
        db.session.flush()
        db.session.rollback()
        assert db.session.get(Activity, activity_id).subject == "Planning"
    assert len(records(app)) == 1


def test_records_stay_pending_until_processed(app, world):
    make_activity(app, world["user"])
    with app.app_context():
        pending = db.session.scalars(select(ChangeRecord).where(ChangeRecord.processed_at.is_(None))).all()
        assert len(pending) == 1 and pending[0].organization_id == world["acme"]


def test_changes_from_the_sync_carry_their_origin(app, world):
    from portal.changes import changed_by

    activity_id = make_activity(app, world["user"])
    with app.app_context():
        changed_by(db.session, None, origin="google")
        db.session.get(Activity, activity_id).location = "From Google"
        db.session.commit()
        activity = db.session.get(Activity, activity_id)
        activity.location = "From the portal"
        db.session.commit()  # the origin was forgotten at the previous commit
    assert [r[2] for r in records(app)] == ["portal", "google", "portal"]
