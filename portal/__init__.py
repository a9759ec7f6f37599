"""PSA portal: projects, users and activities, with two-way Google Calendar synchronization."""

import copy
import os
import secrets
import sqlite3
from pathlib import Path

from cryptography.fernet import Fernet
from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError

from portal import security
from portal.extensions import csrf, db, htmx, login_manager, migrate

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS_DIR = PROJECT_ROOT / "migrations"

# Every setting's default but two, set in create_app: the database file (in the instance folder) and
# SCHEDULER_ENABLED (off under TESTING). instance/config.py, PORTAL_* variables or a test's config override them.
DEFAULTS = {
    "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True},
    "MAX_CONTENT_LENGTH": 2 * 1024 * 1024,
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "PERMANENT_SESSION_LIFETIME": 8 * 3600,
    # Browser-facing protection (portal.security)
    "TRUSTED_PROXIES": 0,  # reverse proxies in front whose X-Forwarded-For/-Proto/-Host/-Port are believed
    "HSTS_SECONDS": 365 * 24 * 3600,  # Strict-Transport-Security on answers over HTTPS; 0 sends none
    "WTF_CSRF_TIME_LIMIT": None,
    "DEFAULT_TIME_ZONE": "Europe/Amsterdam",
    # Logins (portal.accounts): a login also ends on the server PERMANENT_SESSION_LIFETIME after it began.
    "LOGIN_THROTTLE_WINDOW_SECONDS": 15 * 60,  # refused logins count this long
    "LOGIN_MAX_FAILURES_PER_ACCOUNT": 5,  # then every login of that e-mail is refused until older ones age out
    "LOGIN_MAX_FAILURES_PER_ADDRESS": 30,  # the same for one client address, whatever e-mails it tries
    "PASSWORD_MIN_LENGTH": 12,
    "PASSWORD_MAX_LENGTH": 256,  # bounds the hashing work one request can ask for
    "P12_OPEN_SECONDS": 10,  # an uploaded P12 that takes longer to open is refused (portal.integration)
    # API tokens (portal.models.ApiToken)
    "API_TOKEN_DAYS": 90,  # a new token's lifetime unless its maker chooses
    "API_TOKEN_MAX_DAYS": 365,
    "API_TOKEN_LIMIT": 20,  # valid tokens per user
    # The sync's scheduling (portal.sync.scheduler)
    "SYNC_INTERVAL_SECONDS": 30,  # a pull cycle per logged-in user this often
    "SYNC_POLL_SECONDS": 1.0,  # how often a worker looks for due users (the latency of triggers)
    # Cycles run at once per process (on PostgreSQL; SQLite runs the sync one at a time). An idle cycle is
    # one Google round trip and a few milliseconds of work: 32 in flight hide 100 ms of latency for 5,000
    # users per 30 s interval (167 cycles a second) with room to spare. The connection pool is sized to match.
    "SYNC_WORKER_THREADS": 32,
    "SYNC_PUSH_THREADS": 2,  # outbox pushes run at once per process, beside the cycles
    # At most this many users claimed per look (SYNC_BATCH_SIZE is the engine's: writes per Google batch).
    "SYNC_CLAIM_BATCH_SIZE": 50,
    "SYNC_LEASE_SECONDS": 300,  # a dead worker's claims free up after this (as the engine's leases do)
    "SYNC_BUSY_RETRY_SECONDS": 2,  # a user whose lease someone else holds is tried again this much later
    "SYNC_BACKOFF_BASE_SECONDS": 30,
    "SYNC_BACKOFF_CAP_SECONDS": 3600,
    "SYNC_DEBOUNCE_SECONDS": 10,  # navigation makes a user due at most this often
    "SYNC_PUSH_INLINE": False,  # without a scheduler in the process, push right after the commit, in-line
    # The sync engine (portal.sync.engine)
    "SYNC_PAGE_SIZE": 2500,  # events per page of a pull: Google's largest
    "SYNC_BATCH_SIZE": 50,  # writes per Google batch request (Google takes up to 1,000; 50 is its advice)
    "SYNC_RETRY_ATTEMPTS": 4,  # a write Google rate-limits or fails with a 5xx is tried this often per cycle
    "SYNC_RETRY_BASE_SECONDS": 0.5,
    "SYNC_RETRY_CAP_SECONDS": 8.0,
    # `serve` starts an embedded Google emulator on loopback and connects the demo organization (`serve --demo`)
    "DEMO_GOOGLE": False,
    # Google's watch channels (portal.sync.channels)
    "PUBLIC_BASE_URL": None,  # where Google can reach /webhooks/google/calendar; unset: no watch channels
    "SYNC_CHANNEL_TTL_SECONDS": 7 * 24 * 3600,  # what the portal asks; Google may grant less
    "SYNC_CHANNEL_RENEW_BEFORE_SECONDS": 24 * 3600,
    # While a user's channel is confirmed (portal.sync.runtime.push_trusted_until), notifications start the
    # pulls and this poll only catches what they missed: Google's push guide says notifications are not
    # 100% reliable (some are dropped or late). 15 min bounds such a loss, and keeps an idle user at
    # 4 pulls + 1 token + ~0.01 channel renewals = ~5 Google requests an hour (30 s polling: 121).
    "SYNC_SAFETY_POLL_SECONDS": 15 * 60,
    # Notifications per channel and minute that bring a cycle forward; the rest wait for the minute's end.
    "WEBHOOK_NOTIFICATIONS_PER_MINUTE": 30,
}


def create_app(test_config=None, instance_path=None):
    """Create and configure the portal application."""
    app = Flask(__name__, instance_relative_config=True, instance_path=instance_path)
    # instance/ holds the keys, the database and the emulator's state: nobody but the owner reads it.
    os.makedirs(app.instance_path, mode=0o700, exist_ok=True)
    owner_only(app.instance_path, 0o700)
    database = "sqlite:///" + os.path.join(app.instance_path, "portal.sqlite")
    app.config.from_mapping(copy.deepcopy(DEFAULTS), SQLALCHEMY_DATABASE_URI=database)
    if test_config is None:
        app.config.from_pyfile("config.py", silent=True)
        app.config.from_prefixed_env("PORTAL")
    else:
        app.config.from_mapping(test_config)
    # Tests drive the sync's scheduling functions directly; a background thread there would race them.
    app.config.setdefault("SCHEDULER_ENABLED", not app.config["TESTING"])

    _ensure_generated_secret(app, "SECRET_KEY", "secret_key", lambda: secrets.token_hex(32))
    _ensure_generated_secret(app, "ENCRYPTION_KEY", "encryption_key", lambda: Fernet.generate_key().decode())

    _create_sqlite_file(app.config["SQLALCHEMY_DATABASE_URI"])
    _size_pool(app.config)
    db.init_app(app)
    _tune_sqlite()
    migrate.init_app(app, db, directory=str(MIGRATIONS_DIR), render_as_batch=True)
    csrf.init_app(app)
    htmx.init_app(app)
    login_manager.init_app(app)
    security.init_app(app)

    # Imported when an app is made, not with the package: the Google emulator and the pure sync modules live
    # in it too, and importing them should not load every model, page and Google's client libraries.
    from portal import changes, cli, models, signin_models, sync  # noqa: F401  (models register tables)
    from portal.routes import register_blueprints
    from portal.sync import models as sync_models  # noqa: F401

    changes.install(db)
    register_blueprints(app)
    cli.init_app(app)
    sync.init_app(app)
    return app


def _sqlite_pragmas(dbapi_connection, connection_record):
    """SQLite as a server's database: readers never wait for the writer (WAL), and a writer waits its turn
    instead of failing at once while a sync cycle of another thread commits."""
    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout = 30000")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.close()


def _tune_sqlite():
    if not event.contains(Engine, "connect", _sqlite_pragmas):
        event.listen(Engine, "connect", _sqlite_pragmas)


def owner_only(path, mode=0o600) -> None:
    """Take group and other permissions away from a file or folder the portal made, if it has any."""
    try:
        current = os.stat(path).st_mode & 0o777
        if current & 0o077:
            os.chmod(path, current & mode)
    except PermissionError:  # not ours to change (a mounted volume): the operator's choice stands
        pass


def create_owner_only_file(path) -> bool:
    """Create an empty file only its owner may read, unless it exists; returns whether it was created.

    SQLite gives its -wal and -shm files the database file's permissions, so this covers them too."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return False
    return True


def write_owner_only(path, text: str) -> None:
    """Replace a file's content at once (a reader sees the old or the new, never half), readable by its owner."""
    temporary = f"{path}.{secrets.token_hex(4)}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _size_pool(config) -> None:
    """A connection for every sync thread (cycles, pushes) and a few for the claims, the ticks and the pages:
    a cycle thread waiting for a connection would wait longer than its Google round trip. Unless set."""
    options = config["SQLALCHEMY_ENGINE_OPTIONS"]
    if str(config["SQLALCHEMY_DATABASE_URI"]).startswith("sqlite") or "pool_size" in options:
        return
    config["SQLALCHEMY_ENGINE_OPTIONS"] = {
        **options, "pool_size": int(config["SYNC_WORKER_THREADS"]) + int(config["SYNC_PUSH_THREADS"]) + 4}


def _create_sqlite_file(uri: str) -> None:
    try:
        url = make_url(uri)
    except ArgumentError:
        return
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:" \
            or url.database.startswith("file:"):
        return
    if os.path.isdir(os.path.dirname(os.path.abspath(url.database))):
        create_owner_only_file(url.database)


def encryption_key_file(app) -> Path | None:
    """The instance file the encryption key was read from; None when the configuration sets it."""
    return app.extensions.get("portal_encryption_key_file")


def _ensure_generated_secret(app, config_key, file_name, generate):
    """Use the configured value, else the one in instance/, else generate it there (never committed).

    A file may hold several lines (the encryption key during a rotation): they become one comma-separated value."""
    if app.config.get(config_key):
        return
    path = Path(app.instance_path) / file_name
    app.extensions[f"portal_{config_key.lower()}_file"] = path
    if path.exists():
        owner_only(path)
        app.config[config_key] = ",".join(path.read_text().split())
        return
    value = generate()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process of the same instance generated it first
        app.config[config_key] = ",".join(path.read_text().split())
        return
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    app.config[config_key] = value
