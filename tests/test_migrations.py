"""The migrations build the schema the models describe, on SQLite and on PostgreSQL."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import upgrade
from sqlalchemy import create_engine, inspect, text

from portal import create_app
from portal.extensions import db


def migrated_app(uri, tmp_path):
    app = create_app({"TESTING": True, "SECRET_KEY": "x", "ENCRYPTION_KEY": "hYDDs2tKQ-6jSuX4rrNQNlQhX3DOXVkIOCMUDldOZFc=",
                      "SQLALCHEMY_DATABASE_URI": uri})
    with app.app_context():
        upgrade()
    return app


def assert_no_drift(app):
    with app.app_context(), db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        diff = compare_metadata(context, db.metadata)
        assert diff == [], f"models and migrations differ: {diff}"
        assert "change_records" in inspect(connection).get_table_names()


def test_sqlite_migrations_match_models(tmp_path):
    app = migrated_app("sqlite:///" + str(tmp_path / "m.sqlite"), tmp_path)
    assert_no_drift(app)
    with app.app_context():
        db.engine.dispose()


@pytest.mark.postgres
def test_postgres_migrations_match_models(postgres_url, tmp_path):
    from tests.conftest import _postgres_database

    url, name = _postgres_database(postgres_url)
    try:
        app = migrated_app(url, tmp_path)
        assert_no_drift(app)
        runner = app.test_cli_runner()
        result = runner.invoke(args=["seed-demo"])
        assert result.exit_code == 0, result.output
        with app.app_context():
            assert db.session.execute(text("select count(*) from activities")).scalar() >= 5
            db.session.remove()
            db.engine.dispose()
    finally:
        admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
