"""Organizations and user accounts: creating, finding, and changes that reach beyond the users table."""

from __future__ import annotations

from sqlalchemy import or_, select

from portal.extensions import db
from portal.models import Activity, ActivityParticipant, ActivityType, Organization, User, normalize_email
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
    involved = select(Activity.id).where(or_(
        Activity.owner_id == user.id,
        Activity.id.in_(select(ActivityParticipant.activity_id).where(ActivityParticipant.user_id == user.id))))
    links = db.session.scalars(select(SyncLink).where(SyncLink.organization_id == user.organization_id, or_(
        SyncLink.calendar_email == old, SyncLink.activity_id.in_(involved))))
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
