"""Shared fixtures: an app per test on a temporary database, logged-in clients, API tokens."""

from __future__ import annotations

import os
import re
import shutil
import uuid

import pytest
from sqlalchemy import create_engine, inspect, text

from portal import create_app
from portal.extensions import db
from portal.signin_models import ApiToken


def _postgres_database(base_url: str) -> str:
    """A fresh schema-isolated database on the test server, dropped at the end."""
    name = "portal_test_" + uuid.uuid4().hex[:10]
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return re.sub(r"/[^/]*$", "/" + name, base_url), name


FAST_HASH = "pbkdf2:sha256:1000"  # real hashing, a work factor fit for tests


@pytest.fixture(scope="session")
def empty_database(tmp_path_factory):
    """An SQLite file with the schema, built once; each test gets a copy (much faster than create_all)."""
    path = tmp_path_factory.mktemp("schema") / "empty.sqlite"
    app = create_app({"TESTING": True, "SECRET_KEY": "x", "ENCRYPTION_KEY": "hYDDs2tKQ-6jSuX4rrNQNlQhX3DOXVkIOCMUDldOZFc=",
                      "SQLALCHEMY_DATABASE_URI": "sqlite:///" + str(path)})
    with app.app_context():
        db.create_all()
        db.engine.dispose()
    return path


def _test_app(tmp_path, empty_database, **overrides):
    """A fresh app on its own copy of the empty database."""
    shutil.copyfile(empty_database, tmp_path / "portal.sqlite")
    app = create_app({
        "TESTING": True,
        "SECRET_KEY": "test-secret",
        "ENCRYPTION_KEY": "hYDDs2tKQ-6jSuX4rrNQNlQhX3DOXVkIOCMUDldOZFc=",
        "SQLALCHEMY_DATABASE_URI": "sqlite:///" + str(tmp_path / "portal.sqlite"),
        "PASSWORD_HASH_METHOD": FAST_HASH,
        **overrides,
    })
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def app(tmp_path, empty_database):
    yield from _test_app(tmp_path, empty_database, WTF_CSRF_ENABLED=False)


@pytest.fixture
def csrf_app(tmp_path, empty_database):
    """An app with CSRF protection on, as in production."""
    yield from _test_app(tmp_path, empty_database)


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
    from portal.accounts import add_organization, add_user
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


# --- Google emulator ------------------------------------------------------------------------------

SERVICE_ACCOUNT = "portal-sync@acme-project.iam.gserviceaccount.com"
SERVICE_CLIENT_ID = "104857600000000000099"


@pytest.fixture(scope="session")
def google_emulator():
    from portal.emulator.server import EmulatorServer

    with EmulatorServer(allow_http_webhooks=True) as server:  # the tests' web hooks listen on http://
        yield server


@pytest.fixture
def emulator(google_emulator, app):
    """The emulator, emptied, with the app pointed at it (fast retries: no real waiting in tests)."""
    from portal.sync.google import TOKENS

    google_emulator.control("POST", "/reset")
    TOKENS.forget()
    app.config.update(GOOGLE_TOKEN_URI=google_emulator.token_uri, GOOGLE_API_ENDPOINT=google_emulator.api_endpoint,
                      GOOGLE_BATCH_URI=google_emulator.batch_uri, GOOGLE_TIMEOUT=5,
                      SYNC_RETRY_BASE_SECONDS=0.01, SYNC_RETRY_CAP_SECONDS=0.05)
    yield google_emulator
    TOKENS.forget()


@pytest.fixture
def connected(app, world, emulator):
    """Acme connected to Google: Workspace users, service account, delegation, key, integration on."""
    import base64

    from portal.integration import integration_for, save_account, set_enabled, upload_key
    from portal.models import Organization, User
    from portal.sync.google import GOOGLE_SCOPES

    for email in EMAILS.values():
        if email.endswith("@acme.test"):
            emulator.add_user(email, time_zone="Europe/Amsterdam")
    account = emulator.control("POST", "/service-accounts", {"email": SERVICE_ACCOUNT,
                                                             "client_id": SERVICE_CLIENT_ID})
    emulator.control("POST", "/delegations", {"client_id": SERVICE_CLIENT_ID, "scopes": list(GOOGLE_SCOPES)})
    with app.app_context():
        organization = db.session.get(Organization, world["acme"])
        admin = db.session.get(User, world["admin"])
        row = integration_for(organization)
        save_account(row, admin, SERVICE_ACCOUNT, SERVICE_CLIENT_ID)
        upload_key(row, admin, base64.b64decode(account["p12_base64"]), "notasecret")
        outcome = set_enabled(row, admin, True, "admin@acme.test")
        assert outcome is None or outcome.ok, outcome
        db.session.commit()
    return emulator


@pytest.fixture
def sync_on(app, world):
    """`sync_on("user", "colleague")` switches those users' calendar sync on."""
    def switch(*who, enabled=True):
        from portal.models import User
        from portal.sync.models import CalendarSync

        with app.app_context():
            for key in who:
                CalendarSync.for_user(db.session.get(User, world[key])).switch(enabled)
            db.session.commit()

    return switch


class GoogleUser:
    """A person working in their own Google calendar, through the real client library."""

    def __init__(self, emulator, email):
        from google.oauth2.credentials import Credentials
        from googleapiclient.discovery import build

        token = emulator.control("POST", "/tokens", {"user": email})["access_token"]
        self.email = email
        self.service = build("calendar", "v3", credentials=Credentials(token), static_discovery=True,
                             cache_discovery=False, client_options={"api_endpoint": emulator.api_endpoint})

    @property
    def events(self):
        return self.service.events()

    def insert(self, **body):
        return self.events.insert(calendarId="primary", body=body).execute()

    def patch(self, event_id, **body):
        return self.events.patch(calendarId="primary", eventId=event_id, body=body).execute()

    def delete(self, event_id):
        return self.events.delete(calendarId="primary", eventId=event_id).execute()

    def get(self, event_id):
        return self.events.get(calendarId="primary", eventId=event_id).execute()

    def list(self, **params):
        items, token = [], None
        while True:
            answer = self.events.list(calendarId="primary", pageToken=token, **params).execute()
            items.extend(answer.get("items", []))
            token = answer.get("nextPageToken")
            if not token:
                return items

    def live(self, **params):
        return [e for e in self.list(**params) if e.get("status") != "cancelled"]


@pytest.fixture
def google_user(emulator):
    return lambda email: GoogleUser(emulator, email)


@pytest.fixture
def run_sync(app, world):
    """`run_sync("user")` runs one cycle for that user now and returns its row (detached)."""
    def run(who, trigger="test"):
        from portal.sync.engine import run_user_cycle

        with app.app_context():
            cycle = run_user_cycle(world[who], trigger=trigger)
            assert cycle is not None, "the user's lease was taken"
            if inspect(cycle).persistent:  # a quiet cycle is only counted: its row is never stored
                db.session.refresh(cycle)
                db.session.expunge(cycle)
            return cycle

    return run


@pytest.fixture
def stop_worker():
    """`stop_worker("written", when=lambda: ...)`: the next cycle that reaches that checkpoint (and for which
    `when()` holds) stops there, as if its process had died; nothing after it runs or commits."""
    from portal.sync import engine
    from tests.helpers import WorkerStopped

    hooks = []

    def arm(point, when=lambda: True):
        fired = []

        def hook(name):
            if name == point and not fired and when():
                fired.append(name)
                raise WorkerStopped(name)

        engine.CHECKPOINTS.append(hook)
        hooks.append(hook)
        return fired

    yield arm
    for hook in hooks:
        engine.CHECKPOINTS.remove(hook)


# --- the chaos runs' figures: added up over every seed (across xdist workers), printed at the end --------

def pytest_sessionfinish(session):
    from tests.chaos.harness import TOTAL

    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: hand its figures to the controller
        workeroutput["chaos_figures"] = TOTAL.__dict__.copy()


@pytest.hookimpl(optionalhook=True)  # an xdist hook: absent without xdist
def pytest_testnodedown(node, error):
    from tests.chaos.harness import TOTAL, Figures

    figures = getattr(node, "workeroutput", {}).get("chaos_figures")
    if figures:
        TOTAL.add(Figures(**figures))


def pytest_terminal_summary(terminalreporter):
    from tests.chaos.harness import TOTAL

    if TOTAL.seeds and not hasattr(terminalreporter.config, "workeroutput"):
        terminalreporter.write_sep("-", "chaos convergence")
        terminalreporter.write_line(TOTAL.line())
