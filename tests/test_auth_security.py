"""Sessions that end, password guessing stopped, and a password policy."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from portal import accounts, create_app
from portal.extensions import db
from portal.models import User, utcnow
from portal.signin_models import LoginFailure, LoginSession
from tests.conftest import EMAILS, PASSWORD

GOOD_NEW_PASSWORD = "plum-orbit-cadence-47"


def csrf_token(response) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', response.get_data(as_text=True)).group(1)


def csrf_login(client, email, password=PASSWORD):
    token = csrf_token(client.get("/login"))
    return client.post("/login", data={"email": email, "password": password, "csrf_token": token})


def login_error(response) -> str:
    # The refusal is shown as the pages' error message (the `notice` macro): "Error:" then the reason.
    match = re.search(r'<p class="message error" role="alert">\s*<span class="message-kind">Error:</span>\s*([^<]*)</p>',
                      response.get_data(as_text=True))
    return match.group(1).strip() if match else ""


def logged_in(client) -> bool:
    return client.get("/calendar/").status_code == 200


# --- 4. sessions end on the server ------------------------------------------------------------------------

def test_a_session_cookie_captured_before_logout_is_dead_after_it_and_so_is_its_csrf_token(csrf_app, world):
    client = csrf_app.test_client()
    assert csrf_login(client, EMAILS["user"]).status_code == 302
    captured = client.get_cookie("session").value
    token = csrf_token(client.get("/profile/calendar-sync"))
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302

    thief = csrf_app.test_client()
    thief.set_cookie("session", captured)
    response = thief.get("/calendar/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    thief.set_cookie("session", captured)
    refused = thief.post("/profile/time-zone", data={"time_zone": "UTC", "csrf_token": token})
    assert refused.status_code == 400 and "security token" in refused.get_data(as_text=True)
    # The old token no longer passes even where no login is needed.
    thief.set_cookie("session", captured)
    again = thief.post("/login", data={"email": EMAILS["user"], "password": PASSWORD, "csrf_token": token})
    assert again.status_code == 400 and "security token" in again.get_data(as_text=True)
    with csrf_app.app_context():
        assert db.session.get(User, world["user"]).time_zone == "Europe/Amsterdam"


def test_logging_out_ends_only_that_session(app, world):
    first, second = app.test_client(), app.test_client()
    for client in (first, second):
        assert client.post("/login", data={"email": EMAILS["user"], "password": PASSWORD}).status_code == 302
    first.post("/logout")
    assert not logged_in(first) and logged_in(second)


def test_disabling_a_user_ends_their_sessions(app, world):
    client = app.test_client()
    client.post("/login", data={"email": EMAILS["user"], "password": PASSWORD})
    assert logged_in(client)
    with app.app_context():
        accounts.set_active(db.session.get(User, world["user"]), False)
        db.session.commit()
        assert db.session.scalars(select(LoginSession).where(LoginSession.user_id == world["user"])).all() == []
    assert not logged_in(client)


def test_a_disabled_users_cookie_stops_working_even_if_the_row_is_switched_directly(app, world):
    client = app.test_client()
    client.post("/login", data={"email": EMAILS["user"], "password": PASSWORD})
    with app.app_context():
        db.session.execute(update(User).where(User.id == world["user"]).values(active=False))
        db.session.commit()
    assert not logged_in(client)


def test_a_session_ends_on_the_server_after_its_lifetime(app, world):
    client = app.test_client()
    client.post("/login", data={"email": EMAILS["user"], "password": PASSWORD})
    with app.app_context():
        db.session.execute(update(LoginSession).values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    assert not logged_in(client)


def test_log_out_everywhere_ends_every_session_of_the_user_only(app, world):
    mine, other_device, colleague = app.test_client(), app.test_client(), app.test_client()
    for client, who in ((mine, "user"), (other_device, "user"), (colleague, "colleague")):
        client.post("/login", data={"email": EMAILS[who], "password": PASSWORD})
    page = mine.get("/profile/security").get_data(as_text=True)
    assert "Log out everywhere" in page and "2 sessions" in page
    response = mine.post("/profile/sessions/end-all")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert not logged_in(mine) and not logged_in(other_device) and logged_in(colleague)


# --- 5. password guessing -----------------------------------------------------------------------------------

@pytest.fixture
def hash_checks(monkeypatch):
    """Every password hash the login computes, counted."""
    calls = []
    original = accounts.check_password_hash

    def counting(pwhash, password):
        calls.append(pwhash)
        return original(pwhash, password)

    monkeypatch.setattr(accounts, "check_password_hash", counting)
    return calls


def test_one_message_and_one_hash_for_unknown_known_and_disabled(app, world, client, hash_checks):
    with app.app_context():
        db.session.get(User, world["colleague"]).active = False
        db.session.commit()
    answers = {}
    for case, email, password in (("unknown", "nobody@acme.test", PASSWORD),
                                  ("wrong", EMAILS["user"], "not-the-password"),
                                  ("disabled", EMAILS["colleague"], PASSWORD)):
        hash_checks.clear()
        response = client.post("/login", data={"email": email, "password": password})
        answers[case] = (response.status_code, login_error(response))
        assert len(hash_checks) == 1, case
    assert answers["unknown"] == answers["wrong"] == answers["disabled"]
    assert answers["wrong"] == (400, accounts.LOGIN_FAILED)
    assert "disabled" not in accounts.LOGIN_FAILED


def test_the_right_password_is_refused_while_the_account_is_throttled(app, world, client, hash_checks):
    limit = app.config["LOGIN_MAX_FAILURES_PER_ACCOUNT"]
    for _ in range(limit):
        assert client.post("/login", data={"email": EMAILS["user"], "password": "guess"}).status_code == 400
    hash_checks.clear()
    response = client.post("/login", data={"email": EMAILS["user"], "password": PASSWORD})
    assert response.status_code == 400 and login_error(response) == accounts.LOGIN_FAILED
    assert len(hash_checks) == 1  # a throttled attempt takes as long as any other
    # Another account from the same address is not held up by it.
    assert client.post("/login", data={"email": EMAILS["colleague"], "password": PASSWORD}).status_code == 302


def test_the_throttle_lifts_when_the_failures_leave_the_window(app, world, client):
    for _ in range(app.config["LOGIN_MAX_FAILURES_PER_ACCOUNT"]):
        client.post("/login", data={"email": EMAILS["user"], "password": "guess"})
    assert client.post("/login", data={"email": EMAILS["user"], "password": PASSWORD}).status_code == 400
    with app.app_context():
        window = timedelta(seconds=app.config["LOGIN_THROTTLE_WINDOW_SECONDS"])
        db.session.execute(update(LoginFailure).values(failed_at=utcnow() - window - timedelta(seconds=1)))
        db.session.commit()
    assert client.post("/login", data={"email": EMAILS["user"], "password": PASSWORD}).status_code == 302
    with app.app_context():  # a success forgets the account's failures
        assert db.session.scalars(select(LoginFailure).where(LoginFailure.account == EMAILS["user"])).all() == []


def test_an_address_trying_many_accounts_is_throttled_and_others_are_not(app, world):
    app.config["LOGIN_MAX_FAILURES_PER_ADDRESS"] = 4
    attacker = app.test_client()
    attacker.environ_base["REMOTE_ADDR"] = "203.0.113.9"
    for n in range(4):
        attacker.post("/login", data={"email": f"guess{n}@acme.test", "password": "guess"})
    refused = attacker.post("/login", data={"email": EMAILS["user"], "password": PASSWORD})
    assert refused.status_code == 400 and login_error(refused) == accounts.LOGIN_FAILED
    elsewhere = app.test_client()
    elsewhere.environ_base["REMOTE_ADDR"] = "198.51.100.7"
    assert elsewhere.post("/login", data={"email": EMAILS["user"], "password": PASSWORD}).status_code == 302


def test_the_throttle_holds_across_processes(app, world, tmp_path):
    for _ in range(app.config["LOGIN_MAX_FAILURES_PER_ACCOUNT"]):
        app.test_client().post("/login", data={"email": EMAILS["user"], "password": "guess"})
    other_process = create_app({**{k: app.config[k] for k in ("TESTING", "SECRET_KEY", "ENCRYPTION_KEY",
                                                               "SQLALCHEMY_DATABASE_URI", "PASSWORD_HASH_METHOD")},
                                "WTF_CSRF_ENABLED": False})
    response = other_process.test_client().post("/login", data={"email": EMAILS["user"], "password": PASSWORD})
    assert response.status_code == 400
    with other_process.app_context():
        db.session.remove()
        db.engine.dispose()


def test_wrong_current_passwords_on_the_profile_count_as_failures(app, login_as):
    client = login_as("user")
    for _ in range(app.config["LOGIN_MAX_FAILURES_PER_ACCOUNT"]):
        response = client.post("/profile/password", data={"current_password": "guess",
                                                          "new_password": GOOD_NEW_PASSWORD,
                                                          "confirm_password": GOOD_NEW_PASSWORD})
        assert response.status_code == 422
    response = client.post("/profile/password", data={"current_password": PASSWORD,
                                                      "new_password": GOOD_NEW_PASSWORD,
                                                      "confirm_password": GOOD_NEW_PASSWORD})
    assert response.status_code == 422
    with app.app_context():
        assert db.session.scalar(select(User).where(User.email == EMAILS["user"])).check_password(PASSWORD)


# --- 13. passwords ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("password", "problem"), [
    ("short-1", "at least 12 characters"),
    ("qwertyuiop123", "too common"),
    ("Password123456!", "too common"),
    ("iloveyou2024!!", "too common"),
    ("aaaaaaaaaaaaaaaa", "too few different characters"),
    ("ab" * 7, "too few different characters"),
    ("uma@acme.test", "e-mail"),
    ("umauser-umauser", None),
    ("x" * 10 + "y" * 300, "at most"),
    (GOOD_NEW_PASSWORD, None),
])
def test_password_policy(app, password, problem):
    with app.app_context():
        found = accounts.password_problem(password, "uma@acme.test")
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_change_password_needs_the_current_one_and_a_good_new_one(app, login_as):
    client = login_as("user")
    page = client.get("/profile/security").get_data(as_text=True)
    assert 'name="current_password"' in page
    for form, message in (
        ({"current_password": "wrong", "new_password": GOOD_NEW_PASSWORD, "confirm_password": GOOD_NEW_PASSWORD},
         "current password is not right"),
        ({"current_password": PASSWORD, "new_password": "password123456", "confirm_password": "password123456"},
         "too common"),
        ({"current_password": PASSWORD, "new_password": GOOD_NEW_PASSWORD, "confirm_password": "other"},
         "do not match"),
    ):
        response = client.post("/profile/password", data=form)
        assert response.status_code == 422 and message in response.get_data(as_text=True), form
        assert GOOD_NEW_PASSWORD not in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(User).where(User.email == EMAILS["user"])).check_password(PASSWORD)


def test_changing_the_password_ends_the_other_sessions_and_keeps_this_one(app, world, login_as):
    client = login_as("user")
    other_device = app.test_client()
    other_device.post("/login", data={"email": EMAILS["user"], "password": PASSWORD})
    response = client.post("/profile/password", data={"current_password": PASSWORD,
                                                      "new_password": GOOD_NEW_PASSWORD,
                                                      "confirm_password": GOOD_NEW_PASSWORD})
    assert response.status_code == 302
    assert logged_in(client) and not logged_in(other_device)
    fresh = app.test_client()
    assert fresh.post("/login", data={"email": EMAILS["user"], "password": PASSWORD}).status_code == 400
    assert fresh.post("/login", data={"email": EMAILS["user"], "password": GOOD_NEW_PASSWORD}).status_code == 302


def test_create_user_reads_the_password_from_a_prompt_not_the_command_line(app, runner):
    runner.invoke(args=["create-organization", "One"])
    on_command_line = runner.invoke(args=["create-user", "a@one.test", "--name", "A", "--password", GOOD_NEW_PASSWORD])
    assert on_command_line.exit_code != 0 and "No such option" in on_command_line.output
    prompted = runner.invoke(args=["create-user", "a@one.test", "--name", "A"],
                             input=f"{GOOD_NEW_PASSWORD}\n{GOOD_NEW_PASSWORD}\n")
    assert prompted.exit_code == 0, prompted.output
    assert GOOD_NEW_PASSWORD not in prompted.output
    piped = runner.invoke(args=["create-user", "b@one.test", "--name", "B", "--password-stdin"],
                          input=f"{GOOD_NEW_PASSWORD}\n")
    assert piped.exit_code == 0, piped.output
    weak = runner.invoke(args=["create-user", "c@one.test", "--name", "C", "--password-stdin"],
                         input="password123456\n")
    assert weak.exit_code != 0 and "too common" in weak.output
    with app.app_context():
        users = db.session.scalars(select(User).order_by(User.email)).all()
        assert [u.email for u in users] == ["a@one.test", "b@one.test"]
        assert all(u.check_password(GOOD_NEW_PASSWORD) for u in users)
