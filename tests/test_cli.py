"""Operator commands."""

from sqlalchemy import select

from portal.extensions import db
from portal.models import Activity, ActivityType, ChangeRecord, Organization, User
from portal.signin_models import ApiToken

NEW_PASSWORD = "long-enough-passphrase"
TYPED = NEW_PASSWORD + "\n"


def test_create_organization_with_standard_types(app, runner):
    result = runner.invoke(args=["create-organization", "Initech"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        org = db.session.scalar(select(Organization).where(Organization.name == "Initech"))
        types = {(t.name, t.is_default, t.is_personal) for t in org.activity_types}
    assert types == {("Internal", True, False), ("Meeting", False, False), ("Customer visit", False, False),
                     ("Personal", False, True)}
    again = runner.invoke(args=["create-organization", "Initech"])
    assert again.exit_code != 0 and "exists already" in again.output


def test_create_user_needs_organization_when_several(app, runner):
    runner.invoke(args=["create-organization", "One"])
    result = runner.invoke(args=["create-user", "a@one.test", "--name", "A", "--password-stdin"], input=TYPED)
    assert result.exit_code == 0, result.output  # the only organization is implied
    runner.invoke(args=["create-organization", "Two"])
    ambiguous = runner.invoke(args=["create-user", "b@two.test", "--name", "B", "--password-stdin"], input=TYPED)
    assert ambiguous.exit_code != 0 and "--organization" in ambiguous.output
    ok = runner.invoke(args=["create-user", "B@Two.test", "--name", "B", "--role", "admin", "--password-stdin", "--organization", "Two"],
                       input=TYPED)
    assert ok.exit_code == 0, ok.output
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == "b@two.test"))
        assert user.role == "admin" and user.organization.name == "Two" and user.check_password(NEW_PASSWORD)
        assert user.password_hash != NEW_PASSWORD


def test_create_user_validates(runner):
    runner.invoke(args=["create-organization", "One"])
    bad_role = runner.invoke(args=["create-user", "a@one.test", "--name", "A", "--password-stdin",
                                   "--role", "owner"])
    assert bad_role.exit_code != 0
    short = runner.invoke(args=["create-user", "a@one.test", "--name", "A", "--password-stdin"], input="short\n")
    assert short.exit_code != 0 and "12 characters" in short.output
    runner.invoke(args=["create-user", "a@one.test", "--name", "A", "--password-stdin"], input=TYPED)
    duplicate = runner.invoke(args=["create-user", "A@one.test", "--name", "A", "--password-stdin"], input=TYPED)
    assert duplicate.exit_code != 0 and "already" in duplicate.output


def test_create_api_token_prints_it_once_and_stores_a_hash(app, runner):
    runner.invoke(args=["create-organization", "One"])
    runner.invoke(args=["create-user", "a@one.test", "--name", "A", "--password-stdin"], input=TYPED)
    result = runner.invoke(args=["create-api-token", "a@one.test"])
    token = result.output.strip()
    assert result.exit_code == 0 and token.startswith("psa_")
    with app.app_context():
        stored = db.session.scalars(select(ApiToken)).one()
        assert stored.token_hash != token and stored.token_hash == ApiToken.hash(token)
    response = app.test_client().get("/api/v1/activities", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    missing = runner.invoke(args=["create-api-token", "nobody@one.test"])
    assert missing.exit_code != 0


def test_seed_demo(app, runner):
    result = runner.invoke(args=["seed-demo"])
    assert result.exit_code == 0, result.output
    assert "anna@demo.example" in result.output and "demo-password" in result.output
    with app.app_context():
        assert db.session.scalar(select(Organization)).name == "Demo Consulting"
        assert {u.role for u in db.session.scalars(select(User))} == {"admin", "user", "helpdesk"}
        activities = db.session.scalars(select(Activity)).all()
        assert len(activities) >= 5 and any(a.is_recurring for a in activities)
        assert any(a.project_task_id for a in activities) and any(a.all_day for a in activities)
        assert db.session.query(ChangeRecord).count() == len(activities)
        assert db.session.query(ActivityType).count() == 4
    again = runner.invoke(args=["seed-demo", "--if-empty"])
    assert again.exit_code == 0 and "not seeded" in again.output
    with app.app_context():
        assert db.session.query(Organization).count() == 1


def test_demo_user_can_log_in(app, runner, client):
    runner.invoke(args=["seed-demo"])
    response = client.post("/login", data={"email": "anna@demo.example", "password": "demo-password"})
    assert response.status_code == 302
    assert "Weekly team meeting" in client.get("/calendar/list").get_data(as_text=True)
