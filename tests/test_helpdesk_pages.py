"""The helpdesk pages as helpdesk staff read them: words instead of codes, times in their own zone with the zone
named, a user's silence explained, and never an activity's contents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from portal.extensions import db
from portal.models import GoogleIntegration, Organization, User
from portal.sync.models import CalendarSync, SyncCycle, SyncJournalEntry


def _paused_integration(app, organization_id, code="delegation_missing"):
    from portal.sync.google import error_for

    with app.app_context():
        row = GoogleIntegration.for_organization(db.session.get(Organization, organization_id))
        row.enabled = True
        error = error_for(code, client_id="104857600000000000099")
        row.record_error(error.code, error.cause, error.fix)
        db.session.commit()


def test_index_says_why_an_organization_is_paused_in_words(app, world, login_as):
    _paused_integration(app, world["acme"])
    page = login_as("helpdesk").get("/helpdesk/").get_data(as_text=True)
    assert "Paused: delegation_missing" not in page
    assert "Paused — the service account is not allowed to act for users (delegation missing)" in page


def test_helpdesk_times_are_in_the_helpdesk_users_zone_with_the_zone_named(app, world, login_as):
    with app.app_context():
        helpdesk = db.session.get(User, world["helpdesk"])
        helpdesk.time_zone = "America/New_York"
        db.session.add(SyncCycle(organization_id=world["acme"], user_id=world["user"], trigger="test",
                                 started_at=datetime.now(UTC) - timedelta(hours=1),
                                 status="ok"))
        db.session.commit()
        started = db.session.scalar(db.select(SyncCycle.started_at))
    local = started.replace(tzinfo=UTC).astimezone(__import__("zoneinfo").ZoneInfo("America/New_York"))
    page = login_as("helpdesk").get(f"/helpdesk/organizations/{world['acme']}").get_data(as_text=True)
    assert local.strftime("%H:%M") in page
    assert local.tzname() in page  # EST or EDT
    assert "UTC" not in page


def _working_integration(app, organization_id):
    """An integration that is on and set up (its key is never used here: no cycle runs)."""
    with app.app_context():
        row = GoogleIntegration.for_organization(db.session.get(Organization, organization_id))
        row.enabled, row.service_account_email, row.key_ciphertext = True, "sync@acme.test", "unused"
        db.session.commit()


def test_a_user_who_has_not_logged_in_since_switching_on_is_explained(app, world, login_as):
    _working_integration(app, world["acme"])
    with app.app_context():
        row = CalendarSync.for_user(db.session.get(User, world["user"]))
        row.switch(True)
        db.session.commit()
    page = login_as("helpdesk").get(f"/helpdesk/organizations/{world['acme']}").get_data(as_text=True)
    assert ">pending<" not in page
    assert "Waiting for log-in" in page
    assert "starts again at the next log-in" in page


def test_item_errors_name_the_activity_by_number_never_by_subject(app, world, login_as):
    from tests.helpers import make_activity

    activity_id = make_activity(app, world["user"], subject="Zanzibar merger talks")
    with app.app_context():
        # An error text that quotes the subject, as a careless message might: the helpdesk must not read it.
        db.session.add(SyncJournalEntry(organization_id=world["acme"], activity_id=activity_id, kind="error",
                                        message="Google refused the event: 'Zanzibar merger talks' is invalid",
                                        created_at=datetime.now(UTC)))
        db.session.commit()
    client = login_as("helpdesk")
    for address in ("/helpdesk/", f"/helpdesk/organizations/{world['acme']}"):
        page = client.get(address).get_data(as_text=True)
        assert "Zanzibar" not in page, address
    page = client.get(f"/helpdesk/organizations/{world['acme']}").get_data(as_text=True)
    assert f"activity #{activity_id}" in page
