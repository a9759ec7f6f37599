"""Who may reach which route: every route, every kind of visitor."""

import pytest

from tests.helpers import make_activity

ANON, USER, ADMIN, HELPDESK, COLLEAGUE, OTHER, OTHER_ADMIN = (
    "anonymous", "user", "admin", "helpdesk", "colleague", "other", "other_admin")
VISITORS = (ANON, USER, ADMIN, HELPDESK, COLLEAGUE, OTHER, OTHER_ADMIN)

FORM = {
    "subject": "Edited", "start_date": "2026-03-02", "start_time": "09:00", "end_date": "2026-03-02",
    "end_time": "10:00", "time_zone": "Europe/Amsterdam",
}

# route, method, expected status per visitor. The activity belongs to "user"; nobody else takes part.
PAGE_RULES = [
    ("/calendar/", "get", {ANON: 302, USER: 200, ADMIN: 200, HELPDESK: 200, COLLEAGUE: 200, OTHER: 200, OTHER_ADMIN: 200}),
    ("/calendar/list", "get", {ANON: 302, USER: 200, ADMIN: 200, HELPDESK: 200, COLLEAGUE: 200, OTHER: 200, OTHER_ADMIN: 200}),
    ("/calendar/activities/new", "get", {ANON: 302, USER: 200, ADMIN: 200, HELPDESK: 403, COLLEAGUE: 200, OTHER: 200, OTHER_ADMIN: 200}),
    ("/calendar/activities", "post", {ANON: 302, USER: 302, ADMIN: 302, HELPDESK: 403, COLLEAGUE: 302, OTHER: 302, OTHER_ADMIN: 302}),
    ("/calendar/activities/{id}", "get", {ANON: 302, USER: 200, ADMIN: 200, HELPDESK: 404, COLLEAGUE: 404, OTHER: 404, OTHER_ADMIN: 404}),
    ("/calendar/activities/{id}", "post", {ANON: 302, USER: 302, ADMIN: 302, HELPDESK: 404, COLLEAGUE: 404, OTHER: 404, OTHER_ADMIN: 404}),
    ("/calendar/activities/{id}/delete", "post", {ANON: 302, USER: 302, ADMIN: 302, HELPDESK: 404, COLLEAGUE: 404, OTHER: 404, OTHER_ADMIN: 404}),
    ("/calendar/trash", "get", {ANON: 302, USER: 200, ADMIN: 200, HELPDESK: 200, COLLEAGUE: 200, OTHER: 200, OTHER_ADMIN: 200}),
    ("/profile/calendar-sync", "post", {ANON: 302, USER: 302, ADMIN: 302, HELPDESK: 302, COLLEAGUE: 302, OTHER: 302, OTHER_ADMIN: 302}),
    ("/settings/integrations/google-calendar", "get", {ANON: 302, USER: 403, ADMIN: 200, HELPDESK: 403, COLLEAGUE: 403, OTHER: 403, OTHER_ADMIN: 200}),
    ("/profile/calendar-sync", "get", {ANON: 302, USER: 200, ADMIN: 200, HELPDESK: 200, COLLEAGUE: 200, OTHER: 200, OTHER_ADMIN: 200}),
    ("/helpdesk/", "get", {ANON: 302, USER: 403, ADMIN: 403, HELPDESK: 200, COLLEAGUE: 403, OTHER: 403, OTHER_ADMIN: 403}),
    ("/helpdesk/organizations/{org}", "get", {ANON: 302, USER: 403, ADMIN: 403, HELPDESK: 200, COLLEAGUE: 403, OTHER: 403, OTHER_ADMIN: 403}),
]


@pytest.mark.parametrize("visitor", VISITORS)
@pytest.mark.parametrize(("route", "method", "expected"), PAGE_RULES, ids=[f"{m} {r}" for r, m, _ in PAGE_RULES])
def test_page_access(app, login_as, world, visitor, route, method, expected):
    activity_id = make_activity(app, world[USER])
    client = login_as(visitor)
    path = route.format(id=activity_id, org=world["globex"])
    response = getattr(client, method)(path, data=FORM if method == "post" else None)
    assert response.status_code == expected[visitor], response.get_data(as_text=True)[:500]
    if visitor == ANON:
        assert "/login" in response.headers["Location"]


API_RULES = [
    ("/api/v1/activities", "get", {ANON: 401, USER: 200, ADMIN: 200, HELPDESK: 200, COLLEAGUE: 200, OTHER: 200}),
    ("/api/v1/activities", "post", {ANON: 401, USER: 201, ADMIN: 201, HELPDESK: 403, COLLEAGUE: 201, OTHER: 201}),
    ("/api/v1/activities/{id}", "get", {ANON: 401, USER: 200, ADMIN: 200, HELPDESK: 404, COLLEAGUE: 404, OTHER: 404}),
    ("/api/v1/activities/{id}", "patch", {ANON: 401, USER: 200, ADMIN: 200, HELPDESK: 404, COLLEAGUE: 404, OTHER: 404}),
    ("/api/v1/activities/{id}", "delete", {ANON: 401, USER: 204, ADMIN: 204, HELPDESK: 404, COLLEAGUE: 404, OTHER: 404}),
    ("/api/v1/activity-types", "get", {ANON: 401, USER: 200, ADMIN: 200, HELPDESK: 200, COLLEAGUE: 200, OTHER: 200}),
    ("/api/v1/projects", "get", {ANON: 401, USER: 200, ADMIN: 200, HELPDESK: 200, COLLEAGUE: 200, OTHER: 200}),
    ("/api/v1/projects", "post", {ANON: 401, USER: 403, ADMIN: 201, HELPDESK: 403, COLLEAGUE: 403, OTHER: 403}),
]

BODIES = {
    "/api/v1/activities": {"subject": "New", "start": "2026-03-03T09:00:00+01:00",
                           "end": "2026-03-03T10:00:00+01:00"},
    "/api/v1/activities/{id}": {"subject": "Renamed"},
    "/api/v1/projects": {"name": "New project", "tasks": [{"name": "One"}]},
}


@pytest.mark.parametrize("visitor", (ANON, USER, ADMIN, HELPDESK, COLLEAGUE, OTHER))
@pytest.mark.parametrize(("route", "method", "expected"), API_RULES, ids=[f"{m} {r}" for r, m, _ in API_RULES])
def test_api_access(app, api, world, visitor, route, method, expected):
    activity_id = make_activity(app, world[USER])
    client = api(visitor)
    body = BODIES.get(route) if method in ("post", "patch") else None
    response = getattr(client, method)(route.format(id=activity_id), json=body)
    assert response.status_code == expected[visitor], response.get_data(as_text=True)
    if response.status_code >= 400:
        assert response.is_json and response.get_json()["error"]


def test_api_rejects_unknown_token(api):
    client = api("anonymous")
    response = client.get("/api/v1/activities", headers={"Authorization": "Bearer psa_not-a-token"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_disabled_user_cannot_log_in_or_use_tokens(app, client, auth, api, world):
    from portal.extensions import db
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
                                                                       "password": "correct-horse-battery"})
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
        from portal.extensions import db

        with csrf_app.app_context():
            org = add_organization("Acme")
            add_user(org, "user@acme.test", "Uma", "user", "correct-horse-battery")
            db.session.commit()
        client = csrf_app.test_client()
        response = client.post("/login", data={"email": "user@acme.test", "password": "correct-horse-battery"})
        assert response.status_code == 400
        assert b"security token" in response.data

    def test_form_post_with_token_is_accepted(self, csrf_app):
        import re

        from portal.accounts import add_organization, add_user
        from portal.extensions import db
        from portal.models import Activity

        with csrf_app.app_context():
            org = add_organization("Acme")
            add_user(org, "user@acme.test", "Uma", "user", "correct-horse-battery")
            db.session.commit()
        client = csrf_app.test_client()
        page = client.get("/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        response = client.post("/login", data={"email": "user@acme.test", "password": "correct-horse-battery",
                                               "csrf_token": token})
        assert response.status_code == 302
        calendar = client.get("/calendar/").get_data(as_text=True)
        header_token = re.search(r'"X-CSRFToken": "([^"]+)"', calendar).group(1)
        # htmx sends the token from <body hx-headers>; a post without it is refused, with it accepted.
        refused = client.post("/calendar/activities", data=FORM, headers={"HX-Request": "true"})
        assert refused.status_code == 400
        accepted = client.post("/calendar/activities", data=FORM,
                               headers={"HX-Request": "true", "X-CSRFToken": header_token})
        assert accepted.status_code == 200
        with csrf_app.app_context():
            assert db.session.query(Activity).count() == 1
