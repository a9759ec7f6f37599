"""Settings › Integrations › Google Calendar as admins read it: a connection test that never trusts a cached
token, one switch for the organization, a warning when nothing will go to Google, messages that look like
what they are, and an audit log in words, with zones and pages."""

from __future__ import annotations

import re

from sqlalchemy import select

from portal.extensions import db
from portal.models import AuditEntry, Organization, User
from portal.sync.google import TOKENS
from tests.conftest import SERVICE_CLIENT_ID

PAGE = "/settings/integrations/google-calendar"
HX = {"HX-Request": "true"}
ZONED = r"\d{4}-\d\d-\d\d \d\d:\d\d (?:CET|CEST)"


def element(body: str, element_id: str) -> str:
    """The opening tag of the element with that id."""
    match = re.search(r"<[a-z]+[^>]*\bid=\"" + re.escape(element_id) + r"\"[^>]*>", body)
    assert match, f"no element #{element_id}"
    return match.group(0)


# --- the connection test asks Google for a new token, always -------------------------------------------


def test_a_test_after_the_delegation_was_revoked_fails_even_with_a_cached_token(app, login_as, connected, world,
                                                                               sync_on, run_sync):
    sync_on("user")
    cycle = run_sync("user")
    assert cycle.status == "ok", cycle.error_code  # the user's token is now in the portal's cache
    connected.control("DELETE", "/delegations", {"client_id": SERVICE_CLIENT_ID})
    client = login_as("admin")
    body = client.post(PAGE + "/test", data={"test_email": "user@acme.test"}, headers=HX).get_data(as_text=True)
    assert "Connection test failed as user@acme.test" in body
    assert "Domain-wide delegation is missing for client ID " + SERVICE_CLIENT_ID in body
    assert "Connection test passed" not in body
    assert len(TOKENS) == 0  # nor does the sync keep using what it obtained before the revocation


def test_a_failing_test_of_one_organization_leaves_the_tokens_of_others(app, connected, world):
    from portal.integration import calendar_client, integration_for, test_connection

    with app.app_context():
        acme = db.session.get(Organization, world["acme"])
        calendar_client(integration_for(acme), "user@acme.test").authorize()  # as Acme's sync keeps one
        assert len(TOKENS) == 1
        globex = db.session.get(Organization, world["globex"])  # no key at all: its test fails as not set up
        outcome = test_connection(integration_for(globex), None, "user@globex.test")
    assert outcome.error.code == "not_configured"
    assert len(TOKENS) == 1


def test_a_passing_test_says_what_it_read(login_as, connected):
    body = login_as("admin").post(PAGE + "/test", data={"test_email": "colleague@acme.test"},
                                  headers=HX).get_data(as_text=True)
    assert "Connection test passed" in body
    assert "Google issued a new token" in body
    assert "Europe/Amsterdam" in body  # the calendar's own zone, as read from Google


# --- one switch for the organization ----------------------------------------------------------------


def test_the_organization_switch_is_a_real_switch_that_asks_before_switching_off(app, login_as, connected):
    client = login_as("admin")
    page = client.get(PAGE).get_data(as_text=True)
    button = element(page, "organization-sync")
    assert 'role="switch"' in button and 'aria-checked="true"' in button
    assert "Sync Google Calendar for this organization" in page
    assert re.search(r'id="organization-sync-state"[^>]*>On<', page)
    assert "Switch off" not in page and "Switch on" not in page
    form = page[:page.index('id="organization-sync"')].rsplit("<form", 1)[1]
    assert "hx-confirm=" in form and "data-confirm=" in form  # htmx asks; portal.js asks for plain forms
    body = client.post(PAGE + "/enabled", data={"enabled": "off"}, headers=HX).get_data(as_text=True)
    assert 'aria-checked="false"' in element(body, "organization-sync")
    assert re.search(r'id="organization-sync-state"[^>]*>Off<', body)
    form = body[:body.index('id="organization-sync"')].rsplit("<form", 1)[1]
    assert "hx-confirm=" not in form  # switching on runs the test first; nothing to confirm


# --- no activity type selected --------------------------------------------------------------------


WARNING = ("No activity type is selected: nothing of the portal will go to Google; Google events still "
           "come in.")


def test_saving_no_activity_type_warns_and_keeps_the_save(app, login_as, world):
    client = login_as("admin")
    body = client.post(PAGE + "/activity-types", data={"activity_types": [""]}, headers=HX).get_data(as_text=True)
    assert re.search(r'class="message warning"[^>]*role="status"', body)
    assert WARNING in body
    with app.app_context():
        assert not any(t.sync_to_google for t in db.session.get(Organization, world["acme"]).activity_types)
    # Without JavaScript: the redirect's page carries the same warning.
    page = client.post(PAGE + "/activity-types", data={"activity_types": [""]},
                       follow_redirects=True).get_data(as_text=True)
    assert WARNING in page and "message warning" in page


# --- messages look like what they are --------------------------------------------------------------


def test_a_failed_connection_test_is_an_error_alert_and_a_success_is_not(login_as, connected):
    connected.control("DELETE", "/delegations", {"client_id": SERVICE_CLIENT_ID})
    client = login_as("admin")
    body = client.post(PAGE + "/test", data={"test_email": "admin@acme.test"}, headers=HX).get_data(as_text=True)
    result = element(body, "test-result")
    assert 'role="alert"' in result and re.search(r'class="[^"]*\berror\b', result)
    assert "message success" not in result and "flash" not in result
    connected.delegate(SERVICE_CLIENT_ID, ["https://www.googleapis.com/auth/calendar.events"])
    body = client.post(PAGE + "/test", data={"test_email": "admin@acme.test"}, headers=HX).get_data(as_text=True)
    result = element(body, "test-result")
    assert 'role="status"' in result and re.search(r'class="[^"]*\bsuccess\b', result)
    saved = client.post(PAGE + "/participants", data={"participants_can_edit": "on"}, headers=HX)
    assert 'class="flash"' not in saved.get_data(as_text=True)
    assert re.search(r'class="message success"', saved.get_data(as_text=True))


# --- the audit log in words -------------------------------------------------------------------------


def audit_rows(body: str) -> list[str]:
    table = body[max(body.find('id="audit-log"'), 0):]  # an htmx answer is only the log
    return [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row)).strip()
            for row in re.findall(r"<tr class=\"audit-entry\".*?</tr>", table, re.S)]


def test_the_audit_log_reads_as_sentences_with_zoned_times(app, login_as, connected, world):
    client = login_as("admin")
    client.post(PAGE + "/test", data={"test_email": "admin@acme.test"})
    client.post(PAGE + "/participants", data={"participants_can_edit": "on"})
    client.post(PAGE + "/enabled", data={"enabled": "off"})
    body = client.get(PAGE).get_data(as_text=True)
    rows = audit_rows(body)
    assert len(rows) == 6, rows
    text = " | ".join(rows)
    for raw in ("ok: True", "ok:", "None", "True", "False", "→ ", "connection_tested", "tested as:",
                "fingerprint:", "_"):
        assert raw not in text, f"{raw!r} in the audit log: {text}"
    assert "Connection test as admin@acme.test: passed" in text
    assert f"Client ID set to {SERVICE_CLIENT_ID}" in text
    assert "Service account set to portal-sync@acme-project.iam.gserviceaccount.com" in text
    assert "P12 key uploaded (fingerprint " in text
    assert "Switched on after a passing connection test as admin@acme.test" in text
    assert "Switched off" in text
    assert "Participants may now change the activities they take part in" in text
    assert all(re.match(ZONED, row) for row in rows), rows


def test_a_failed_test_and_a_key_replacement_read_in_words(app, login_as, connected, world):
    client = login_as("admin")
    connected.control("DELETE", "/delegations", {"client_id": SERVICE_CLIENT_ID})
    client.post(PAGE + "/test", data={"test_email": "user@acme.test"})
    account = connected.add_service_account(client_id=SERVICE_CLIENT_ID,
                                            email="portal-sync@acme-project.iam.gserviceaccount.com")
    import base64

    from tests.test_settings_google import upload

    upload(client, base64.b64decode(account["p12_base64"]))
    text = " | ".join(audit_rows(client.get(PAGE).get_data(as_text=True)))
    assert "Connection test as user@acme.test: failed (domain-wide delegation missing)" in text
    assert "Key replaced (fingerprint " in text and "delegation_missing" not in text


def test_the_audit_log_pages_by_twenty_without_and_with_htmx(app, login_as, world):
    from portal.integration import audit

    with app.app_context():
        acme = db.session.get(Organization, world["acme"])
        admin = db.session.get(User, world["admin"])
        for n in range(25):
            audit(acme, admin, "service_account_changed", client_id=[None, f"10000000000{n:02d}"])
        db.session.commit()
    client = login_as("admin")
    first = client.get(PAGE).get_data(as_text=True)
    rows = audit_rows(first)
    assert len(rows) == 20 and "1000000000024" in rows[0] and "1000000000005" in rows[-1]
    older = re.search(r'<a [^>]*id="audit-older"[^>]*>', first)
    assert older, "no link to older entries"
    assert 'href="' + PAGE + '?audit_page=2#audit-log"' in older.group(0)
    assert "hx-get=" in older.group(0)
    second = client.get(PAGE + "?audit_page=2").get_data(as_text=True)
    rows = audit_rows(second)
    assert len(rows) == 5 and "1000000000004" in rows[0] and "1000000000000" in rows[-1]
    assert 'id="audit-older"' not in second and 'id="audit-newer"' in second
    partial = client.get(PAGE + "?audit_page=2", headers={**HX, "HX-Target": "audit-log"})
    assert partial.status_code == 200
    assert "<html" not in partial.get_data(as_text=True) and 'id="service-account"' not in partial.get_data(as_text=True)
    assert len(audit_rows(partial.get_data(as_text=True))) == 5
    for bad in ("0", "-1", "x", "99999999999999999999"):
        assert client.get(PAGE + "?audit_page=" + bad).status_code == 200


# --- every time with its zone -------------------------------------------------------------------------


def test_times_on_the_page_carry_their_zone(app, login_as, connected, world):
    client = login_as("admin")
    connected.control("DELETE", "/delegations", {"client_id": SERVICE_CLIENT_ID})
    client.post(PAGE + "/test", data={"test_email": "admin@acme.test"})
    page = client.get(PAGE).get_data(as_text=True)
    last_test = re.search(r"Last test: failed as admin@acme.test, ([^.<]*)\.", page)
    assert last_test and re.fullmatch(ZONED, last_test.group(1)), last_test
    assert re.search(r"uploaded " + ZONED, page)
    assert re.search(r"Since " + ZONED, page)
    with app.app_context():
        assert db.session.scalars(select(AuditEntry)).first() is not None
