"""Signing in: the server's record of each browser login, refused logins for the throttle, and API tokens."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import (
    ForeignKey,
    String,
    select,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.extensions import db
from portal.models import User, UTCDateTime, utcnow


class LoginSession(db.Model):
    """A browser's login. The cookie holds only its token (the row keeps a SHA-256 of it), so deleting the
    row ends the session wherever a copy of the cookie is."""

    __tablename__ = "login_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship()

    @staticmethod
    def hash(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()


class LoginFailure(db.Model):
    """A refused login, kept for the throttle's window; in the database so every process sees them."""

    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(primary_key=True)
    account: Mapped[str] = mapped_column(String(254), index=True)  # the e-mail as typed, known or not
    address: Mapped[str] = mapped_column(String(64), index=True)
    failed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class TokenError(ValueError):
    """Input for a new API token the user must correct: field name -> message."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(errors.values()))
        self.errors = errors


class ApiToken(db.Model):
    """A personal API token; only its SHA-256 is stored, the token itself is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100), default="API token")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship()

    PREFIX = "psa_"
    NAME_LIMIT = 100
    LAST_USE_PRECISION = timedelta(minutes=1)  # finer would cost a database write per API call

    @staticmethod
    def hash(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    @classmethod
    def issue(cls, user: User, name: str = "API token", expires_days: int | str | None = None
              ) -> tuple[ApiToken, str]:
        """A new token for `user` (not yet added to the session) and its secret; TokenError for bad input."""
        config = current_app.config
        errors = {}
        name = " ".join((name or "").split())
        if not name:
            errors["name"] = "Give the token a name, e.g. what uses it."
        elif len(name) > cls.NAME_LIMIT:
            errors["name"] = f"The name may have at most {cls.NAME_LIMIT} characters."
        days = config["API_TOKEN_DAYS"] if expires_days in (None, "") else expires_days
        longest = config["API_TOKEN_MAX_DAYS"]
        try:
            days = int(days)
        except (TypeError, ValueError):
            days = None
        if days is None or not 1 <= days <= longest:
            errors["expires_days"] = f"A token is valid for 1 to {longest} days."
        if not errors and cls.active_count(user) >= config["API_TOKEN_LIMIT"]:
            errors["name"] = (f"You have {config['API_TOKEN_LIMIT']} valid tokens, the most allowed; revoke one "
                              "you no longer use first.")
        if errors:
            raise TokenError(errors)
        token = cls.PREFIX + secrets.token_urlsafe(32)
        return cls(user=user, token_hash=cls.hash(token), name=name, created_at=utcnow(),
                   expires_at=utcnow() + timedelta(days=days)), token

    @classmethod
    def active_count(cls, user: User) -> int:
        return len([t for t in cls.of_user(user) if t.state == "valid"])

    @classmethod
    def of_user(cls, user: User) -> list[ApiToken]:
        return list(db.session.scalars(select(cls).where(cls.user_id == user.id).order_by(cls.id.desc())))

    @property
    def state(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= utcnow():
            return "expired"
        return "valid"

    @classmethod
    def authenticate(cls, token: str) -> tuple[User | None, str]:
        """The token's user, or None and why not. Records the use, at most once a minute (not committed)."""
        row = db.session.scalar(select(cls).where(cls.token_hash == cls.hash(token)))
        if row is None or not row.user.active:
            return None, "Unknown API token."
        if row.state == "revoked":
            return None, "This API token was revoked. Create a new one in My profile › API tokens."
        if row.state == "expired":
            return None, (f"This API token expired on {row.expires_at:%Y-%m-%d}. Create a new one in "
                          "My profile › API tokens.")
        now = utcnow()
        if row.last_used_at is None or now - row.last_used_at >= cls.LAST_USE_PRECISION:
            row.last_used_at = now
        return row.user, ""

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = utcnow()
