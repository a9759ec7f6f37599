"""The access tokens every worker process shares: one token request per user per hour, however many workers.

`google.TokenCache` looks in its own memory first, then here, and only then asks Google, writing what it
got back here. Tokens are stored as Fernet ciphertext under ENCRYPTION_KEY (`portal.integration.encrypt`),
like the key files; a row that no configured key opens (ENCRYPTION_KEY rotated) is simply not found.

Two processes whose tokens run out at the same moment may both ask Google once: a lock across processes
would cost a round trip on every refresh to save one request per user per hour at most, and a token stays
valid for an hour whichever of the two is kept. The later write keeps the later expiry.

Reads join the caller's transaction (a cycle's, a request's): one SELECT, only when this process holds no
valid token. Writes use a connection of their own, so a token is visible to the other workers at once and
is not lost with a cycle that rolls back; on SQLite, where that connection could wait for a write lock the
calling thread itself holds, it waits briefly and otherwise gives up (the token is only not shared). Forgetting
joins the caller's transaction, which commits it together with the settings change that made it necessary.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from cryptography.fernet import InvalidToken
from flask import has_app_context
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from portal.extensions import db
from portal.integration import decrypt, encrypt
from portal.models import utcnow
from portal.sync.google import TokenKey, TokenStore
from portal.sync.models import SharedToken

# Rows this long past their expiry are removed when a new token is written (the users who left).
KEEP_EXPIRED = timedelta(days=1)
SQLITE_WRITE_WAIT_MS = 200
SQLITE_BUSY_TIMEOUT_MS = 30000  # what portal._sqlite_pragmas sets on every connection


def row_id(key: TokenKey) -> str:
    """The row's key: a hash of everything the token was issued for."""
    parts = (key.fingerprint, key.service_account_email.lower(), key.token_uri, " ".join(key.scopes), key.subject)
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()


class DatabaseTokenStore(TokenStore):
    """`TokenStore` on the app's database (the `sync_shared_tokens` table); nothing outside an app context."""

    def get(self, key: TokenKey) -> tuple[str, datetime] | None:
        if not has_app_context():
            return None
        row = db.session.execute(
            select(SharedToken.token_ciphertext, SharedToken.expires_at)
            .where(SharedToken.id == row_id(key), SharedToken.expires_at > utcnow())
        ).first()
        if row is None:
            return None
        try:
            token = decrypt(row.token_ciphertext).decode("ascii")
        except (InvalidToken, UnicodeDecodeError):
            return None
        return token, row.expires_at.astimezone(UTC).replace(tzinfo=None)

    def put(self, key: TokenKey, token: str, expiry: datetime) -> None:
        if not has_app_context():
            return
        expires_at = expiry.replace(tzinfo=UTC) if expiry.tzinfo is None else expiry
        ciphertext = encrypt(token.encode("ascii"))
        ident = row_id(key)
        with db.engine.connect() as connection:
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:
                connection.exec_driver_sql(f"PRAGMA busy_timeout = {SQLITE_WRITE_WAIT_MS}")
            try:
                # Update first, insert when there was nothing: portable; of two processes inserting at
                # once, one gets an IntegrityError and keeps its token to itself (the other's is as good).
                changed = connection.execute(
                    update(SharedToken).where(SharedToken.id == ident, SharedToken.expires_at < expires_at)
                    .values(token_ciphertext=ciphertext, expires_at=expires_at)
                ).rowcount
                if not changed and connection.execute(
                        select(SharedToken.id).where(SharedToken.id == ident)).first() is None:
                    connection.execute(insert(SharedToken).values(
                        id=ident, fingerprint=key.fingerprint, subject=key.subject,
                        token_ciphertext=ciphertext, expires_at=expires_at))
                connection.execute(delete(SharedToken).where(SharedToken.expires_at < utcnow() - KEEP_EXPIRED))
                connection.commit()
            except IntegrityError:
                connection.rollback()
            finally:
                if sqlite:
                    connection.rollback()
                    connection.exec_driver_sql(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")

    def forget(self, *, fingerprint: str | None = None, subject: str | None = None) -> None:
        if not has_app_context():
            return
        statement = delete(SharedToken)
        if fingerprint is not None:
            statement = statement.where(SharedToken.fingerprint == fingerprint)
        if subject is not None:
            statement = statement.where(SharedToken.subject == subject.lower())
        db.session.execute(statement.execution_options(synchronize_session=False))


STORE = DatabaseTokenStore()
