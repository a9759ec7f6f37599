"""The access tokens the worker processes share (`portal.sync.token_store`), against the emulator's token
endpoint. Each `TokenCache` stands for one process: its own memory, the one database."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, text, update

from portal import integration
from portal.extensions import db
from portal.integration import endpoints, integration_for, signing_key
from portal.models import Organization
from portal.sync.google import TOKENS, CalendarClient, TokenCache
from portal.sync.models import SharedToken
from portal.sync.token_store import STORE
from tests.conftest import EMAILS, SERVICE_CLIENT_ID


def token_requests(emulator) -> int:
    return emulator.stats()["requests"].get("oauth2.token", 0)


def the_key(world):
    return signing_key(integration_for(db.session.get(Organization, world["acme"])))


def authorize(cache: TokenCache, key, who="user") -> str:
    return CalendarClient(key, EMAILS[who], endpoints(), tokens=cache).authorize().token


def shared_rows() -> list[SharedToken]:
    return list(db.session.scalars(select(SharedToken)))


def test_processes_sharing_the_store_ask_google_once_per_user(app, world, connected):
    with app.app_context():
        key = the_key(world)
        before = token_requests(connected)
        processes = [TokenCache(store=STORE) for _ in range(3)]
        tokens = {authorize(cache, key) for cache in processes}
        assert token_requests(connected) - before == 1 and len(tokens) == 1
        tokens = {authorize(cache, key, "colleague") for cache in processes}
        assert token_requests(connected) - before == 2 and len(tokens) == 1
        # Without the store each process asks for its own.
        for cache in (TokenCache(), TokenCache()):
            authorize(cache, key)
        assert token_requests(connected) - before == 4


def test_a_shared_token_is_stored_encrypted(app, world, connected):
    with app.app_context():
        token = authorize(TokenCache(store=STORE), the_key(world))
        db.session.commit()
        [row] = shared_rows()
        assert token not in row.token_ciphertext and row.subject == EMAILS["user"]
        raw = db.session.execute(text("SELECT * FROM sync_shared_tokens")).one()
        assert not any(token in str(value) for value in raw)
        # Nor is it in the database file itself.
        db.session.execute(text("PRAGMA wal_checkpoint(FULL)"))
        path = app.config["SQLALCHEMY_DATABASE_URI"].removeprefix("sqlite:///")
        with open(path, "rb") as file:
            assert token.encode() not in file.read()


def test_a_new_key_never_takes_the_old_keys_token(app, world, connected):
    with app.app_context():
        key = the_key(world)
        old = authorize(TokenCache(store=STORE), key)
        before = token_requests(connected)
        rotated = replace(key, fingerprint="AA:" + key.fingerprint[3:])  # the same account's next key
        new = authorize(TokenCache(store=STORE), rotated)
        assert token_requests(connected) - before == 1 and new != old
        assert len(shared_rows()) == 2


def test_forgetting_drops_the_shared_tokens_too(app, world, connected):
    with app.app_context():
        key = the_key(world)
        first = TokenCache(store=STORE)
        authorize(first, key)
        authorize(first, key, "colleague")
        TokenCache(store=STORE).forget(subject=EMAILS["user"].upper())  # another process forgets
        db.session.commit()
        assert [row.subject for row in shared_rows()] == [EMAILS["colleague"]]
        before = token_requests(connected)
        authorize(TokenCache(store=STORE), key)
        assert token_requests(connected) - before == 1
        TokenCache(store=STORE).forget(fingerprint=key.fingerprint)
        db.session.commit()
        assert shared_rows() == []


def test_a_failed_connection_test_drops_the_shared_tokens(app, world, connected, sync_on, run_sync):
    sync_on("user")
    assert run_sync("user").status == "ok"  # the sync's process cache and the shared store hold a token
    with app.app_context():
        assert len(shared_rows()) == 1
    connected.control("DELETE", "/delegations", {"client_id": SERVICE_CLIENT_ID})
    with app.app_context():
        outcome = integration.test_connection(integration_for(db.session.get(Organization, world["acme"])), None, EMAILS["user"])
        assert outcome.error.code == "delegation_missing"
        assert shared_rows() == [] and len(TOKENS) == 0


def test_an_expired_shared_token_is_refreshed_and_shared_again(app, world, connected):
    with app.app_context():
        key = the_key(world)
        old = authorize(TokenCache(store=STORE), key)
        # Within google-auth's refresh margin (3m45s) counts as expired too.
        soon = datetime.now(UTC) + timedelta(minutes=2)
        db.session.execute(update(SharedToken).values(expires_at=soon))
        db.session.commit()
        before = token_requests(connected)
        new = authorize(TokenCache(store=STORE), key)
        assert token_requests(connected) - before == 1 and new != old
        db.session.commit()
        [row] = shared_rows()
        assert row.expires_at > datetime.now(UTC) + timedelta(minutes=30)
        assert authorize(TokenCache(store=STORE), key) == new
        assert token_requests(connected) - before == 1


def test_a_process_with_a_valid_token_reads_nothing_from_the_store(app, world, connected):
    from sqlalchemy import event

    with app.app_context():
        key = the_key(world)
        cache = TokenCache(store=STORE)
        authorize(cache, key)
        statements = []
        listener = lambda *args: statements.append(args[2])  # noqa: E731
        event.listen(db.engine, "before_cursor_execute", listener)
        try:
            authorize(cache, key)
        finally:
            event.remove(db.engine, "before_cursor_execute", listener)
        assert statements == []


def test_the_sync_shares_its_tokens(app, world, connected, sync_on, run_sync):
    sync_on("user")
    assert run_sync("user").status == "ok"
    before = token_requests(connected)
    with app.app_context():
        authorize(TokenCache(store=STORE), the_key(world))  # a second worker, the same user
    assert token_requests(connected) == before


def test_a_key_is_opened_once_for_all_its_users(app, world, connected, monkeypatch):
    # Opening a PEM key costs tens of milliseconds of CPU: once per user, a worker serving thousands of users
    # would spend minutes on it.
    from google.auth import crypt

    opened = []
    original = crypt.RSASigner.from_string

    def counting(*args, **kwargs):
        opened.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(crypt.RSASigner, "from_string", counting)
    with app.app_context():
        cache = TokenCache()
        key = the_key(world)
        first, second = (CalendarClient(key, EMAILS[who], endpoints(), tokens=cache).authorize()
                         for who in ("user", "colleague"))
        assert len(opened) == 1 and first.signer is second.signer
        assert first.token != second.token  # each user still has a token of their own
        cache.forget()
        authorize(cache, key)
        assert len(opened) == 2
