"""Organizations and user accounts: creating, finding, and changes that reach beyond the users table."""

from __future__ import annotations

import functools
import secrets
from datetime import timedelta
from pathlib import Path

from flask import current_app
from sqlalchemy import delete, func, or_, select
from werkzeug.security import check_password_hash, generate_password_hash

from portal.extensions import db
from portal.models import (
    Activity,
    ActivityType,
    Organization,
    User,
    normalize_email,
    password_hash_method,
    utcnow,
)
from portal.signin_models import LoginFailure, LoginSession
from portal.sync.google import TOKENS
from portal.sync.models import SyncLink


class AccountError(ValueError):
    """An account operation that cannot be carried out, with the reason."""


def is_email_address(email: str) -> bool:
    """Whether a (normalized) address can be a user's: the address Google Workspace knows them by."""
    return "@" in email and len(email) <= 254


def organization_named(name: str) -> Organization | None:
    return db.session.scalar(select(Organization).where(Organization.name == name))


def find_organization(name: str | None) -> Organization:
    """The named organization, or the only one when no name is given."""
    if name:
        organization = organization_named(name)
        if organization is None:
            raise AccountError(f"No organization named {name!r}.")
        return organization
    organizations = db.session.scalars(select(Organization)).all()
    if len(organizations) != 1:
        raise AccountError(
            "There is no organization yet; run create-organization first."
            if not organizations
            else "There are several organizations; name one with --organization."
        )
    return organizations[0]


def add_organization(name: str) -> Organization:
    """A new organization with the standard activity types, added to the session (not committed)."""
    organization = Organization(name=name)
    db.session.add(organization)
    db.session.add_all(ActivityType.create_standard(organization))
    return organization


def add_user(organization: Organization, email: str, name: str, role: str, password: str,
             time_zone: str = "Europe/Amsterdam") -> User:
    """A new user, added to the session (not committed); the caller has checked the values."""
    user = User(organization=organization, email=normalize_email(email), name=name, role=role,
                time_zone=time_zone)
    user.set_password(password)
    db.session.add(user)
    return user


def rename_user(user: User, new_email: str) -> None:
    """Give a user another e-mail address, as when the Google Workspace admin renames them.

    The address is how the two systems know each other (the mission: the same in both), so the sync's own
    records follow: the calendars the user's events live in, the organizer the portal remembers, and the
    agreed states that name the user, so the rename is not taken for a change of participants on either
    side. Rename the user in Google Workspace too (in either order; the sync catches up).
    """
    old, new = user.email, normalize_email(new_email)
    if not is_email_address(new):
        raise AccountError(f"{new_email!r} is not an e-mail address.")
    if new == old:
        return
    taken = db.session.scalar(select(User).where(User.organization_id == user.organization_id, User.email == new))
    if taken is not None:
        raise AccountError(f"{new} is already a user of this organization.")
    user.email = new
    for activity in db.session.scalars(select(Activity).where(Activity.organization_id == user.organization_id,
                                                              Activity.google_organizer == old)):
        activity.google_organizer = new
    links = db.session.scalars(select(SyncLink).where(SyncLink.organization_id == user.organization_id, or_(
        SyncLink.calendar_email == old, SyncLink.activity_id.in_(Activity.ids_involving(user)))))
    for link in links:
        if link.calendar_email == old:
            link.calendar_email = new
        link.base_state = _renamed(link.base_state, old, new)
        link.pending_state = _renamed(link.pending_state, old, new)
    TOKENS.forget(subject=old)


def _renamed(data, old: str, new: str):
    """A stored state (or a pending one, which holds two) with `old` replaced by `new` among its participants."""
    if not isinstance(data, dict):
        return data
    if "sent" in data:
        return {key: _renamed(value, old, new) for key, value in data.items()}
    if old not in (data.get("participants") or []):
        return data
    return {**data, "participants": sorted({new if p == old else p for p in data["participants"]})}


# --- passwords --------------------------------------------------------------------------------------------

COMMON_PASSWORDS_FILE = Path(__file__).with_name("common_passwords.txt")
# Taken off the end before the common-password check: "Summer2024!" is "summer" to a guesser.
_DECORATION = "0123456789 !?.,;:-_+=*#@$%&^~'\"/()[]{}<>|"
_MIN_DISTINCT_CHARACTERS = 5


@functools.cache
def common_passwords() -> frozenset[str]:
    lines = COMMON_PASSWORDS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip().lower() for line in lines if line.strip() and not line.startswith("#"))


def password_problem(password: str, email: str) -> str | None:
    """What is wrong with `password` as a new password of the user with `email`, or None. The one policy,
    for the profile page and the command line."""
    shortest, longest = current_app.config["PASSWORD_MIN_LENGTH"], current_app.config["PASSWORD_MAX_LENGTH"]
    if len(password) < shortest:
        return f"The password needs at least {shortest} characters."
    if len(password) > longest:
        return f"The password may have at most {longest} characters."
    lowered = password.lower()
    email = normalize_email(email)
    local_part = email.partition("@")[0]
    if lowered == email or lowered.rstrip(_DECORATION) in (email, local_part):
        return "The password may not be your e-mail address or its name part."
    common = common_passwords()
    if lowered in common or lowered.rstrip(_DECORATION) in common or lowered.lstrip(_DECORATION) in common:
        return "That password is too common (guessers try it first); choose a longer or more unusual one."
    if len(set(lowered)) < _MIN_DISTINCT_CHARACTERS:
        return f"The password has too few different characters; use at least {_MIN_DISTINCT_CHARACTERS}."
    return None


def check_new_password(password: str, email: str) -> None:
    problem = password_problem(password, email)
    if problem:
        raise AccountError(problem)


# --- login sessions -----------------------------------------------------------------------------------------

def start_session(user: User) -> str:
    """A new login session of `user` (added, not committed); the token for the cookie. The user's ended
    sessions go at the same time, so the table holds about one row per browser in use."""
    now = utcnow()
    db.session.execute(delete(LoginSession).where(LoginSession.user_id == user.id, LoginSession.expires_at <= now))
    token = secrets.token_urlsafe(32)
    lifetime = current_app.permanent_session_lifetime
    db.session.add(LoginSession(user_id=user.id, token_hash=LoginSession.hash(token), created_at=now,
                                expires_at=now + lifetime))
    user.session_token = token
    return token


def session_user(token: str) -> User | None:
    """The user a live session token belongs to; None when it ended, expired, or the user is disabled."""
    row = db.session.scalar(select(LoginSession).where(LoginSession.token_hash == LoginSession.hash(token)))
    if row is None or row.expires_at <= utcnow() or not row.user.active:
        return None
    row.user.session_token = token
    return row.user


def end_session(token: str | None) -> None:
    if token:
        db.session.execute(delete(LoginSession).where(LoginSession.token_hash == LoginSession.hash(token)))


def end_sessions(user: User, keep: str | None = None) -> int:
    """End every login session of `user` but the one with token `keep`; how many ended."""
    query = delete(LoginSession).where(LoginSession.user_id == user.id)
    if keep:
        query = query.where(LoginSession.token_hash != LoginSession.hash(keep))
    return db.session.execute(query).rowcount


def live_sessions(user: User) -> list[LoginSession]:
    return db.session.scalars(select(LoginSession).where(LoginSession.user_id == user.id,
                                                         LoginSession.expires_at > utcnow())
                              .order_by(LoginSession.created_at)).all()


def set_active(user: User, active: bool) -> None:
    """Enable or disable a user; disabling ends their login sessions at once."""
    user.active = active
    if not active:
        end_sessions(user)


def change_password(user: User, current: str, new: str, address: str) -> None:
    """Change a logged-in user's password: the current one is checked like a login (a wrong one counts
    against the throttle), the new one against the policy; every other session of the user ends."""
    if login_throttled(user.email, address) or not user.check_password(current):
        record_failure(user.email, address)
        raise AccountError("Your current password is not right (or there were too many attempts; wait a "
                           "few minutes).")
    check_new_password(new, user.email)
    user.set_password(new)
    end_sessions(user, keep=user.session_token)


# --- logging in ---------------------------------------------------------------------------------------------

# Every refusal says the same, so a guesser learns nothing of which addresses exist, which accounts are
# disabled, or whether they are being throttled.
LOGIN_FAILED = ("Logging in failed. Check your e-mail address and password; after several failed attempts, "
                "wait a few minutes before trying again.")


@functools.cache
def _dummy_hash(method: str) -> str:
    return generate_password_hash(secrets.token_urlsafe(16), method=method)


def authenticate(email: str, password: str, address: str) -> User | None:
    """The user these credentials log in, or None (then show LOGIN_FAILED). The work is the same whatever
    the reason: one hash per account of that e-mail, and one against a dummy hash when there is none."""
    email = normalize_email(email)[:254]
    address = (address or "")[:64]
    throttled = login_throttled(email, address)
    # The same e-mail may exist in two organizations; the password decides which account it is.
    candidates = db.session.scalars(select(User).where(User.email == email).order_by(User.id)).all()
    matches = [u for u in candidates if check_password_hash(u.password_hash, password)]
    if not candidates:
        check_password_hash(_dummy_hash(password_hash_method()), password)
    user = matches[0] if matches else None
    if throttled:
        return None
    if user is None or not user.active:
        record_failure(email, address)
        return None
    db.session.execute(delete(LoginFailure).where(LoginFailure.account == email))
    return user


def login_throttled(email: str, address: str) -> bool:
    config = current_app.config
    since = utcnow() - timedelta(seconds=config["LOGIN_THROTTLE_WINDOW_SECONDS"])

    def failures(column, value):
        return db.session.scalar(select(func.count()).select_from(LoginFailure)
                                 .where(column == value, LoginFailure.failed_at > since))

    return (failures(LoginFailure.account, normalize_email(email)) >= config["LOGIN_MAX_FAILURES_PER_ACCOUNT"]
            or failures(LoginFailure.address, address) >= config["LOGIN_MAX_FAILURES_PER_ADDRESS"])


def record_failure(email: str, address: str) -> None:
    """Note a refused login (added, not committed); failures older than the window go."""
    now = utcnow()
    window = timedelta(seconds=current_app.config["LOGIN_THROTTLE_WINDOW_SECONDS"])
    db.session.execute(delete(LoginFailure).where(LoginFailure.failed_at <= now - window))
    db.session.add(LoginFailure(account=normalize_email(email)[:254], address=(address or "")[:64], failed_at=now))
