"""Shared fixtures: an app per test on a temporary database, logged-in clients, API tokens."""

from __future__ import annotations

import os
import re
import uuid

import pytest
from sqlalchemy import create_engine, text

from portal import create_app
from portal.extensions import db
from portal.models import ApiToken


def _postgres_database(base_url: str) -> str:
    """A fresh schema-isolated database on the test server, dropped at the end."""
    name = "portal_test_" + uuid.uuid4().hex[:10]
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return re.sub(r"/[^/]*$", "/" + name, base_url), name


FAST_HASH = "pbkdf2:sha256:1000"  # real hashing, a work factor fit for tests


@pytest.fixture
def app(tmp_path):
    app = create_app({
        "TESTING": True,
        "SECRET_KEY": "test-secret",
        "ENCRYPTION_KEY": "hYDDs2tKQ-6jSuX4rrNQNlQhX3DOXVkIOCMUDldOZFc=",
        "SQLALCHEMY_DATABASE_URI": "sqlite:///" + str(tmp_path / "portal.sqlite"),
        "WTF_CSRF_ENABLED": False,
        "PASSWORD_HASH_METHOD": FAST_HASH,
    })
    with app.app_context():
        db.create_all()
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def csrf_app(tmp_path):
    """An app with CSRF protection on, as in production."""
    app = create_app({
        "TESTING": True,
        "SECRET_KEY": "test-secret",
        "ENCRYPTION_KEY": "hYDDs2tKQ-6jSuX4rrNQNlQhX3DOXVkIOCMUDldOZFc=",
        "SQLALCHEMY_DATABASE_URI": "sqlite:///" + str(tmp_path / "portal.sqlite"),
        "PASSWORD_HASH_METHOD": FAST_HASH,
    })
    with app.app_context():
        db.create_all()
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


PASSWORD = "correct-horse-battery"


@pytest.fixture
def world(app):
    """Two organizations: Acme (admin, two users, helpdesk) and Globex (admin, one user)."""
    from portal.cli import add_organization, add_user
    from portal.models import Project, ProjectTask

    with app.app_context():
        acme = add_organization("Acme")
        globex = add_organization("Globex")
        people = {
            "admin": add_user(acme, "admin@acme.test", "Alice Admin", "admin", PASSWORD),
            "user": add_user(acme, "user@acme.test", "Uma User", "user", PASSWORD),
            "colleague": add_user(acme, "colleague@acme.test", "Carl Colleague", "user", PASSWORD),
            "helpdesk": add_user(acme, "helpdesk@acme.test", "Hank Helpdesk", "helpdesk", PASSWORD),
            "other_admin": add_user(globex, "admin@globex.test", "Olga Other", "admin", PASSWORD),
            "other": add_user(globex, "user@globex.test", "Oscar Other", "user", PASSWORD),
        }
        db.session.add(Project(organization=acme, name="Relaunch", tasks=[ProjectTask(name="Design")]))
        db.session.add(Project(organization=globex, name="Secret", tasks=[ProjectTask(name="Plan")]))
        db.session.commit()
        return {key: user.id for key, user in people.items()} | {"acme": acme.id, "globex": globex.id}


class AuthActions:
    def __init__(self, client):
        self._client = client

    def login(self, email, password=PASSWORD):
        return self._client.post("/login", data={"email": email, "password": password})

    def logout(self):
        return self._client.post("/logout")


@pytest.fixture
def auth(client):
    return AuthActions(client)


EMAILS = {
    "admin": "admin@acme.test",
    "user": "user@acme.test",
    "colleague": "colleague@acme.test",
    "helpdesk": "helpdesk@acme.test",
    "other_admin": "admin@globex.test",
    "other": "user@globex.test",
}


@pytest.fixture
def login_as(client, auth, world):
    def login(who):
        if who != "anonymous":
            response = auth.login(EMAILS[who])
            assert response.status_code == 302, response.data
        return client

    return login


@pytest.fixture
def api(app, world):
    """`api(who)` returns a client that sends that user's bearer token with every request."""

    class ApiClient:
        def __init__(self, token):
            self.client = app.test_client()
            self.headers = {"Authorization": f"Bearer {token}"} if token else {}

        def __getattr__(self, method):
            def call(path, **kwargs):
                headers = {**self.headers, **kwargs.pop("headers", {})}
                return getattr(self.client, method)(path, headers=headers, **kwargs)

            return call

    def make(who):
        if who == "anonymous":
            return ApiClient(None)
        with app.app_context():
            from portal.models import User

            row, token = ApiToken.issue(db.session.get(User, world[who]))
            db.session.add(row)
            db.session.commit()
        return ApiClient(token)

    return make


@pytest.fixture(scope="session")
def postgres_url():
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        pytest.skip("PostgreSQL tests need TEST_DATABASE_URL, e.g. "
                    "postgresql+psycopg://postgres@127.0.0.1:5432/test (.ci/run sets it)")
    return url
