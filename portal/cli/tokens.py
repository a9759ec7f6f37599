"""API tokens, for operators: create (the secret printed once), list (never the secret), revoke."""

from __future__ import annotations

import click
from flask.cli import with_appcontext
from sqlalchemy import select

from portal.cli.accounts import chosen_organization
from portal.extensions import db
from portal.models import User, normalize_email
from portal.signin_models import ApiToken, TokenError


def _the_user(email: str, organization_name: str | None) -> User:
    email = normalize_email(email)
    if organization_name:
        users = [chosen_organization(organization_name).user_by_email(email)]
    else:
        users = db.session.scalars(select(User).where(User.email == email)).all()
    users = [u for u in users if u is not None]
    if not users:
        raise click.ClickException(f"No user {email}.")
    if len(users) > 1:
        raise click.ClickException(f"{email} exists in several organizations; name one with --organization.")
    return users[0]


@click.command("create-api-token")
@with_appcontext
@click.argument("email")
@click.option("--organization", "organization_name")
@click.option("--name", default="command line", show_default=True, help="What the token is for.")
@click.option("--expires-days", type=int, default=None,
              help="Days the token is valid (default API_TOKEN_DAYS, at most API_TOKEN_MAX_DAYS).")
def create_api_token(email, organization_name, name, expires_days):
    """Create an API token for a user and print it (it is shown only this once)."""
    user = _the_user(email, organization_name)
    try:
        row, token = ApiToken.issue(user, name=name, expires_days=expires_days)
    except TokenError as exc:
        raise click.ClickException(str(exc)) from None
    db.session.add(row)
    db.session.commit()
    click.echo(token)  # alone on the output, for scripts; list-api-tokens shows the rest


@click.command("list-api-tokens")
@with_appcontext
@click.argument("email", required=False)
@click.option("--organization", "organization_name")
def list_api_tokens(email, organization_name):
    """List API tokens (all, or one user's): id, user, name, dates and state; never the token itself."""
    query = select(ApiToken).join(User, User.id == ApiToken.user_id).order_by(ApiToken.id)
    if email:
        query = query.where(ApiToken.user_id == _the_user(email, organization_name).id)
    rows = db.session.scalars(query).all()
    if not rows:
        click.echo("No API tokens.")
    for row in rows:
        last = f"{row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "never"
        expires = f"{row.expires_at:%Y-%m-%d}" if row.expires_at else "never"
        click.echo(f"{row.id}\t{row.user.email}\t{row.name}\tcreated {row.created_at:%Y-%m-%d}\tlast used {last}"
                   f"\texpires {expires}\t{row.state}")


@click.command("revoke-api-token")
@with_appcontext
@click.argument("token_id", type=int)
def revoke_api_token(token_id):
    """Revoke an API token by its id (see list-api-tokens): it stops working at once."""
    row = db.session.get(ApiToken, token_id)
    if row is None:
        raise click.ClickException(f"No API token {token_id}.")
    row.revoke()
    db.session.commit()
    click.echo(f"Token {row.id} “{row.name}” of {row.user.email} is revoked.")
