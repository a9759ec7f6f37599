"""The demo's Google side: an embedded emulator, and the demo organization connected to it.

`flask --app portal serve --demo` (what `make run` starts; or `DEMO_GOOGLE = True`) uses this: a newcomer
sees the two-way sync at work without a Workspace account. Only that explicit switch starts it, always on
loopback: its control API has no authentication, and an unset `GOOGLE_API_ENDPOINT` means the real Google.
Everything goes the way an admin's set-up would: the emulator mints a service account and its P12 key,
grants domain-wide delegation for the portal's scopes, and the key is uploaded and encrypted through
`portal.integration`, then the integration is switched on after a connection test.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path

from flask import Flask
from sqlalchemy import select

from portal import create_owner_only_file
from portal.emulator.server import EmulatorServer
from portal.extensions import db
from portal.integration import integration_for, save_account, set_enabled, upload_key
from portal.models import Organization, User
from portal.sync.google import GOOGLE_SCOPES
from portal.sync.models import CalendarSync

log = logging.getLogger(__name__)

STATE_FILE = "google-emulator.sqlite"
DEMO_SYNC_USERS = ("anna@demo.example", "bram@demo.example")


def start_embedded_google(app: Flask, host: str, port: int):
    """Start the emulator on host:port and point the app at it; returns the running EmulatorServer.

    Its state is kept in `GOOGLE_EMULATOR_STATE` (default: instance/google-emulator.sqlite; empty: memory).
    """
    state_path = app.config.get("GOOGLE_EMULATOR_STATE", str(Path(app.instance_path) / STATE_FILE)) or None
    if state_path:  # it holds the emulated service accounts' private keys
        create_owner_only_file(state_path)
    # The demo's portal listens on plain HTTP on this machine, which Google itself would refuse.
    server = EmulatorServer(host=host, port=port, state_path=state_path, allow_http_webhooks=True).start()
    app.config.update(GOOGLE_TOKEN_URI=server.token_uri, GOOGLE_API_ENDPOINT=server.api_endpoint,
                      GOOGLE_BATCH_URI=server.batch_uri)
    return server


def connect_demo_organization(server, organization_name: str, emails: list[str]) -> list[str]:
    """Make the organization's users Workspace users of the emulator and connect the organization.

    Idempotent: a connection the emulator still knows (its state persisted) is kept, so restarts keep
    the users' own choices; otherwise a new service account is set up and the demo users' sync switched
    on. Returns what was done, for the console. Call inside an app context.
    """
    organization = db.session.scalar(select(Organization).where(Organization.name == organization_name))
    if organization is None:
        return [f"No organization {organization_name!r}: nothing connected to the emulated Google."]
    users = {u.email: u for u in organization.users}
    for email in emails:
        if email in users:
            server.add_user(email, time_zone=users[email].time_zone)
    row = integration_for(organization)
    known = server.state.service_accounts.get(row.service_account_email)
    if row.enabled and row.sync_allowed and known is not None and row.client_id in server.state.delegations:
        return [f"{organization.name} is connected to the emulated Google (kept from the last run)."]

    account = server.add_service_account()
    server.delegate(account["client_id"], GOOGLE_SCOPES)
    admin = db.session.scalar(select(User).where(User.organization_id == organization.id, User.role == "admin")
                              .order_by(User.id))
    save_account(row, admin, account["email"], account["client_id"])
    upload_key(row, admin, base64.b64decode(account["p12_base64"]), account["password"])
    outcome = set_enabled(row, admin, True, admin.email if admin else emails[0])
    if outcome is not None and not outcome.ok:
        return [f"Connecting {organization.name} failed: {outcome.error.cause}"]
    switched = []
    for email in DEMO_SYNC_USERS:
        if email in users:
            CalendarSync.for_user(users[email]).switch(True)
            switched.append(email)
    db.session.commit()
    return [f"{organization.name} connected: service account {account['email']}, delegation granted, "
            f"key uploaded, integration on; calendar sync on for {', '.join(switched) or 'nobody'}."]
