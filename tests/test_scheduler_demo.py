"""`make run`'s Google side: the embedded emulator and the demo organization connected to it."""

from __future__ import annotations

import requests
from sqlalchemy import select

from portal.extensions import db
from portal.integration import integration_for
from portal.models import Organization, User
from portal.sync.demo import DEMO_SYNC_USERS, connect_demo_organization, start_embedded_google
from portal.sync.models import CalendarSync


def test_the_demo_organization_is_connected_to_the_embedded_emulator_once(app, runner, tmp_path):
    from portal.cli.demo import DEMO_ORGANIZATION, DEMO_USERS
    from portal.sync.engine import run_user_cycle
    from tests.conftest import GoogleUser

    assert runner.invoke(args=["seed-demo"]).exit_code == 0
    app.config["GOOGLE_EMULATOR_STATE"] = str(tmp_path / "emulator.sqlite")
    emulator = start_embedded_google(app, "127.0.0.1", 0)
    try:
        assert app.config["GOOGLE_API_ENDPOINT"] == emulator.api_endpoint
        emails = [email for email, *_ in DEMO_USERS]
        with app.app_context():
            [done] = connect_demo_organization(emulator, DEMO_ORGANIZATION, emails)
            assert "integration on" in done
            row = integration_for(db.session.scalar(select(Organization)))
            assert row.enabled and row.sync_allowed and row.key_kind == "p12"
            synced = db.session.scalars(select(User.email).join(CalendarSync, CalendarSync.user_id == User.id)
                                        .where(CalendarSync.enabled.is_(True))).all()
            assert sorted(synced) == sorted(DEMO_SYNC_USERS)
            assert set(emulator.state.users) == set(emails)

            anna = db.session.scalar(select(User).where(User.email == "anna@demo.example"))
            assert run_user_cycle(anna.id).status == "ok"
        assert "Weekly team meeting" in {e["summary"] for e in GoogleUser(emulator, "anna@demo.example").live()}
        # The person's page on the emulator shows the week's events, marked as the emulated side.
        html = requests.get(f"{emulator.base_url}/emulator/ui/anna@demo.example", timeout=5).text
        assert "Emulated Google Calendar" in html and "Weekly team meeting" in html

        # A second start (the state was kept) changes nothing, so users' own switches survive restarts.
        with app.app_context():
            CalendarSync.for_user(db.session.scalar(select(User).where(User.email == "bram@demo.example"))) \
                .switch(False)
            db.session.commit()
            [kept] = connect_demo_organization(emulator, DEMO_ORGANIZATION, emails)
            assert "kept" in kept
            assert not db.session.get(CalendarSync, db.session.scalar(
                select(User.id).where(User.email == "bram@demo.example"))).enabled
    finally:
        emulator.stop()


def test_a_lost_emulator_state_is_set_up_again(app, runner):
    from portal.cli.demo import DEMO_ORGANIZATION

    assert runner.invoke(args=["seed-demo"]).exit_code == 0
    app.config["GOOGLE_EMULATOR_STATE"] = ""
    first = start_embedded_google(app, "127.0.0.1", 0)
    with app.app_context():
        connect_demo_organization(first, DEMO_ORGANIZATION, ["admin@demo.example", "anna@demo.example"])
    first.stop()
    second = start_embedded_google(app, "127.0.0.1", 0)  # in memory: it knows nothing of the first
    try:
        with app.app_context():
            [done] = connect_demo_organization(second, DEMO_ORGANIZATION, ["admin@demo.example"])
            assert "integration on" in done
    finally:
        second.stop()


def test_without_the_demo_organization_nothing_is_connected(app):
    emulator = start_embedded_google(app, "127.0.0.1", 0)
    try:
        with app.app_context():
            [note] = connect_demo_organization(emulator, "Demo Consulting", ["anna@demo.example"])
        assert note.startswith("No organization")
    finally:
        emulator.stop()
