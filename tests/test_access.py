"""Who may reach which route: every route of the application, every kind of visitor.

The routes come from the application's URL map, so a route added without a line in RULES fails here (and a
line whose route is gone fails too). Each cell runs on a fresh database in which "user" owns one activity,
"participant" takes part in it, "colleague" is in the same organization without taking part, and "other" /
"other_admin" belong to another organization. Pages are visited with a logged-in browser session, /api/ with
the visitor's bearer token.
"""

import pytest

from portal import create_app
from portal.extensions import db
from tests.conftest import EMAILS, PASSWORD
from tests.helpers import make_activity

ANON, USER, PARTICIPANT, COLLEAGUE, ADMIN, HELPDESK, OTHER, OTHER_ADMIN = VISITORS = (
    "anonymous", "user", "participant", "colleague", "admin", "helpdesk", "other", "other_admin")


def expect(anonymous, user, participant, colleague, admin, helpdesk, other, other_admin):
    """The status each visitor gets, in the order of VISITORS."""
    return dict(zip(VISITORS, (anonymous, user, participant, colleague, admin, helpdesk, other, other_admin),
                    strict=True))


ACTIVITY = "<int:activity_id>"
GOOGLE = "/settings/integrations/google-calendar"

# (method, rule as in the URL map): expect(anonymous, user, participant, colleague, admin, helpdesk, other,
# other_admin). 302 for anonymous is the way to the login page; 404 means "not yours to see".
RULES = {
    ("GET", "/"): expect(302, 302, 302, 302, 302, 302, 302, 302),
    ("GET", "/login"): expect(200, 302, 302, 302, 302, 302, 302, 302),
    ("POST", "/login"): expect(400, 302, 302, 302, 302, 302, 302, 302),
    ("POST", "/logout"): expect(302, 302, 302, 302, 302, 302, 302, 302),
    # calendar pages
    ("GET", "/calendar/"): expect(302, 200, 200, 200, 200, 200, 200, 200),
    ("GET", "/calendar/list"): expect(302, 200, 200, 200, 200, 200, 200, 200),
    ("GET", "/calendar/trash"): expect(302, 200, 200, 200, 200, 200, 200, 200),
    ("GET", "/calendar/activities/new"): expect(302, 200, 200, 200, 200, 403, 200, 200),
    ("POST", "/calendar/activities"): expect(302, 302, 302, 302, 302, 403, 302, 302),
    ("GET", f"/calendar/activities/{ACTIVITY}"): expect(302, 200, 200, 404, 200, 404, 404, 404),
    ("POST", f"/calendar/activities/{ACTIVITY}"): expect(302, 302, 403, 404, 302, 404, 404, 404),
    ("POST", f"/calendar/activities/{ACTIVITY}/delete"): expect(302, 302, 403, 404, 302, 404, 404, 404),
    ("POST", f"/calendar/activities/{ACTIVITY}/restore-value/<int:entry_id>"):
        expect(302, 302, 403, 404, 302, 404, 404, 404),
    # a participant answers; the owner organizes it, and nobody else takes part
    ("POST", f"/calendar/activities/{ACTIVITY}/response"): expect(302, 403, 302, 404, 403, 404, 404, 404),
    ("POST", f"/calendar/trash/{ACTIVITY}/restore"): expect(302, 302, 403, 404, 302, 404, 404, 404),
    # my profile
    ("GET", "/profile/calendar-sync"): expect(302, 200, 200, 200, 200, 200, 200, 200),
    ("POST", "/profile/calendar-sync"): expect(302, 302, 302, 302, 302, 302, 302, 302),
    ("POST", "/profile/time-zone"): expect(302, 302, 302, 302, 302, 302, 302, 302),
    # the first sync's preview and progress: each visitor's own (here the integration is off: a message)
    ("POST", "/profile/calendar-sync/preview"): expect(302, 200, 200, 200, 200, 200, 200, 200),
    ("GET", "/profile/calendar-sync/progress"): expect(302, 200, 200, 200, 200, 200, 200, 200),
    ("GET", "/profile/calendar-sync/changes"): expect(302, 200, 200, 200, 200, 200, 200, 200),
    # my sign-in: every logged-in visitor has their own (a wrong current password: 422, nothing changes)
    ("GET", "/profile/security"): expect(302, 200, 200, 200, 200, 200, 200, 200),
    ("POST", "/profile/password"): expect(302, 422, 422, 422, 422, 422, 422, 422),
    ("POST", "/profile/sessions/end-all"): expect(302, 302, 302, 302, 302, 302, 302, 302),
    # my API tokens: each visitor sees and revokes only their own ("user"'s token is the one revoked here)
    ("GET", "/profile/api-tokens"): expect(302, 200, 200, 200, 200, 200, 200, 200),
    ("POST", "/profile/api-tokens"): expect(302, 200, 200, 200, 200, 200, 200, 200),
    ("POST", "/profile/api-tokens/<int:token_id>/revoke"): expect(302, 302, 404, 404, 404, 404, 404, 404),
    # settings (admins of their own organization); the password parts are htmx pieces: a plain GET goes to the page
    ("GET", GOOGLE): expect(302, 403, 403, 403, 200, 403, 403, 200),
    ("POST", GOOGLE + "/account"): expect(302, 403, 403, 403, 302, 403, 403, 302),
    ("POST", GOOGLE + "/key"): expect(302, 403, 403, 403, 422, 403, 403, 422),
    ("GET", GOOGLE + "/password"): expect(302, 403, 403, 403, 302, 403, 403, 302),
    ("GET", GOOGLE + "/password/edit"): expect(302, 403, 403, 403, 302, 403, 403, 302),
    ("POST", GOOGLE + "/password"): expect(302, 403, 403, 403, 302, 403, 403, 302),
    ("POST", GOOGLE + "/activity-types"): expect(302, 403, 403, 403, 302, 403, 403, 302),
    ("POST", GOOGLE + "/enabled"): expect(302, 403, 403, 403, 302, 403, 403, 302),
    ("POST", GOOGLE + "/participants"): expect(302, 403, 403, 403, 302, 403, 403, 302),
    ("POST", GOOGLE + "/test"): expect(302, 403, 403, 403, 200, 403, 403, 200),
    # diagnostics: each admin sees their own organization's (no organization in the address to change)
    ("GET", GOOGLE + "/diagnostics"): expect(302, 403, 403, 403, 200, 403, 403, 200),
    # helpdesk (read-only, across organizations: the organization visited is the other one)
    ("GET", "/helpdesk/"): expect(302, 403, 403, 403, 403, 200, 403, 403),
    ("GET", "/helpdesk/organizations/<int:organization_id>"): expect(302, 403, 403, 403, 403, 200, 403, 403),
    # REST API v1 (bearer tokens)
    ("GET", "/api/v1/activities"): expect(401, 200, 200, 200, 200, 200, 200, 200),
    ("POST", "/api/v1/activities"): expect(401, 201, 201, 201, 201, 403, 201, 201),
    ("GET", f"/api/v1/activities/{ACTIVITY}"): expect(401, 200, 200, 404, 200, 404, 404, 404),
    ("PATCH", f"/api/v1/activities/{ACTIVITY}"): expect(401, 200, 403, 404, 200, 404, 404, 404),
    ("DELETE", f"/api/v1/activities/{ACTIVITY}"): expect(401, 204, 403, 404, 204, 404, 404, 404),
    ("POST", f"/api/v1/activities/{ACTIVITY}/response"): expect(401, 403, 200, 404, 403, 404, 404, 404),
    ("GET", "/api/v1/activity-types"): expect(401, 200, 200, 200, 200, 200, 200, 200),
    ("GET", "/api/v1/projects"): expect(401, 200, 200, 200, 200, 200, 200, 200),
    ("POST", "/api/v1/projects"): expect(401, 403, 403, 403, 201, 403, 403, 201),
    ("GET", "/api/v1/me/calendar-sync"): expect(401, 200, 200, 200, 200, 200, 200, 200),
    ("PUT", "/api/v1/me/calendar-sync"): expect(401, 200, 200, 200, 200, 200, 200, 200),
    # Google's notifications: no session counts, only the channel's headers. Sent here without them: 400 for
    # everyone alike (an unknown channel's 404 and a real one's 204 are in tests/test_webhooks.py)
    ("POST", "/webhooks/google/calendar"): expect(400, 400, 400, 400, 400, 400, 400, 400),
}

ACTIVITY_FORM = {
    "subject": "Edited", "start_date": "2026-03-02", "start_time": "09:00", "end_date": "2026-03-02",
    "end_time": "10:00", "time_zone": "Europe/Amsterdam",
}
# What each route is sent (pages: a form, /api/: JSON); a request the route accepts where one is cheap to make,
# so that "allowed" shows as success rather than as a complaint about the input.
BODIES = {
    ("POST", "/login"): {"email": "nobody@acme.test", "password": PASSWORD},
    ("POST", "/calendar/activities"): ACTIVITY_FORM,
    ("POST", f"/calendar/activities/{ACTIVITY}"): ACTIVITY_FORM,
    ("POST", "/profile/calendar-sync"): {"enabled": "off"},
    ("POST", "/profile/time-zone"): {"time_zone": "Europe/London"},
    ("POST", "/profile/calendar-sync/preview"): {},
    ("POST", "/profile/password"): {"current_password": "not the password", "new_password": "x" * 20,
                                    "confirm_password": "x" * 20},
    ("POST", GOOGLE + "/account"): {"service_account_email": "sync@acme-project.iam.gserviceaccount.com",
                                    "client_id": "104857600000000000099"},
    ("POST", GOOGLE + "/password"): {"key_password": "notasecret"},
    ("POST", GOOGLE + "/activity-types"): {"activity_types": []},
    ("POST", GOOGLE + "/enabled"): {"enabled": "off"},
    ("POST", "/api/v1/activities"): {"subject": "New", "start": "2026-03-03T09:00:00+01:00",
                                     "end": "2026-03-03T10:00:00+01:00"},
    ("PATCH", f"/api/v1/activities/{ACTIVITY}"): {"subject": "Renamed"},
    ("POST", "/api/v1/projects"): {"name": "New project", "tasks": [{"name": "One"}]},
    ("PUT", "/api/v1/me/calendar-sync"): {"enabled": False},
    ("POST", "/profile/api-tokens"): {"name": "Reports", "expires_days": "30"},
    ("POST", f"/calendar/activities/{ACTIVITY}/response"): {"response": "accepted"},
    ("POST", f"/api/v1/activities/{ACTIVITY}/response"): {"response": "accepted"},
    ("POST", GOOGLE + "/participants"): {"participants_can_edit": "on"},
}
# Routes that act on a deleted activity get one.
NEEDS_DELETED_ACTIVITY = {("POST", f"/calendar/trash/{ACTIVITY}/restore")}


def application_routes() -> list[tuple[str, str]]:
    """Every (method, rule) the application answers, from its URL map (static files aside)."""
    app = create_app({"TESTING": True, "SECRET_KEY": "x", "SQLALCHEMY_DATABASE_URI": "sqlite://",
                      "ENCRYPTION_KEY": "hYDDs2tKQ-6jSuX4rrNQNlQhX3DOXVkIOCMUDldOZFc="})
    return sorted({(method, rule.rule) for rule in app.url_map.iter_rules() if rule.endpoint != "static"
                   for method in rule.methods - {"HEAD", "OPTIONS"}}, key=lambda r: (r[1], r[0]))


ROUTES = application_routes()


def test_every_route_is_declared():
    undeclared = [route for route in ROUTES if route not in RULES]
    assert undeclared == [], "declare who may use these routes in RULES: " + repr(undeclared)
    gone = [route for route in RULES if route not in ROUTES]
    assert gone == [], "these declared routes no longer exist: " + repr(gone)


@pytest.fixture
def scene(app, world):
    """The world of conftest plus a participant, and "user"'s activity with them in it."""
    from portal.accounts import add_user
    from portal.models import Organization, User
    from portal.signin_models import ApiToken
    from portal.sync.models import SyncJournalEntry

    with app.app_context():
        acme = db.session.get(Organization, world["acme"])
        participant = add_user(acme, "participant@acme.test", "Pia Participant", "user", PASSWORD)
        db.session.commit()
        ids = {**world, PARTICIPANT: participant.id}
    activity_id = make_activity(app, world[USER], participants=["participant@acme.test"])
    with app.app_context():
        entry = SyncJournalEntry(organization_id=world["acme"], activity_id=activity_id, kind="conflict",
                                 side="portal", field="subject", before="Planning (old)", after="Planning")
        db.session.add(entry)
        db.session.commit()
        token, _secret = ApiToken.issue(db.session.get(User, world[USER]), name="Scripts")
        db.session.add(token)
        db.session.commit()
        ids.update(activity_id=activity_id, entry_id=entry.id, organization_id=world["globex"], token_id=token.id)
    return ids


def delete_activity_now(app, activity_id):
    from portal.activities import delete_activity
    from portal.models import Activity

    with app.app_context():
        delete_activity(db.session.get(Activity, activity_id))
        db.session.commit()


def client_for(app, scene, visitor, api: bool):
    """A test client acting as `visitor`: logged in (pages) or carrying their bearer token (/api/)."""
    from portal.models import User
    from portal.signin_models import ApiToken

    client = app.test_client()
    if visitor == ANON:
        return client, {}
    if api:
        with app.app_context():
            row, token = ApiToken.issue(db.session.get(User, scene[visitor]))
            db.session.add(row)
            db.session.commit()
        return client, {"Authorization": f"Bearer {token}"}
    email = "participant@acme.test" if visitor == PARTICIPANT else EMAILS[visitor]
    response = client.post("/login", data={"email": email, "password": PASSWORD})
    assert response.status_code == 302, response.data
    return client, {}


def fill(rule: str, values: dict) -> str:
    path = rule
    for name in ("activity_id", "entry_id", "organization_id", "token_id"):
        path = path.replace(f"<int:{name}>", str(values[name]))
    assert "<" not in path, f"no value for a part of {rule}: add it to the scene"
    return path


@pytest.mark.parametrize("visitor", VISITORS)
@pytest.mark.parametrize("route", ROUTES, ids=[f"{m} {r}" for m, r in ROUTES])
def test_access(app, scene, visitor, route):
    assert route in RULES, f"{route} has no declared rule (see test_every_route_is_declared)"
    method, rule = route
    api = rule.startswith("/api/")
    if route in NEEDS_DELETED_ACTIVITY:
        delete_activity_now(app, scene["activity_id"])
    client, headers = client_for(app, scene, visitor, api)
    body = BODIES.get(route, {})
    sent = {"json": body} if api else {"data": body}
    response = client.open(fill(rule, scene), method=method, headers=headers,
                           **(sent if method != "GET" else {}))
    expected = RULES[route][visitor]
    assert response.status_code == expected, response.get_data(as_text=True)[:500]
    if visitor == ANON and expected == 302:
        assert "/login" in response.headers["Location"]
    if api and response.status_code >= 400:
        assert response.is_json and response.get_json()["error"]


# --- around the table ---------------------------------------------------------------------------------

def test_api_rejects_unknown_token(api):
    client = api("anonymous")
    response = client.get("/api/v1/activities", headers={"Authorization": "Bearer psa_not-a-token"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_disabled_user_cannot_log_in_or_use_tokens(app, client, auth, api, world):
    from portal.models import User

    token_client = api(USER)
    with app.app_context():
        db.session.get(User, world[USER]).active = False
        db.session.commit()
    response = auth.login("user@acme.test")
    assert response.status_code == 400
    # The same answer as a wrong password: a guesser does not learn that the account exists but is disabled.
    assert b"disabled" not in response.data and b"Logging in failed" in response.data
    assert token_client.get("/api/v1/activities").status_code == 401


def test_wrong_password_is_refused(auth, world):
    response = auth.login("user@acme.test", "wrong")
    assert response.status_code == 400
    assert b"Check your e-mail address and password" in response.data


def test_login_redirect_stays_on_site(client, world):
    response = client.post("/login?next=https://evil.example/", data={"email": "user@acme.test",
                                                                       "password": PASSWORD})
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


def test_logout_ends_the_session(login_as, client):
    login_as(USER)
    assert client.get("/calendar/").status_code == 200
    client.post("/logout")
    assert client.get("/calendar/").status_code == 302


class TestCsrf:
    def test_form_post_without_token_is_refused(self, csrf_app):
        from portal.accounts import add_organization, add_user

        with csrf_app.app_context():
            org = add_organization("Acme")
            add_user(org, "user@acme.test", "Uma", "user", PASSWORD)
            db.session.commit()
        client = csrf_app.test_client()
        response = client.post("/login", data={"email": "user@acme.test", "password": PASSWORD})
        assert response.status_code == 400
        assert b"security token" in response.data

    def test_form_post_with_token_is_accepted(self, csrf_app):
        import re

        from portal.accounts import add_organization, add_user
        from portal.models import Activity

        with csrf_app.app_context():
            org = add_organization("Acme")
            add_user(org, "user@acme.test", "Uma", "user", PASSWORD)
            db.session.commit()
        client = csrf_app.test_client()
        page = client.get("/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        response = client.post("/login", data={"email": "user@acme.test", "password": PASSWORD,
                                               "csrf_token": token})
        assert response.status_code == 302
        calendar = client.get("/calendar/").get_data(as_text=True)
        header_token = re.search(r'"X-CSRFToken": "([^"]+)"', calendar).group(1)
        # htmx sends the token from <body hx-headers>; a post without it is refused, with it accepted.
        refused = client.post("/calendar/activities", data=ACTIVITY_FORM, headers={"HX-Request": "true"})
        assert refused.status_code == 400
        accepted = client.post("/calendar/activities", data=ACTIVITY_FORM,
                               headers={"HX-Request": "true", "X-CSRFToken": header_token})
        assert accepted.status_code == 200
        with csrf_app.app_context():
            assert db.session.query(Activity).count() == 1
