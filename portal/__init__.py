"""PSA portal: projects, users and activities, with two-way Google Calendar synchronization."""

import os
import secrets
import sqlite3
from pathlib import Path

from cryptography.fernet import Fernet
from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine

from portal.extensions import csrf, db, htmx, login_manager, migrate

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS_DIR = PROJECT_ROOT / "migrations"


def create_app(test_config=None):
    """Create and configure the portal application."""
    app = Flask(__name__, instance_relative_config=True)
    os.makedirs(app.instance_path, exist_ok=True)
    app.config.from_mapping(
        SQLALCHEMY_DATABASE_URI="sqlite:///" + os.path.join(app.instance_path, "portal.sqlite"),
        SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": True},
        MAX_CONTENT_LENGTH=2 * 1024 * 1024,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=8 * 3600,
        WTF_CSRF_TIME_LIMIT=None,
        DEFAULT_TIME_ZONE="Europe/Amsterdam",
    )
    if test_config is None:
        app.config.from_pyfile("config.py", silent=True)
        app.config.from_prefixed_env("PORTAL")
    else:
        app.config.from_mapping(test_config)

    _ensure_generated_secret(app, "SECRET_KEY", "secret_key", lambda: secrets.token_hex(32))
    _ensure_generated_secret(app, "ENCRYPTION_KEY", "encryption_key", lambda: Fernet.generate_key().decode())

    db.init_app(app)
    _tune_sqlite()
    migrate.init_app(app, db, directory=str(MIGRATIONS_DIR), render_as_batch=True)
    csrf.init_app(app)
    htmx.init_app(app)
    login_manager.init_app(app)

    from portal import changes, cli, models  # noqa: F401  (models register tables; changes hooks the session)
    from portal.routes import register_blueprints
    from portal.sync import models as sync_models  # noqa: F401

    changes.install(db)
    register_blueprints(app)
    cli.init_app(app)
    from portal.sync import scheduler as sync_scheduling  # pull cycles, triggers, push channels, `worker`

    sync_scheduling.init_app(app)
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


def _ensure_generated_secret(app, config_key, file_name, generate):
    """Use the configured value, else the one in instance/, else generate it there (never committed)."""
    if app.config.get(config_key):
        return
    path = Path(app.instance_path) / file_name
    if path.exists():
        app.config[config_key] = path.read_text().strip()
        return
    value = generate()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process of the same instance generated it first
        app.config[config_key] = path.read_text().strip()
        return
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    app.config[config_key] = value
