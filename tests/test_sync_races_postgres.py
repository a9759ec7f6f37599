"""Races between workers on PostgreSQL, where several processes sync one organization at once."""

import threading

import pytest

from portal import create_app
from portal.extensions import db
from tests.test_sync_faults import race_participant_cycle_and_owner_push

pytestmark = pytest.mark.postgres


@pytest.fixture
def app(postgres_url):
    """The usual test app, on a fresh PostgreSQL database (the fixtures built on `app` follow)."""
    from sqlalchemy import create_engine, text

    from tests.conftest import FAST_HASH, _postgres_database

    url, name = _postgres_database(postgres_url)
    app = create_app({"TESTING": True, "SECRET_KEY": "test-secret", "WTF_CSRF_ENABLED": False,
                      "ENCRYPTION_KEY": "hYDDs2tKQ-6jSuX4rrNQNlQhX3DOXVkIOCMUDldOZFc=",
                      "SQLALCHEMY_DATABASE_URI": url, "PASSWORD_HASH_METHOD": FAST_HASH})
    with app.app_context():
        db.create_all()
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_a_participants_cycle_and_the_owners_push_racing_on_one_activity(app, world, connected, sync_on, run_sync,
                                                                          google_user, api):
    race_participant_cycle_and_owner_push(app, world, sync_on, run_sync, google_user, api)


def test_a_portal_edit_committed_while_a_cycle_writes_the_activity_is_not_overwritten(
        app, world, connected, sync_on, run_sync, google_user, api):
    # Found by the chaos run on PostgreSQL (seeds 109 and 111, with a real worker process). The cycle checked
    # the activity's version, then a person's edit committed, then the cycle's update of the same row wrote
    # Google's change over it: the person's edit survived only in fields the cycle did not touch, the Google
    # edit was agreed on as if nothing had happened, and the next push sent the person's edit over Google's
    # without a conflict in the journal. Every write of an activity is now conditional on its version.
    from sqlalchemy import event

    from portal.models import Activity
    from tests.helpers import make_activity
    from tests.test_sync_faults import at

    sync_on("user")
    activity_id = make_activity(app, world["user"], subject="Plan", start=at(1), end=at(1, 1))
    run_sync("user")
    owner = google_user("user@acme.test")
    [ev] = owner.live()
    owner.patch(ev["id"], description="From Google")
    fired = []

    def person_edits_first(mapper, connection, target):
        if fired or target.id != activity_id:
            return
        fired.append(True)
        answers = []  # the person's request runs beside the cycle: its own thread, app context and connection
        person = threading.Thread(target=lambda: answers.append(api("user").patch(
            f"/api/v1/activities/{activity_id}", json={"description": "From the portal"})))
        person.start()
        person.join(30)
        assert answers and answers[0].status_code == 200, answers

    event.listen(Activity, "before_update", person_edits_first)
    try:
        run_sync("user")
    finally:
        event.remove(Activity, "before_update", person_edits_first)
    assert fired
    run_sync("user")
    run_sync("user")
    from portal.sync.models import SyncJournalEntry

    with app.app_context():
        activity = db.session.get(Activity, activity_id)
        conflicts = db.session.query(SyncJournalEntry).filter_by(activity_id=activity_id, kind="conflict").all()
        final = activity.description
    assert owner.get(ev["id"]).get("description", "") == final
    losing = {"From Google", "From the portal"} - {final}
    assert final in ("From Google", "From the portal")
    assert [c.before for c in conflicts if c.field == "description"] == sorted(losing)


def test_a_person_saving_an_activity_the_sync_changed_meanwhile_gets_a_clear_conflict(app, world, api):
    # The other way round: the sync (here a colleague's session) commits first; the person's save stores
    # nothing and says so, instead of overwriting unseen or answering 500.
    from sqlalchemy import event

    from portal.models import Activity
    from tests.helpers import make_activity
    from tests.test_sync_faults import at

    activity_id = make_activity(app, world["user"], subject="Plan", start=at(1), end=at(1, 1))
    fired = []

    def other_writer_first(mapper, connection, target):
        if fired or target.id != activity_id:
            return
        fired.append(True)

        def write():
            with app.app_context():
                other = db.session.get(Activity, activity_id)
                other.description = "Written meanwhile"
                other.touch()
                db.session.commit()

        writer = threading.Thread(target=write)
        writer.start()
        writer.join(30)

    event.listen(Activity, "before_update", other_writer_first)
    try:
        answer = api("user").patch(f"/api/v1/activities/{activity_id}", json={"subject": "Mine"})
    finally:
        event.remove(Activity, "before_update", other_writer_first)
    assert fired
    assert answer.status_code == 409 and "changed while you were saving" in answer.get_json()["error"]
    with app.app_context():
        stored = db.session.get(Activity, activity_id)
        assert (stored.subject, stored.description) == ("Plan", "Written meanwhile")
