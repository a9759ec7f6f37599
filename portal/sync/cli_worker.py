"""`flask --app portal worker`: the sync scheduler alone, without the web server.

For deployments that separate web and sync: web processes run with `PORTAL_SCHEDULER_ENABLED=false`,
any number of workers share the users through the database (PostgreSQL for more than one process).
"""

from __future__ import annotations

import signal
import threading

import click
from flask import current_app
from flask.cli import with_appcontext


@click.command("worker")
@with_appcontext
@click.option("--threads", type=int, default=None, help="Cycles at once (default: SYNC_WORKER_THREADS).")
@click.option("--id", "worker_id", default=None, help="Name in leases and logs (default: host:pid).")
def worker(threads, worker_id):
    """Run the Google Calendar sync scheduler until stopped (SIGTERM or Ctrl+C)."""
    from portal.sync.scheduler import scheduling

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
