"""The sync's commands.

- `flask --app portal sync`: run a cycle now, for one user or everyone (an operator's action).
- `flask --app portal worker`: the sync scheduler alone, without the web server. For deployments that
  separate web and sync: web processes run with `PORTAL_SCHEDULER_ENABLED=false`, any number of workers
  share the users through the database (PostgreSQL for more than one process).
"""

from __future__ import annotations

import signal
import threading

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import select

from portal.extensions import db
from portal.models import Organization, User, normalize_email
from portal.sync.engine import push_pending, run_user_cycle
from portal.sync.models import CalendarSync
from portal.sync.runtime import scheduling


@click.command("sync")
@click.option("--user", "email", help="E-mail of the user to sync.")
@click.option("--all", "everyone", is_flag=True, help="Every user with calendar sync on.")
@click.option("--organization", "organization_name", help="Limit to one organization.")
@with_appcontext
def sync_command(email, everyone, organization_name):
    """Run a sync cycle now, logged in or not, and print a one-line summary per user."""
    if bool(email) == bool(everyone):
        raise click.UsageError("Give --user EMAIL or --all.")
    query = select(User).join(CalendarSync, CalendarSync.user_id == User.id).where(CalendarSync.enabled.is_(True))
    if organization_name:
        query = query.join(Organization).where(Organization.name == organization_name)
    if email:
        query = query.where(User.email == normalize_email(email))
    users = db.session.scalars(query.order_by(User.organization_id, User.email)).all()
    if email and not users:
        raise click.ClickException(f"{email} has no calendar sync switched on (or does not exist).")
    failed = False
    for user in users:
        cycle = run_user_cycle(user.id, trigger="cli")
        if cycle is None:
            click.echo(f"{user.email}: skipped (another worker is syncing this user right now)")
            continue
        failed |= cycle.status == "failed"
        click.echo(f"{user.email}: {cycle.summary()}")
    if everyone:
        organizations = {u.organization_id for u in users}
        for organization_id in sorted(organizations):
            cycle = push_pending(organization_id, trigger="cli")
            if cycle is not None and (cycle.pushed or cycle.errors):
                click.echo(f"organization {organization_id} outbox: {cycle.summary()}")
    if failed:
        raise SystemExit(1)


@click.command("worker")
@with_appcontext
@click.option("--threads", type=int, default=None, help="Cycles at once (default: SYNC_WORKER_THREADS).")
@click.option("--id", "worker_id", default=None, help="Name in leases and logs (default: host:pid).")
def worker_command(threads, worker_id):
    """Run the Google Calendar sync scheduler until stopped (SIGTERM or Ctrl+C)."""
    app = current_app._get_current_object()
    if threads is not None:
        app.config["SYNC_WORKER_THREADS"] = max(1, threads)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    state = scheduling(app)
    scheduler = state.start(worker_id=worker_id)
    threads = f"threads: {scheduler.threads}" + (", SQLite: one job at a time" if scheduler.serial else "")
    click.echo(f"Sync worker {scheduler.worker_id} ({threads}): a cycle every "
               f"{app.config['SYNC_INTERVAL_SECONDS']} s per logged-in user. Stop with Ctrl+C.")
    stop.wait()
    click.echo("Stopping: letting running cycles finish.")
    state.stop(wait=True)
