"""Settings > Integrations > Google Calendar without Google: who may use it, what the uploads accept,
how every field is validated, the inline password edit, activity types and the audit log."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from zoneinfo import ZoneInfo

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from portal.extensions import db
from portal.integration import KEY_FILE_LIMIT, SettingsError, parse_key_file
from portal.models import ActivityType, AuditEntry, GoogleIntegration, Organization

PAGE = "/settings/integrations/google-calendar"
SA_EMAIL = "portal-sync@acme-project.iam.gserviceaccount.com"
CLIENT_ID = "104857600000000000001"
PASSWORD = "Wh1sper-of-the-P12"


def make_rsa():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


_KEY = make_rsa()


def make_p12(password: str | None = "notasecret", key=None, common_name=CLIENT_ID) -> bytes:
    key = key or _KEY
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(7).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650)).sign(key, hashes.SHA256()))
    encryption = (serialization.BestAvailableEncryption(password.encode()) if password
                  else serialization.NoEncryption())
    return pkcs12.serialize_key_and_certificates(b"privatekey", key, cert, None, encryption)


def make_json(email=SA_EMAIL, key=None, **overrides) -> bytes:
    pem = (key or _KEY).private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()).decode()
    info = {"type": "service_account", "project_id": "acme-project", "private_key_id": "ab" * 20,
            "private_key": pem, "client_email": email, "client_id": CLIENT_ID,
            "token_uri": "https://oauth2.googleapis.com/token"} | overrides
    return json.dumps(info).encode()


def upload(client, data: bytes, name="key.p12", password="", follow_redirects=False, **headers):
    return client.post(PAGE + "/key", data={"key_file": (io.BytesIO(data), name), "key_password": password},
                       content_type="multipart/form-data", headers=headers, follow_redirects=follow_redirects)


def row_of(app, organization_id):
    with app.app_context():
        row = db.session.scalar(select(GoogleIntegration).where(GoogleIntegration.organization_id == organization_id))
        if row is not None:
            db.session.expunge(row)
        return row


def audit_actions(app, organization_id):
    with app.app_context():
        return [e.action for e in db.session.scalars(
            select(AuditEntry).where(AuditEntry.organization_id == organization_id).order_by(AuditEntry.id))]


# --- access -----------------------------------------------------------------------------------------

ROUTES = [
    ("get", PAGE, {}),
    ("get", PAGE + "/password/edit", {}),
    ("get", PAGE + "/password", {}),
    ("post", PAGE + "/account", {"service_account_email": SA_EMAIL, "client_id": CLIENT_ID}),
    ("post", PAGE + "/password", {"key_password": PASSWORD}),
    ("post", PAGE + "/activity-types", {"activity_types": ""}),
    ("post", PAGE + "/enabled", {"enabled": "off"}),
    ("post", PAGE + "/test", {"test_email": "admin@acme.test"}),
    ("post", PAGE + "/key", {}),
]


@pytest.mark.parametrize("visitor", ["anonymous", "user", "colleague", "helpdesk", "admin"])
@pytest.mark.parametrize(("method", "path", "data"), ROUTES, ids=[f"{m} {p[len(PAGE):] or '/'}" for m, p, _ in ROUTES])
def test_only_admins_reach_the_settings(app, login_as, visitor, method, path, data):
    client = login_as(visitor)
    response = getattr(client, method)(path, data=data)
    if visitor == "anonymous":
        assert response.status_code == 302 and "/login" in response.headers["Location"]
    elif visitor == "admin":
        assert response.status_code in (200, 302, 422)
    else:
        assert response.status_code == 403


def test_nav_shows_the_page_to_admins_only(login_as):
    assert "Settings › Integrations › Google Calendar" in login_as("admin").get("/calendar/").get_data(as_text=True)


def test_an_admin_of_another_organization_only_ever_changes_their_own(app, login_as, world):
    acme_admin = app.test_client()
    acme_admin.post("/login", data={"email": "admin@acme.test", "password": "correct-horse-battery"})
    acme_admin.post(PAGE + "/account", data={"service_account_email": SA_EMAIL, "client_id": CLIENT_ID})
    upload(acme_admin, make_p12())

    other = login_as("other_admin")
    page = other.get(PAGE).get_data(as_text=True)
    assert SA_EMAIL not in page and CLIENT_ID not in page and "Globex" in page
    other.post(PAGE + "/account", data={"service_account_email": "x@globex.iam.gserviceaccount.com"})
    other.post(PAGE + "/password", data={"key_password": "globex-password"})
    other.post(PAGE + "/activity-types", data={"activity_types": ""})
    other.post(PAGE + "/enabled", data={"enabled": "off"})

    acme = row_of(app, world["acme"])
    assert acme.service_account_email == SA_EMAIL and acme.has_key and not acme.has_password
    with app.app_context():
        acme_types = db.session.get(Organization, world["acme"]).activity_types
        assert all(t.sync_to_google for t in acme_types)
        globex_types = db.session.get(Organization, world["globex"]).activity_types
        assert not any(t.sync_to_google for t in globex_types)
    assert audit_actions(app, world["acme"]) == ["service_account_changed", "key_uploaded"]


class TestCsrf:
    def _login(self, csrf_app):
        from portal.accounts import add_organization, add_user

        with csrf_app.app_context():
            org = add_organization("Acme")
            add_user(org, "admin@acme.test", "Alice", "admin", "correct-horse-battery")
            db.session.commit()
        client = csrf_app.test_client()
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True)).group(1)
        client.post("/login", data={"email": "admin@acme.test", "password": "correct-horse-battery",
                                    "csrf_token": token})
        page = client.get(PAGE).get_data(as_text=True)
        return client, re.search(r'"X-CSRFToken": "([^"]+)"', page).group(1)

    @pytest.mark.parametrize("path", ["/account", "/key", "/password", "/activity-types", "/enabled", "/test"])
    def test_posts_without_the_token_are_refused(self, csrf_app, path):
        client, _token = self._login(csrf_app)
        response = client.post(PAGE + path, data={"service_account_email": SA_EMAIL, "enabled": "on"})
        assert response.status_code == 400 and b"security token" in response.data
        with csrf_app.app_context():
            assert db.session.scalars(select(GoogleIntegration)).all() == []
            assert db.session.scalars(select(AuditEntry)).all() == []

    def test_forms_carry_the_token_and_htmx_sends_it(self, csrf_app):
        client, token = self._login(csrf_app)
        page = client.get(PAGE).get_data(as_text=True)
        assert page.count('name="csrf_token"') >= 6
        response = client.post(PAGE + "/account", data={"service_account_email": SA_EMAIL},
                               headers={"HX-Request": "true", "X-CSRFToken": token})
        assert response.status_code == 200 and "Service account saved." in response.get_data(as_text=True)


# --- service account --------------------------------------------------------------------------------


@pytest.mark.parametrize(("email", "client_id", "field", "message"), [
    ("", "", "service_account_email", "Enter the service account's e-mail address."),
    ("not-an-email", "", "service_account_email", "is not an e-mail address"),
    ("admin@acme.test", "", "service_account_email", "This is not a service account's address"),
    (SA_EMAIL, "12ab", "client_id", "numeric “Unique ID”"),
    (SA_EMAIL, "1" * 40, "client_id", "numeric “Unique ID”"),
])
def test_service_account_fields_are_validated(app, login_as, world, email, client_id, field, message):
    client = login_as("admin")
    response = client.post(PAGE + "/account", data={"service_account_email": email, "client_id": client_id})
    assert response.status_code == 422
    body = response.get_data(as_text=True)
    error = re.search(rf'<span class="field-error" id="error-{field}" role="alert">([^<]*)</span>', body)
    assert error and message.replace("'", "&#39;") in error.group(1)
    assert f'value="{email}"' in body  # what was typed stays in the field
    assert row_of(app, world["acme"]) is None or not row_of(app, world["acme"]).service_account_email
    assert audit_actions(app, world["acme"]) == []


def test_htmx_gets_the_body_and_plain_forms_the_page(login_as):
    client = login_as("admin")
    partial = client.post(PAGE + "/account", data={"service_account_email": "x"}, headers={"HX-Request": "true"})
    assert partial.status_code == 422 and "<html" not in partial.get_data(as_text=True)
    full = client.post(PAGE + "/account", data={"service_account_email": "x"})
    assert full.status_code == 422 and "<html" in full.get_data(as_text=True)


def test_saving_the_service_account_is_audited(app, login_as, world):
    client = login_as("admin")
    client.post(PAGE + "/account", data={"service_account_email": SA_EMAIL.upper(), "client_id": CLIENT_ID})
    again = client.post(PAGE + "/account", data={"service_account_email": SA_EMAIL, "client_id": CLIENT_ID},
                        follow_redirects=True)
    assert "Nothing changed." in again.get_data(as_text=True)
    with app.app_context():
        entry = db.session.scalars(select(AuditEntry)).one()
        assert entry.action == "service_account_changed" and entry.user.email == "admin@acme.test"
        assert entry.details == {"service_account_email": [None, SA_EMAIL], "client_id": [None, CLIENT_ID]}
    page = client.get(PAGE).get_data(as_text=True)
    assert f"Service account set to {SA_EMAIL}; Client ID set to {CLIENT_ID}" in page and "None" not in page


# --- key files --------------------------------------------------------------------------------------


def test_p12_upload_shows_what_was_understood(app, login_as, world):
    client = login_as("admin")
    response = upload(client, make_p12(), follow_redirects=True)
    body = response.get_data(as_text=True)
    row = row_of(app, world["acme"])
    assert row.key_kind == "p12" and row.client_id == CLIENT_ID  # taken from the certificate
    assert f"P12 key {row.key_id} stored." in body
    assert row.key_fingerprint in body and re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", row.key_fingerprint)
    local = [t.astimezone(ZoneInfo("Europe/Amsterdam")) for t in (row.key_valid_from, row.key_valid_until)]
    assert f"{local[0]:%Y-%m-%d} to {local[1]:%Y-%m-%d}" in body  # days as the admin's zone counts them
    assert "<strong>not set</strong>" in body  # Google's default opened it


def test_p12_with_its_own_password(app, login_as, world):
    client = login_as("admin")
    data = make_p12(PASSWORD)
    refused = upload(client, data)
    assert refused.status_code == 422
    assert "protected by a password other than Google&#39;s default" in refused.get_data(as_text=True)
    wrong = upload(client, data, password="not-it")
    assert wrong.status_code == 422
    body = wrong.get_data(as_text=True)
    assert 'id="error-key_password"' in body and "This password does not open the key file." in body
    assert row_of(app, world["acme"]) is None or not row_of(app, world["acme"]).has_key
    assert upload(client, data, password=PASSWORD).status_code == 302
    row = row_of(app, world["acme"])
    assert row.has_key and row.has_password
    assert "<strong>set</strong>" in client.get(PAGE).get_data(as_text=True)


@pytest.mark.parametrize(("data", "name", "message"), [
    (b"", "empty.p12", "Choose the key file"),
    (b"\x00\x01garbage" * 10, "garbage.p12", "This file is not a service-account key."),
    (b"\x30\x82\x01\x00" + b"\x00" * 300, "fake.p12", "This file is not a PKCS#12 key file"),
    (b"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n", "key.pem", "This is a PEM text file."),
    (b"{not json", "key.json", "This file is not valid JSON"),
    (json.dumps({"installed": {"client_id": "x"}}).encode(), "client.json", "This is an OAuth client ID file"),
    (json.dumps({"type": "authorized_user"}).encode(), "user.json", "This JSON file is not a service-account key"),
    (make_json(private_key="-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n"), "bad.json",
     "private_key cannot be read"),
    (make_json(email="nobody"), "bad.json", "no valid client_email"),
    (b"0" * (KEY_FILE_LIMIT + 1), "big.p12", "a service-account key is a few KB"),
])
def test_uploads_that_are_not_keys_are_refused_and_keep_the_old_key(app, login_as, world, data, name, message):
    client = login_as("admin")
    assert upload(client, make_p12()).status_code == 302
    before = row_of(app, world["acme"])
    response = upload(client, data, name)
    assert response.status_code == 422
    body = response.get_data(as_text=True)
    error = re.search(r'<span class="field-error" id="error-key_file" role="alert">([^<]*)</span>', body)
    assert error and message.replace("'", "&#39;") in error.group(1), body[:3000]
    after = row_of(app, world["acme"])
    assert (after.key_ciphertext, after.key_fingerprint) == (before.key_ciphertext, before.key_fingerprint)
    assert audit_actions(app, world["acme"]) == ["key_uploaded"]


def test_an_upload_beyond_the_request_limit_is_refused_cleanly(login_as):
    client = login_as("admin")
    response = upload(client, b"0" * (3 * 1024 * 1024), "huge.p12")
    assert response.status_code == 413 and b"larger than allowed" in response.data


def test_non_rsa_keys_are_refused():
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(SettingsError) as caught:
        parse_key_file(make_json(key=key))
    assert "not an RSA key" in caught.value.errors["key_file"]
    with pytest.raises(SettingsError) as caught:
        parse_key_file(make_p12(key=key))
    assert "no RSA private key" in caught.value.errors["key_file"]


def test_key_rotation_replaces_the_key_and_is_audited(app, login_as, world):
    client = login_as("admin")
    upload(client, make_p12())
    first = row_of(app, world["acme"]).key_fingerprint
    upload(client, make_json(key=make_rsa()), "new.json")
    row = row_of(app, world["acme"])
    assert row.key_fingerprint != first and row.key_kind == "json"
    assert (row.service_account_email, row.project_id, row.key_id) == (SA_EMAIL, "acme-project", "ab" * 20)
    with app.app_context():
        entry = db.session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc())).first()
        assert entry.details["replaced_fingerprint"] == first
        assert entry.details["service_account_email"] == [None, SA_EMAIL]


def test_the_email_cannot_drift_from_a_stored_json_key(login_as):
    client = login_as("admin")
    upload(client, make_json(), "key.json")
    response = client.post(PAGE + "/account", data={"service_account_email": "b@p.iam.gserviceaccount.com"})
    assert response.status_code == 422
    assert f"The stored JSON key belongs to {SA_EMAIL}" in response.get_data(as_text=True)


# --- the password, edited inline --------------------------------------------------------------------


def test_password_edit_is_an_inline_htmx_form(login_as):
    client = login_as("admin")
    view = client.get(PAGE).get_data(as_text=True)
    assert 'hx-get="/settings/integrations/google-calendar/password/edit"' in view
    assert 'href="/settings/integrations/google-calendar?edit=password#key-password"' in view
    form = client.get(PAGE + "/password/edit", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert form.lstrip().startswith("{#") is False and 'id="key-password"' in form
    assert 'type="password" name="key_password"' in form and "<html" not in form
    cancel = client.get(PAGE + "/password", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "<strong>not set</strong>" in cancel
    # Without JavaScript the edit link opens the page in edit mode.
    assert client.get(PAGE + "/password/edit").status_code == 302
    assert 'type="password" name="key_password" maxlength="200" autocomplete="new-password" autofocus' in \
        client.get(PAGE + "?edit=password").get_data(as_text=True)


def test_password_must_open_the_stored_key(app, login_as, world):
    client = login_as("admin")
    upload(client, make_p12(PASSWORD), password=PASSWORD)
    wrong = client.post(PAGE + "/password", data={"key_password": "nope"}, headers={"HX-Request": "true"})
    assert wrong.status_code == 422
    body = wrong.get_data(as_text=True)
    assert "This password does not open the stored key file." in body and 'autocomplete="new-password"' in body
    cleared = client.post(PAGE + "/password", data={"key_password": ""})
    assert cleared.status_code == 422  # the key needs its password: Google's default does not open it
    assert client.post(PAGE + "/password", data={"key_password": PASSWORD}).status_code == 302
    assert row_of(app, world["acme"]).has_password
    with app.app_context():
        entry = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "key_password_changed")).one()
        assert entry.details == {"was_set": True, "is_set": True}


def test_password_set_before_the_key_opens_the_upload(app, login_as, world):
    client = login_as("admin")
    assert client.post(PAGE + "/password", data={"key_password": PASSWORD}).status_code == 302
    assert upload(client, make_p12(PASSWORD)).status_code == 302  # the stored password opens it
    assert row_of(app, world["acme"]).has_key


def test_json_keys_have_no_password(login_as):
    client = login_as("admin")
    upload(client, make_json(), "key.json")
    response = client.post(PAGE + "/password", data={"key_password": "x"})
    assert response.status_code == 422 and "JSON key, which has no password" in response.get_data(as_text=True)


def test_password_length_is_limited(login_as):
    response = login_as("admin").post(PAGE + "/password", data={"key_password": "x" * 201})
    assert response.status_code == 422 and "at most 200 characters" in response.get_data(as_text=True)


# --- activity types, toggle, test e-mail -------------------------------------------------------------


def test_activity_types_are_chosen_with_checkboxes(app, login_as, world):
    client = login_as("admin")
    page = client.get(PAGE).get_data(as_text=True)
    assert "all Google events come to the portal" in page
    assert "Private Google events get the type “Personal”" in page
    assert "the default type “Internal”" in page and "project tasks are never synced" in page
    with app.app_context():
        meeting = db.session.scalar(select(ActivityType).where(ActivityType.organization_id == world["acme"],
                                                               ActivityType.name == "Meeting"))
        meeting_id = meeting.id
    response = client.post(PAGE + "/activity-types", data={"activity_types": ["", str(meeting_id)]},
                           headers={"HX-Request": "true"})
    assert response.status_code == 200 and "Activity types saved." in response.get_data(as_text=True)
    with app.app_context():
        acme = db.session.get(Organization, world["acme"])
        assert [t.name for t in acme.activity_types if t.sync_to_google] == ["Meeting"]
        entry = db.session.scalars(select(AuditEntry)).one()
        assert entry.details == {"added": [], "removed": ["Customer visit", "Internal", "Personal"]}


def test_activity_types_of_another_organization_are_refused(app, login_as, world):
    with app.app_context():
        globex_type = db.session.scalar(select(ActivityType).where(ActivityType.organization_id == world["globex"]))
        globex_type_id = globex_type.id
    response = login_as("admin").post(PAGE + "/activity-types", data={"activity_types": [str(globex_type_id)]})
    assert response.status_code == 422 and "Unknown activity type(s)" in response.get_data(as_text=True)
    with app.app_context():
        assert all(t.sync_to_google for t in db.session.get(Organization, world["acme"]).activity_types)


def test_switching_on_needs_a_key_and_an_email_first(app, login_as, world):
    client = login_as("admin")
    response = client.post(PAGE + "/enabled", data={"enabled": "on"})
    assert response.status_code == 422
    assert "Enter the service account e-mail and the private key file first" in response.get_data(as_text=True)
    assert client.post(PAGE + "/enabled", data={"enabled": "maybe"}).status_code == 400
    assert row_of(app, world["acme"]) is None or not row_of(app, world["acme"]).enabled


@pytest.mark.parametrize("email", ["nobody", "a@b", "x" * 250 + "@acme.test"])
def test_the_test_email_is_validated(login_as, email):
    response = login_as("admin").post(PAGE + "/test", data={"test_email": email})
    assert response.status_code == 422
    assert 'id="error-test_email"' in response.get_data(as_text=True)


def test_the_stored_key_does_not_open_under_another_encryption_key(app, login_as, world):
    client = login_as("admin")
    client.post(PAGE + "/account", data={"service_account_email": SA_EMAIL})
    upload(client, make_p12())
    app.config["ENCRYPTION_KEY"] = "Xk0_Rr1q3bYyO0m2w5Vn3oGJpZq9cM0rY1e8hQ2lS3A="
    response = client.post(PAGE + "/test", data={"test_email": "admin@acme.test"})
    body = response.get_data(as_text=True)
    assert "The stored private key can no longer be opened" in body and "ENCRYPTION_KEY" in body
    assert "Upload the service account&#39;s key file again" in body
