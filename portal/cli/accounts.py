"""Organizations and users, for operators."""

from __future__ import annotations

import sys

import click
from flask.cli import with_appcontext

from portal.accounts import (
    AccountError,
    add_organization,
    add_user,
    check_new_password,
    find_organization,
    is_email_address,
    organization_named,
    rename_user,
)
from portal.activities import is_time_zone
from portal.extensions import db
from portal.models import ROLES, Organization, normalize_email


def chosen_organization(name: str | None) -> Organization:
    """The organization a command's `--organization` names, or the only one; a refusal ends the command."""
    try:
        return find_organization(name)
    except AccountError as exc:
        raise click.ClickException(str(exc)) from None


@click.command("create-organization")
@with_appcontext
@click.argument("name")
def create_organization(name):
    """Create an organization with the standard activity types."""
    name = name.strip()
    if not name:
        raise click.ClickException("The name may not be empty.")
    if organization_named(name):
        raise click.ClickException(f"An organization named {name!r} exists already.")
    add_organization(name)
    db.session.commit()
    click.echo(f"Created organization {name!r} with activity types Internal (default), Meeting, "
               "Customer visit, Personal (personal).")


@click.command("create-user")
@with_appcontext
@click.argument("email")
@click.option("--name", required=True)
@click.option("--role", type=click.Choice(ROLES), default="user", show_default=True)
@click.option("--password-stdin", is_flag=True,
              help="Read the password from the first line of standard input (for scripts) instead of asking.")
@click.option("--organization", "organization_name")
@click.option("--time-zone", default="Europe/Amsterdam", show_default=True)
def create_user(email, name, role, password_stdin, organization_name, time_zone):
    """Create a user in an organization. The password is asked for (twice, not shown), never taken from the
    command line, where other users of the machine and the shell's history would see it."""
    organization = chosen_organization(organization_name)
    email = normalize_email(email)
    if not is_email_address(email):
        raise click.ClickException(f"{email!r} is not an e-mail address.")
    if not is_time_zone(time_zone):
        raise click.ClickException(f"Unknown time zone {time_zone!r}.")
    if organization.user_by_email(email):
        raise click.ClickException(f"{email} is already a user of {organization.name}.")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        check_new_password(password, email)
    except AccountError as exc:
        raise click.ClickException(str(exc)) from None
    add_user(organization, email, name, role, password, time_zone)
    db.session.commit()
    click.echo(f"Created {role} {email} in {organization.name}.")


@click.command("rename-user")
@with_appcontext
@click.argument("email")
@click.argument("new_email")
@click.option("--organization", "organization_name")
def rename_user_command(email, new_email, organization_name):
    """Give a user a new e-mail address (as the Google Workspace admin renamed them); the sync follows."""
    organization = chosen_organization(organization_name)
    user = organization.user_by_email(normalize_email(email))
    if user is None:
        raise click.ClickException(f"No user {email} in {organization.name}.")
    try:
        rename_user(user, new_email)
    except AccountError as exc:
        raise click.ClickException(str(exc)) from None
    db.session.commit()
    click.echo(f"{email} is now {user.email}.")
