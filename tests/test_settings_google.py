"""Settings > Integrations > Google Calendar against the Google emulator (real google-auth and
google-api-python-client over HTTP): each set-up mistake yields its own cause and fix, on the page and
from the CLI, and a correct set-up switches the integration on."""

from __future__ import annotations

import base64
import io
import json
import socket

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import AuditEntry, GoogleIntegration
from portal.sync.google import GOOGLE_SCOPES, TOKENS

PAGE = "/settings/integrations/google-calendar"
SA_EMAIL = "portal-sync@acme-project.iam.gserviceaccount.com"
OTHER_SA_EMAIL = "someone-else@acme-project.iam.gserviceaccount.com"
CLIENT_ID = "104857600000000000001"
# The organization's switch states its position in words (see the `switch` macro).
SWITCH_ON = 'id="organization-sync-state" class="switch-state">On<'
SWITCH_OFF = 'id="organization-sync-state" class="switch-state">Off<'
ACME_USERS = ("admin@acme.test", "user@acme.test", "colleague@acme.test", "helpdesk@acme.test")


@pytest.fixture
def google(emulator):
    """The emulator, emptied, with the app pointed at it (the shared fixture, under this module's name)."""
    return emulator


@pytest.fixture
def workspace(google):
    """A Workspace set up right: Acme's users, the service account and its domain-wide delegation."""
    for email in ACME_USERS:
        google.add_user(email)
    account = google.add_service_account(client_id=CLIENT_ID, email=SA_EMAIL)
    google.delegate(CLIENT_ID, GOOGLE_SCOPES)
    return account


def p12_of(account) -> bytes:
    return base64.b64decode(account["p12_base64"])


def json_of(account) -> bytes:
    return json.dumps(account["json_key"]).encode()


def upload(client, data: bytes, name="key.p12", password="", **headers):
    return client.post(PAGE + "/key", data={"key_file": (io.BytesIO(data), name), "key_password": password},
                       content_type="multipart/form-data", headers=headers)


def set_up(client, account, *, email=SA_EMAIL, key: bytes | None = None):
    response = client.post(PAGE + "/account", data={"service_account_email": email, "client_id": CLIENT_ID})
    assert response.status_code == 302, response.get_data(as_text=True)
    response = upload(client, key if key is not None else p12_of(account))
    assert response.status_code == 302, response.get_data(as_text=True)


def integration_row(app, organization_id) -> GoogleIntegration | None:
    with app.app_context():
        row = db.session.scalar(select(GoogleIntegration).where(GoogleIntegration.organization_id == organization_id))
        if row is not None:
            db.session.expunge(row)
        return row


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --- the happy path ---------------------------------------------------------------------------------


def test_correct_p12_setup_switches_the_integration_on(app, login_as, workspace, world):
    client = login_as("admin")
    set_up(client, workspace)
    response = client.post(PAGE + "/enabled", data={"enabled": "on"})
    assert response.status_code == 302
    page = client.get(PAGE).get_data(as_text=True)
    assert "The integration is on. Connection test passed as admin@acme.test." in page
    assert SWITCH_ON in page
    assert 'aria-checked="true"' in page
    row = integration_row(app, world["acme"])
    assert row.enabled and row.sync_allowed and row.error_code is None and row.last_test_ok
    assert row.key_kind == "p12" and row.client_id == CLIENT_ID
    # What was understood of the key is shown.
    assert row.key_fingerprint in page and row.key_id in page
    assert "Certificate valid" in page and row.key_valid_until.strftime("%Y-%m-%d") in page


def test_correct_json_setup_takes_email_client_id_and_project_from_the_key(app, login_as, workspace, world):
    client = login_as("admin")
    response = upload(client, json_of(workspace), "key.json")
    assert response.status_code == 302
    row = integration_row(app, world["acme"])
    assert (row.key_kind, row.service_account_email, row.client_id, row.project_id) == (
        "json", SA_EMAIL, CLIENT_ID, "emulated-project")
    page = client.get(PAGE).get_data(as_text=True)
    assert "emulated-project" in page and "JSON keys have no password" in page
    response = client.post(PAGE + "/enabled", data={"enabled": "on"}, headers={"HX-Request": "true"})
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert "<html" not in body and SWITCH_ON in body


def test_connection_test_reads_the_chosen_calendar(app, login_as, workspace, world):
    client = login_as("admin")
    set_up(client, workspace)
    response = client.post(PAGE + "/test", data={"test_email": "colleague@acme.test"})
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert "Connection test passed" in body and "colleague@acme.test" in body
    assert not integration_row(app, world["acme"]).enabled  # a test alone switches nothing on


def test_a_delegation_with_the_broad_calendar_scope_works_and_the_page_says_so(app, login_as, google, workspace,
                                                                              world):
    # Many admins authorized `https://www.googleapis.com/auth/calendar` (what many guides say): the portal
    # uses it, and says the narrower scope is enough.
    broad = "https://www.googleapis.com/auth/calendar"
    google.control("DELETE", "/delegations", {"client_id": CLIENT_ID})
    google.delegate(CLIENT_ID, [broad])
    client = login_as("admin")
    set_up(client, workspace)
    body = client.post(PAGE + "/test", data={"test_email": "colleague@acme.test"}).get_data(as_text=True)
    assert "Connection test passed" in body
    assert f"Scope in use: <code>{broad}</code>" in body and "allows more than the portal needs" in body
    assert client.post(PAGE + "/enabled", data={"enabled": "on"}).status_code in (200, 302)
    assert integration_row(app, world["acme"]).enabled
    google.delegate(CLIENT_ID, GOOGLE_SCOPES)  # narrowed as advised: the narrow scope is used again
    google.control("DELETE", "/delegations", {"client_id": CLIENT_ID, "scopes": [broad]})
    TOKENS.forget()
    body = client.post(PAGE + "/test", data={"test_email": "colleague@acme.test"}).get_data(as_text=True)
    assert "Connection test passed" in body and f"Scope in use: <code>{GOOGLE_SCOPES[0]}</code>" in body
    assert "allows more than the portal needs" not in body


def test_switching_off_stops_sync_at_once(app, login_as, workspace, world):
    client = login_as("admin")
    set_up(client, workspace)
    client.post(PAGE + "/enabled", data={"enabled": "on"})
    with app.app_context():  # a token as the sync obtains and keeps them
        from portal.integration import calendar_client

        calendar_client(db.session.get(GoogleIntegration, integration_row(app, world["acme"]).id),
                        "admin@acme.test").authorize()
    assert len(TOKENS) == 1
    response = client.post(PAGE + "/enabled", data={"enabled": "off"}, headers={"HX-Request": "true"})
    assert response.status_code == 200 and "nothing is synchronized" in response.get_data(as_text=True)
    row = integration_row(app, world["acme"])
    assert not row.enabled and not row.sync_allowed
    assert len(TOKENS) == 0  # cached tokens are dropped with it


def test_delegation_values_are_shown_with_a_copy_button(login_as, workspace):
    client = login_as("admin")
    set_up(client, workspace)
    page = client.get(PAGE).get_data(as_text=True)
    assert f'<code id="delegation-client-id">{CLIENT_ID}</code>' in page
    assert f'<code id="delegation-scopes">{",".join(GOOGLE_SCOPES)}</code>' in page
    assert 'data-copy="delegation-client-id"' in page and 'data-copy="delegation-scopes"' in page  # portal.js copies


# --- each failure: its own cause and fix ------------------------------------------------------------


def _wrong_key(google, app, client, account):
    other = google.add_service_account(client_id="104857600000000000002", email=OTHER_SA_EMAIL)
    set_up(client, account, key=p12_of(other))


def _deleted_key(google, app, client, account):
    set_up(client, account)
    google.add_service_account(client_id=CLIENT_ID, email=SA_EMAIL)  # Google now holds only a new key


def _no_delegation(google, app, client, account):
    google.control("DELETE", "/delegations", {"client_id": CLIENT_ID})
    set_up(client, account)


def _incomplete_scopes(google, app, client, account):
    google.control("DELETE", "/delegations", {"client_id": CLIENT_ID})
    google.delegate(CLIENT_ID, ["https://www.googleapis.com/auth/calendar.readonly"])
    set_up(client, account)


def _not_a_workspace_user(google, app, client, account):
    set_up(client, account)
    return "stranger@acme.test"


def _api_not_enabled(google, app, client, account):
    set_up(client, account)
    google.add_fault(kind="error", status=403, reason="accessNotConfigured", domain="usageLimits",
                     path_regex="/calendars/",
                     message="Google Calendar API has not been used in project 123 before or it is disabled.")


def _unreachable(google, app, client, account):
    set_up(client, account)
    app.config.update(GOOGLE_TOKEN_URI=closed_port_url() + "/token")


# scenario, code, level, words of the cause, words of the fix
FAILURES = [
    (_wrong_key, "invalid_jwt_signature", "integration", "does not belong to the service account", "Keys"),
    (_deleted_key, "invalid_jwt_signature", "integration", "or it was deleted", "add a new key"),
    (_no_delegation, "delegation_missing", "integration", "Domain-wide delegation is missing for client ID "
     + CLIENT_ID, ",".join(GOOGLE_SCOPES)),
    (_incomplete_scopes, "delegation_missing", "integration", "does not include all the scopes",
     "Manage domain-wide delegation"),
    (_not_a_workspace_user, "unknown_user", "user", "stranger@acme.test is not a user of the Google Workspace",
     "E-mail addresses must be the same in both systems"),
    (_api_not_enabled, "api_not_enabled", "integration", "The Google Calendar API is not enabled",
     "APIs &amp; Services"),
    (_unreachable, "unreachable", "transient", "Google could not be reached", "firewall"),
]
IDS = [f[1] + ("" if i not in (1, 3) else "-" + f[0].__name__.strip("_")) for i, f in enumerate(FAILURES)]


@pytest.mark.parametrize(("scenario", "code", "level", "cause", "fix"), FAILURES, ids=IDS)
def test_connection_test_names_cause_and_fix(app, login_as, google, workspace, world, scenario, code, level, cause, fix):
    client = login_as("admin")
    email = scenario(google, app, client, workspace) or "admin@acme.test"
    response = client.post(PAGE + "/test", data={"test_email": email})
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert f"Connection test failed as {email}" in body
    assert cause in body and fix in body
    row = integration_row(app, world["acme"])
    assert row.last_test_ok is False
    if level == "integration":  # the organization's banner shows it, with its time, until fixed
        assert row.error_code == code and cause in body
        page = client.get(PAGE).get_data(as_text=True)
        assert 'id="integration-error"' in page and "is paused" in page
    else:
        assert row.error_code is None
    with app.app_context():
        entry = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "connection_tested")).one()
        assert entry.details == {"email": email, "ok": False, "error": code}


@pytest.mark.parametrize(("scenario", "code", "level", "cause", "fix"), FAILURES, ids=IDS)
def test_switching_on_runs_the_test_and_stays_off_with_the_reason(app, login_as, google, workspace, world, scenario,
                                                                  code, level, cause, fix):
    client = login_as("admin")
    email = scenario(google, app, client, workspace) or "admin@acme.test"
    response = client.post(PAGE + "/enabled", data={"enabled": "on", "test_email": email},
                           headers={"HX-Request": "true"})
    assert response.status_code == 422  # htmx swaps 422 in: the reason appears in place
    body = response.get_data(as_text=True)
    assert "The integration stays off" in body and cause in body and fix in body
    assert SWITCH_OFF in body
    assert not integration_row(app, world["acme"]).enabled


@pytest.mark.parametrize(("scenario", "code", "level", "cause", "fix"), FAILURES, ids=IDS)
def test_cli_exits_non_zero_with_cause_and_fix(app, login_as, google, workspace, world, tmp_path, scenario, code, level,
                                               cause, fix):
    client = login_as("admin")
    email = scenario(google, app, client, workspace) or "admin@acme.test"
    key_path = tmp_path / "key.p12"
    row = integration_row(app, world["acme"])
    with app.app_context():
        from portal.integration import decrypt

        key_path.write_bytes(decrypt(db.session.get(GoogleIntegration, row.id).key_ciphertext))
    result = app.test_cli_runner().invoke(args=[
        "configure-google", "--organization", "Acme", "--service-account-email", row.service_account_email,
        "--key-file", str(key_path), "--test-email", email, "--enable"])
    assert result.exit_code == 1, result.output
    assert cause.replace("&amp;", "&") in result.output and fix.replace("&amp;", "&") in result.output
    assert f"(code {code})" in result.output
    assert not integration_row(app, world["acme"]).enabled


def test_banner_clears_once_the_cause_is_fixed(app, login_as, google, workspace, world):
    client = login_as("admin")
    _no_delegation(google, app, client, workspace)
    client.post(PAGE + "/test", data={"test_email": "admin@acme.test"})
    assert integration_row(app, world["acme"]).is_paused
    google.delegate(CLIENT_ID, GOOGLE_SCOPES)
    client.post(PAGE + "/enabled", data={"enabled": "on"})
    row = integration_row(app, world["acme"])
    assert row.enabled and row.error_code is None and row.sync_allowed
    assert 'id="integration-error"' not in client.get(PAGE).get_data(as_text=True)


def test_a_settings_change_lifts_the_pause(app, login_as, google, workspace, world):
    client = login_as("admin")
    _wrong_key(google, app, client, workspace)
    client.post(PAGE + "/test", data={"test_email": "admin@acme.test"})
    assert integration_row(app, world["acme"]).is_paused
    upload(client, p12_of(workspace))
    row = integration_row(app, world["acme"])
    assert row.error_code == "invalid_jwt_signature" and not row.is_paused  # shown until the next test or cycle
    assert "Settings changed since" in client.get(PAGE).get_data(as_text=True)


# --- the CLI ----------------------------------------------------------------------------------------


def test_cli_configures_and_enables(app, workspace, world, tmp_path):
    key_path = tmp_path / "acme.p12"
    key_path.write_bytes(p12_of(workspace))
    result = app.test_cli_runner().invoke(args=[
        "configure-google", "--organization", "Acme", "--service-account-email", SA_EMAIL,
        "--key-file", str(key_path), "--key-password", "notasecret", "--client-id", CLIENT_ID,
        "--sync-types", "Meeting,Customer visit", "--enable"])
    assert result.exit_code == 0, result.output
    assert "Connection test passed as admin@acme.test" in result.output
    assert "The integration is on." in result.output
    assert f"client ID {CLIENT_ID}, scopes {','.join(GOOGLE_SCOPES)}" in result.output
    assert "notasecret" not in result.output
    row = integration_row(app, world["acme"])
    assert row.enabled and row.client_id == CLIENT_ID
    with app.app_context():
        from portal.models import Organization

        acme = db.session.get(Organization, world["acme"])
        assert sorted(t.name for t in acme.activity_types if t.sync_to_google) == ["Customer visit", "Meeting"]
        actions = [e.action for e in db.session.scalars(select(AuditEntry).order_by(AuditEntry.id))]
        assert actions == ["key_uploaded", "service_account_changed", "activity_types_changed",
                           "integration_enabled"]
        assert all(e.user_id is None for e in db.session.scalars(select(AuditEntry)))


def test_cli_json_key_without_enable_only_tests(app, workspace, world, tmp_path):
    key_path = tmp_path / "acme.json"
    key_path.write_bytes(json_of(workspace))
    result = app.test_cli_runner().invoke(args=[
        "configure-google", "--service-account-email", SA_EMAIL, "--organization", "Acme",
        "--key-file", str(key_path)])
    assert result.exit_code == 0, result.output
    assert "JSON key" in result.output and "use --enable" in result.output
    assert not integration_row(app, world["acme"]).enabled


@pytest.mark.parametrize(("args", "message"), [
    (["--service-account-email", "me@acme.test"], "--service-account-email: This is not a service account"),
    (["--sync-types", "Meeting,Holidays"], "--sync-types: Unknown activity type(s): Holidays"),
    (["--key-password", "wrong"], "--key-password: This password does not open the key file"),
    (["--client-id", "abc"], "--client-id: The client ID is the service account's numeric"),
])
def test_cli_refuses_invalid_input_and_changes_nothing(app, workspace, world, tmp_path, args, message):
    key_path = tmp_path / "acme.p12"
    key_path.write_bytes(p12_of(workspace))
    base = {"--organization": "Acme", "--service-account-email": SA_EMAIL, "--key-file": str(key_path)}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    result = app.test_cli_runner().invoke(args=["configure-google", *[x for kv in base.items() for x in kv]])
    assert result.exit_code == 1
    assert "Nothing was changed." in result.output and message in result.output
    assert integration_row(app, world["acme"]) is None or not integration_row(app, world["acme"]).has_key
    with app.app_context():
        assert db.session.scalars(select(AuditEntry)).all() == []


def test_cli_refuses_a_json_key_of_another_account(app, workspace, world, tmp_path):
    key_path = tmp_path / "acme.json"
    key_path.write_bytes(json_of(workspace))
    result = app.test_cli_runner().invoke(args=[
        "configure-google", "--organization", "Acme", "--service-account-email", OTHER_SA_EMAIL,
        "--key-file", str(key_path)])
    assert result.exit_code == 1 and f"belongs to {SA_EMAIL}" in result.output


# --- secrets ----------------------------------------------------------------------------------------

SECRET_PASSWORD = "P12-pass-Zq8#lantern"


def test_key_and_password_never_leave_the_server(app, login_as, workspace, world, tmp_path, caplog):
    """Not in any response body, log record, audit entry or CLI output; stored only encrypted."""
    import logging

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12
    from sqlalchemy import text

    from portal.integration import decrypt

    caplog.set_level(logging.DEBUG)
    private_key, certificate, _ = pkcs12.load_key_and_certificates(p12_of(workspace), b"notasecret")
    p12 = pkcs12.serialize_key_and_certificates(b"privatekey", private_key, certificate, None,
                                                serialization.BestAvailableEncryption(SECRET_PASSWORD.encode()))
    pem = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
    pem_lines = [line for line in pem.splitlines() if not line.startswith("-----")]
    p12_b64 = base64.b64encode(p12).decode()
    json_key = json_of(workspace)
    markers = [SECRET_PASSWORD, *pem_lines[1:-1], p12_b64[40:100], p12_b64[-100:-40],
               workspace["json_key"]["private_key"].splitlines()[3]]

    client = login_as("admin")
    bodies = []

    def keep(response):
        bodies.append(response.get_data(as_text=True))
        return response

    hx = {"HX-Request": "true"}
    keep(client.post(PAGE + "/account", data={"service_account_email": SA_EMAIL, "client_id": CLIENT_ID}))
    keep(upload(client, p12, password="wrong-guess"))
    keep(upload(client, p12, password=SECRET_PASSWORD))
    keep(client.get(PAGE + "/password/edit", headers=hx))
    keep(client.post(PAGE + "/password", data={"key_password": "not-the-one"}, headers=hx))
    keep(client.post(PAGE + "/password", data={"key_password": SECRET_PASSWORD}, headers=hx))
    keep(client.get(PAGE + "/password", headers=hx))
    keep(client.post(PAGE + "/test", data={"test_email": "admin@acme.test"}))
    keep(client.post(PAGE + "/enabled", data={"enabled": "on"}, headers=hx))
    keep(client.get(PAGE))
    keep(client.get(PAGE + "?edit=password"))
    assert "Connection test passed" in bodies[-3] and SWITCH_ON in bodies[-3]
    key_path = tmp_path / "acme.p12"
    key_path.write_bytes(p12)
    result = app.test_cli_runner().invoke(args=[
        "configure-google", "--organization", "Acme", "--service-account-email", SA_EMAIL,
        "--key-file", str(key_path), "--key-password", SECRET_PASSWORD, "--enable"])
    assert result.exit_code == 0, result.output
    bodies.append(result.output)
    (tmp_path / "globex.json").write_bytes(json_key)
    result = app.test_cli_runner().invoke(args=[
        "configure-google", "--organization", "Globex", "--service-account-email", SA_EMAIL,
        "--key-file", str(tmp_path / "globex.json"), "--test-email", "admin@acme.test"])
    assert result.exit_code == 0, result.output
    bodies.append(result.output)

    logged = [f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records]
    with app.app_context():
        audit = [json.dumps(e.details) for e in db.session.scalars(select(AuditEntry))]
        raw_rows = [repr(tuple(row)) for table in ("google_integrations", "audit_entries")
                    for row in db.session.execute(text(f"SELECT * FROM {table}"))]
        stored = db.session.scalars(select(GoogleIntegration).order_by(GoogleIntegration.organization_id)).all()
        assert decrypt(stored[0].key_ciphertext) == p12  # encrypted, not lost
        assert decrypt(stored[0].password_ciphertext).decode() == SECRET_PASSWORD
        assert decrypt(stored[1].key_ciphertext) == json_key
        database_file = db.engine.url.database
    assert len(audit) >= 8 and len(raw_rows) >= 10 and caplog.records
    for where, texts in (("response", bodies), ("log", logged), ("audit", audit), ("table", raw_rows)):
        for marker in markers:
            assert not any(marker in t for t in texts), f"a secret appeared in a {where}"
    raw = open(database_file, "rb").read()
    assert SECRET_PASSWORD.encode() not in raw and p12[200:260] not in raw
    assert pem_lines[5].encode() not in raw and b"BEGIN PRIVATE KEY" not in raw
