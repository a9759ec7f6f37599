"""The demo: seeding its organization, and serving the portal with an emulated Google to sync with."""

from __future__ import annotations

from datetime import datetime, time, timedelta

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import func, select
from werkzeug.serving import run_simple

from portal.accounts import add_organization, add_user, organization_named
from portal.activities import ValidationError, clean_activity, create_activity
from portal.changes import changed_by
from portal.extensions import db
from portal.models import Organization, Project, ProjectTask
from portal.sync.demo import DEMO_SYNC_USERS, connect_demo_organization, start_embedded_google
from portal.sync.scheduler import start_scheduler

DEMO_ORGANIZATION = "Demo Consulting"
DEMO_PASSWORD = "demo-password"
LOOPBACK = "127.0.0.1"
DEMO_USERS = (
    ("admin@demo.example", "Ada Admin", "admin"),
    ("anna@demo.example", "Anna de Vries", "user"),
    ("bram@demo.example", "Bram Jansen", "user"),
    ("helpdesk@demo.example", "Hugo Helpdesk", "helpdesk"),
)


@click.command("seed-demo")
@with_appcontext
@click.option("--if-empty", is_flag=True, help="Do nothing when any organization exists.")
def seed_demo(if_empty):
    """Create a demo organization with users, a project and a handful of activities."""
    if db.session.scalar(select(func.count(Organization.id))):
        if if_empty:
            click.echo("The database has data already; demo not seeded.")
            _print_logins()
            return
        if organization_named(DEMO_ORGANIZATION):
            raise click.ClickException("The demo organization exists already.")
    organization = add_organization(DEMO_ORGANIZATION)
    users = {email: add_user(organization, email, name, role, DEMO_PASSWORD) for email, name, role in DEMO_USERS}
    project = Project(organization=organization, name="Website relaunch",
                      tasks=[ProjectTask(name="Design"), ProjectTask(name="Build"), ProjectTask(name="Launch")])
    db.session.add(project)
    db.session.flush()

    anna, bram = users["anna@demo.example"], users["bram@demo.example"]
    zone = anna.zone
    today = datetime.now(zone).date()
    monday = today - timedelta(days=today.weekday())

    def at(day, hour, minute=0):
        return datetime.combine(day, time(hour, minute), tzinfo=zone).isoformat()

    items = [
        (anna, {"subject": "Weekly team meeting", "start": at(monday, 9), "end": at(monday, 10),
                "recurrence": ["RRULE:FREQ=WEEKLY;BYDAY=MO"], "activity_type": "Meeting",
                "participants": [bram.email], "location": "Room 1"}),
        (anna, {"subject": "Visit Acme B.V.", "start": at(monday + timedelta(days=2), 14),
                "end": at(monday + timedelta(days=2), 16), "activity_type": "Customer visit",
                "location": "Acme office, Utrecht"}),
        (bram, {"subject": "Design review", "start": at(monday + timedelta(days=3), 11),
                "end": at(monday + timedelta(days=3), 12), "project_task": project.tasks[0].id}),
        (bram, {"subject": "Dentist", "start": at(monday + timedelta(days=4), 8),
                "end": at(monday + timedelta(days=4), 9), "activity_type": "Personal"}),
        (anna, {"subject": "Company day", "all_day": True, "start": (monday + timedelta(days=4)).isoformat(),
                "end": (monday + timedelta(days=5)).isoformat(), "participants": [bram.email]}),
    ]
    for owner, values in items:
        try:
            data = clean_activity({"time_zone": owner.time_zone, **values}, organization=organization, actor=owner)
        except ValidationError as exc:  # the demo data is ours: a failure here is a bug worth seeing
            raise click.ClickException(f"Demo activity {values['subject']!r} is invalid: {exc}") from exc
        changed_by(db.session, owner.id)
        create_activity(organization, data)
    db.session.commit()
    click.echo(f"Seeded {DEMO_ORGANIZATION!r}.")
    _print_logins()


def _print_logins():
    click.echo(f"Demo logins (password {DEMO_PASSWORD!r}):")
    for email, name, role in DEMO_USERS:
        click.echo(f"  {role:<9} {email:<24} {name}")


@click.command("serve")
@with_appcontext
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--demo", is_flag=True,
              help="Start an embedded Google emulator on 127.0.0.1 and connect the demo organization to it "
                   "(also DEMO_GOOGLE=True). Never for production: the emulator's control API has no login.")
@click.option("--emulator-port", default=8765, show_default=True, type=int,
              help="Port of the embedded Google emulator (with --demo).")
def serve(host, port, demo, emulator_port):
    """Serve the portal with its sync scheduler (threaded, without the reloader).

    With --demo, an embedded Google emulator is started on loopback and the demo organization connected to
    it, its state kept in instance/, so the two-way sync can be seen at work.
    """
    app = current_app._get_current_object()
    emulator = None
    if demo or app.config.get("DEMO_GOOGLE"):
        # Pointing a portal configured for a real Google at the emulator would send its users' calendars
        # to a stand-in nobody logs into: refuse rather than guess which one was meant.
        if app.config.get("GOOGLE_API_ENDPOINT") or app.config.get("GOOGLE_TOKEN_URI"):
            raise click.ClickException("The demo's emulated Google cannot start: GOOGLE_API_ENDPOINT or "
                                       "GOOGLE_TOKEN_URI is configured (a real Google). Unset them for a demo.")
        # Loopback whatever the portal's host: the emulator's control API has no authentication.
        emulator = start_embedded_google(app, LOOPBACK, emulator_port)
        app.config["DEMO_GOOGLE"] = True
        # The emulator delivers push notifications to this very server, over loopback too.
        app.config["PUBLIC_BASE_URL"] = app.config["PUBLIC_BASE_URL"] or f"http://{LOOPBACK}:{port}"
        for line in connect_demo_organization(emulator, DEMO_ORGANIZATION, [email for email, *_ in DEMO_USERS]):
            click.echo(line)
    if app.config.get("SCHEDULER_ENABLED"):
        start_scheduler(app)
    click.echo(f"Portal:   http://{host}:{port}/")
    if emulator is not None:
        kept = f"state kept in {emulator.app.store.path}" if emulator.app.store.path else "state in memory"
        click.echo(f"Emulated Google: {emulator.base_url}/ (a local emulator, not Google; {kept})")
        for email in DEMO_SYNC_USERS:
            click.echo(f"  {email}'s Google calendar: {emulator.base_url}/emulator/ui/{email}")
    _print_logins()
    try:
        run_simple(host, port, app, threaded=True, use_reloader=False)
    finally:
        if emulator is not None:
            emulator.stop()
