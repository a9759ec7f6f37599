"""`flask --app portal configure-google`: the settings page's Google set-up, for operators."""

from __future__ import annotations

import click
from flask.cli import with_appcontext
from sqlalchemy import select

from portal.cli.accounts import chosen_organization
from portal.extensions import db
from portal.integration import (
    KEY_FILE_LIMIT,
    SettingsError,
    TestOutcome,
    delegation_scopes,
    integration_for,
    save_account,
    save_activity_types,
    set_enabled,
    test_connection,
    upload_key,
)
from portal.models import User

FIELD_LABELS = {
    "service_account_email": "--service-account-email",
    "client_id": "--client-id",
    "key_file": "--key-file",
    "key_password": "--key-password",
    "activity_types": "--sync-types",
    "test_email": "--test-email",
    "enabled": "--enable",
}


def _refuse(exc: SettingsError) -> click.ClickException:
    lines = [f"{FIELD_LABELS.get(name, name)}: {message}" for name, message in exc.errors.items()]
    return click.ClickException("Nothing was changed.\n" + "\n".join(lines))


def _test_failed(outcome: TestOutcome, enabling: bool) -> click.ClickException:
    error = outcome.error
    head = f"Connection test as {outcome.email} failed"
    head += "; the integration stays off." if enabling else "."
    return click.ClickException(f"{head}\nCause: {error.cause}\nFix: {error.fix}\n(code {error.code})")


@click.command("configure-google")
@click.option("--organization", "organization_name", help="May be left out when there is one organization.")
@click.option("--service-account-email", required=True, help="The service account's e-mail address.")
@click.option("--key-file", required=True, type=click.File("rb"), help="The .p12 or .json key Google gave you.")
@click.option("--key-password", default=None, envvar="PORTAL_GOOGLE_KEY_PASSWORD",
              help="The P12 key's password (Google's default: notasecret); or set PORTAL_GOOGLE_KEY_PASSWORD, "
                   "which keeps it out of the shell history.")
@click.option("--client-id", default=None, help="The service account's numeric client ID (JSON keys carry it).")
@click.option("--sync-types", default=None, help='Activity types synced to Google, e.g. "Meeting,Customer visit".')
@click.option("--test-email", default=None, help="Whose calendar the connection test reads (default: an admin).")
@click.option("--enable", is_flag=True, help="Switch the integration on once the connection test passes.")
@with_appcontext
def configure_google(organization_name, service_account_email, key_file, key_password, client_id, sync_types,
                     test_email, enable):
    """Set up an organization's Google Calendar integration and test the connection.

    Validates like the settings page; with any invalid value nothing is changed. Exits non-zero with the
    cause and the fix when the connection test fails.
    """
    organization = chosen_organization(organization_name)
    row = integration_for(organization)
    data = key_file.read(KEY_FILE_LIMIT + 1)
    try:
        key = upload_key(row, None, data, key_password, commit=False)
        if key.kind == "json" and key.client_email != service_account_email.strip().lower():
            raise SettingsError({"key_file": f"This JSON key belongs to {key.client_email}, not to "
                                             f"{service_account_email.strip()}."})
        save_account(row, None, service_account_email, client_id if client_id is not None else row.client_id,
                     commit=False)
        if sync_types is not None:
            names = [name.strip() for name in sync_types.split(",") if name.strip()]
            save_activity_types(organization, None, names, commit=False)
    except SettingsError as exc:
        db.session.rollback()
        raise _refuse(exc) from None
    db.session.commit()
    click.echo(f"{organization.name}: service account {row.service_account_email}, "
               f"{'JSON' if key.kind == 'json' else 'P12'} key {key.key_id} (fingerprint {key.fingerprint})"
               + (f", certificate valid until {key.valid_until:%Y-%m-%d}" if key.valid_until else "") + ".")
    synced = [t.name for t in organization.activity_types if t.sync_to_google]
    click.echo(f"Activity types synced to Google: {', '.join(synced) or 'none'}.")
    if row.client_id:
        click.echo(f"Domain-wide delegation: client ID {row.client_id}, scopes "
                   f"{delegation_scopes()}")

    email = test_email or _an_admin_email(organization)
    try:
        if enable:
            outcome = set_enabled(row, None, True, email)
        else:
            outcome = test_connection(row, None, email)
    except SettingsError as exc:
        raise _refuse(exc) from None
    if not outcome.ok:
        raise _test_failed(outcome, enable)
    click.echo(f"Connection test passed as {outcome.email}: calendar “{outcome.calendar.summary}” was read.")
    click.echo("The integration is on." if row.enabled else "The integration is off (use --enable to switch it on).")


def _an_admin_email(organization) -> str:
    admin = db.session.scalar(
        select(User).where(User.organization_id == organization.id, User.role == "admin", User.active.is_(True))
        .order_by(User.id)
    )
    if admin is None:
        raise click.ClickException(f"{organization.name} has no admin whose calendar the connection test could "
                                   "read; name one with --test-email.")
    return admin.email
