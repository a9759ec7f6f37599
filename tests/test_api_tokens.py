"""API tokens: a name, an expiry, last use, revocation from the profile page and the command line; the
secret is shown once and never listed."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import User, utcnow
from portal.signin_models import ApiToken

PAGE = "/profile/api-tokens"


def issue(app, user_id, **fields) -> tuple[int, str]:
    with app.app_context():
        row, token = ApiToken.issue(db.session.get(User, user_id), name=fields.pop("name", "script"))
        for name, value in fields.items():
            setattr(row, name, value)
        db.session.add(row)
        db.session.commit()
        return row.id, token


def token_row(app, token_id) -> ApiToken:
    with app.app_context():
        row = db.session.get(ApiToken, token_id)
        db.session.expunge(row)
        return row


def call(client, token):
    return client.get("/api/v1/activity-types", headers={"Authorization": f"Bearer {token}"})


# --- the API ---------------------------------------------------------------------------------------


def test_an_expired_token_is_refused_with_a_clear_message(app, client, world):
    _, token = issue(app, world["user"], expires_at=utcnow() - timedelta(minutes=1))
    response = call(client, token)
    assert response.status_code == 401
    assert "expired" in response.get_json()["error"]


def test_a_revoked_token_is_refused_with_a_clear_message(app, client, world):
    _, token = issue(app, world["user"], revoked_at=utcnow())
    response = call(client, token)
    assert response.status_code == 401
    assert "revoked" in response.get_json()["error"]


def test_last_use_is_written_at_most_once_a_minute(app, client, world):
    token_id, token = issue(app, world["user"])
    assert call(client, token).status_code == 200
    first = token_row(app, token_id).last_used_at
    assert first is not None and utcnow() - first < timedelta(seconds=5)
    assert call(client, token).status_code == 200
    assert token_row(app, token_id).last_used_at == first  # no write for a use within the minute
    with app.app_context():
        db.session.get(ApiToken, token_id).last_used_at = utcnow() - timedelta(minutes=2)
        db.session.commit()
    assert call(client, token).status_code == 200
    assert utcnow() - token_row(app, token_id).last_used_at < timedelta(seconds=5)


def test_issued_tokens_expire_by_default(app, world):
    with app.app_context():
        row, _ = ApiToken.issue(db.session.get(User, world["user"]), name="x")
        assert row.expires_at is not None
        assert timedelta(days=89) < row.expires_at - utcnow() <= timedelta(days=90)


# --- the profile page ------------------------------------------------------------------------------


def test_the_profile_creates_a_token_shows_it_once_and_lists_it_without_its_secret(app, login_as, world):
    client = login_as("user")
    response = client.post(PAGE, data={"name": "Reporting script", "expires_days": "30"})
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_data(as_text=True)
    token = re.search(r"psa_[A-Za-z0-9_-]{20,}", body).group(0)
    assert call(app.test_client(), token).status_code == 200
    listing = client.get(PAGE).get_data(as_text=True)
    assert "Reporting script" in listing and token not in listing and "psa_" not in listing
    with app.app_context():
        row = db.session.scalars(select(ApiToken)).one()
        assert row.name == "Reporting script" and row.token_hash not in listing
        assert timedelta(days=29) < row.expires_at - utcnow() <= timedelta(days=30)


@pytest.mark.parametrize(("data", "field"), [
    ({"name": "", "expires_days": "30"}, "name"),
    ({"name": "x" * 101, "expires_days": "30"}, "name"),
    ({"name": "ok", "expires_days": "0"}, "expires_days"),
    ({"name": "ok", "expires_days": "366"}, "expires_days"),
    ({"name": "ok", "expires_days": "soon"}, "expires_days"),
])
def test_bad_token_input_is_a_422_that_says_what_is_wrong(app, login_as, world, data, field):
    response = login_as("user").post(PAGE, data=data)
    assert response.status_code == 422
    assert f'id="error-{field}"' in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalars(select(ApiToken)).all() == []


def test_the_profile_revokes_the_users_own_token(app, login_as, world, client):
    token_id, token = issue(app, world["user"], name="old script")
    response = login_as("user").post(f"{PAGE}/{token_id}/revoke")
    assert response.status_code == 302
    assert token_row(app, token_id).revoked_at is not None
    assert call(app.test_client(), token).status_code == 401


def test_nobody_revokes_or_sees_another_users_token(app, login_as, world):
    token_id, token = issue(app, world["colleague"], name="colleague's script")
    client = login_as("admin")
    assert "colleague&#39;s script" not in client.get(PAGE).get_data(as_text=True)
    assert client.post(f"{PAGE}/{token_id}/revoke").status_code == 404
    assert token_row(app, token_id).revoked_at is None
    assert call(app.test_client(), token).status_code == 200


def test_a_user_has_a_bounded_number_of_tokens(app, login_as, world):
    for index in range(app.config["API_TOKEN_LIMIT"]):
        issue(app, world["user"], name=f"t{index}")
    response = login_as("user").post(PAGE, data={"name": "one more", "expires_days": "30"})
    assert response.status_code == 422
    assert "revoke" in response.get_data(as_text=True).lower()


# --- the command line ------------------------------------------------------------------------------


def test_cli_creates_named_expiring_tokens_lists_them_without_secrets_and_revokes(app, runner, world):
    created = runner.invoke(args=["create-api-token", "user@acme.test", "--name", "nightly export",
                                  "--expires-days", "7"])
    assert created.exit_code == 0, created.output
    token = created.output.strip().splitlines()[-1]
    assert token.startswith("psa_")
    with app.app_context():
        row = db.session.scalars(select(ApiToken)).one()
        assert row.name == "nightly export"
        assert timedelta(days=6) < row.expires_at - utcnow() <= timedelta(days=7)
        token_id, token_hash = row.id, row.token_hash
    listed = runner.invoke(args=["list-api-tokens", "user@acme.test"])
    assert listed.exit_code == 0, listed.output
    assert "nightly export" in listed.output and str(token_id) in listed.output
    assert token not in listed.output and token_hash not in listed.output
    revoked = runner.invoke(args=["revoke-api-token", str(token_id)])
    assert revoked.exit_code == 0, revoked.output
    assert call(app.test_client(), token).status_code == 401
    assert "revoked" in runner.invoke(args=["list-api-tokens", "user@acme.test"]).output


def test_cli_refuses_bad_expiry_and_unknown_tokens(app, runner, world):
    refused = runner.invoke(args=["create-api-token", "user@acme.test", "--expires-days", "1000"])
    assert refused.exit_code != 0 and "365" in refused.output
    assert runner.invoke(args=["revoke-api-token", "999"]).exit_code != 0
    with app.app_context():
        assert db.session.scalars(select(ApiToken)).all() == []
