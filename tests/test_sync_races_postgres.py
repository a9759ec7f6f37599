"""Races between workers on PostgreSQL, where several processes sync one organization at once."""

import pytest

from portal import create_app
from portal.extensions import db
from tests.test_sync_faults import race_participant_cycle_and_owner_push

pytestmark = pytest.mark.postgres


@pytest.fixture
def app(postgres_url):
    """The usual test app, on a fresh PostgreSQL database (the fixtures built on `app` follow)."""
    from sqlalchemy import create_engine, text

    from tests.conftest import FAST_HASH, _postgres_database

    url, name = _postgres_database(postgres_url)
    app = create_app({"TESTING": True, "SECRET_KEY": "test-secret", "WTF_CSRF_ENABLED": False,
                      "ENCRYPTION_KEY": "hYDDs2tKQ-6jSuX4rrNQNlQhX3DOXVkIOCMUDldOZFc=",
                      "SQLALCHEMY_DATABASE_URI": url, "PASSWORD_HASH_METHOD": FAST_HASH})
    with app.app_context():
        db.create_all()
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_a_participants_cycle_and_the_owners_push_racing_on_one_activity(app, world, connected, sync_on, run_sync,
                                                                          google_user, api):
    race_participant_cycle_and_owner_push(app, world, sync_on, run_sync, google_user, api)
