"""Two-way Google Calendar synchronization.

``core`` and ``recurrence`` are pure: they decide, they never do I/O. Adapters for Google
and for the database live beside them and carry out the decisions. `init_app` wires the sync into the app.
"""

from __future__ import annotations

import threading

from flask import Flask


def init_app(app: Flask) -> None:
    """Wire the sync into the app: its runtime state, the triggers, the web hook, the token store the
    workers share and the commands `flask sync` and `flask worker`.

    The sync's settings are in the app's one table of defaults, `portal.DEFAULTS`.
    """
    # Imported here, not at the top of this package: `portal.integration` imports `portal.sync.google`,
    # which runs this file first, and the wiring imports `portal.integration` (through `channels`).
    from portal.routes import webhooks
    from portal.sync import runtime, status, triggers
    from portal.sync.cli import sync_command, worker_command
    from portal.sync.google import TOKENS
    from portal.sync.scheduler import SyncScheduler
    from portal.sync.token_store import STORE

    TOKENS.store = STORE  # the process's token cache shares what it obtains with the other workers

    state = app.extensions[runtime.EXTENSION] = runtime.Scheduling(app, SyncScheduler)
    triggers.install(app)
    app.register_blueprint(webhooks.bp)
    app.add_template_global(status.update_words, "sync_updates")
    app.cli.add_command(sync_command)
    app.cli.add_command(worker_command)
    _start_on_first_request(app, state)


def _start_on_first_request(app: Flask, state) -> None:
    """The web process's scheduler starts with the first request, not in create_app: every `flask`
    command builds the app too, and only a serving process should sync. Under the reloader only the
    child serves (WERKZEUG_RUN_MAIN), so the watching parent never starts one."""
    started = threading.Event()

    @app.before_request
    def start_scheduler_once():
        if started.is_set():
            return
        started.set()
        if app.config.get("SCHEDULER_ENABLED"):
            state.start()
