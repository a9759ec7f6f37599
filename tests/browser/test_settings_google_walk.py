"""An admin connects a new, empty organization to Google (the emulator) in a real browser: service account,
key upload with the inline password edit, activity types, a failing then a passing connection test, the
organization's switch on and (confirmed) off; the same forms by keyboard alone; and the page at a phone's
width. Each step is a screenshot (`shot`)."""

import base64
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC

from portal.extensions import db
from portal.sync.google import GOOGLE_SCOPES
from tests.browser import walk
from tests.browser.conftest import sideways_overflow
from tests.browser.walk import keys, switch_state, tab_to, wait

pytestmark = pytest.mark.browser

ADMIN = "admin@northwind.example"
ADMIN_PASSWORD = "Northwind-admin-pw-31"
# As long as Google lets them be: the page must still fit a phone.
SA_EMAIL = "calendar-synchronisation-30@northwind-traders-prod-4411.iam.gserviceaccount.com"
CLIENT_ID = "104857600000000000009"
KEY_PASSWORD = "Demo-key-pw-4417"
PAGE = "/settings/integrations/google-calendar"


def text_in(browser, element_id, text):
    return wait(browser, EC.text_to_be_present_in_element((By.ID, element_id), text))


def into_view(browser, element_id):
    """Scroll so the screenshot shows what the step is about."""
    browser.execute_script("const el = document.getElementById(arguments[0]);"
                           "el.scrollIntoView({block: el.offsetHeight > innerHeight ? 'start' : 'center'})", element_id)


@pytest.fixture
def northwind(live_app):
    """A new organization with nothing set up: its admin and the standard activity types only."""
    from portal.accounts import add_organization, add_user

    with live_app.app_context():
        organization = add_organization("Northwind Traders")
        add_user(organization, ADMIN, "Nora Northwind", "admin", ADMIN_PASSWORD)
        db.session.commit()
        return organization.id


@pytest.fixture
def google(emulated_google):
    """An emulated Google that knows Northwind's admin only. Not the shared `google`: here nothing is connected
    yet, the walk connects it."""
    server = emulated_google()
    server.add_user(ADMIN, time_zone="Europe/Amsterdam")
    return server


def log_in(browser, live_server):
    walk.log_in(browser, live_server, ADMIN, password=ADMIN_PASSWORD, enter=True,
                until=(By.PARTIAL_LINK_TEXT, "Google Calendar"))


def test_admin_sets_up_google_for_an_empty_organization(browser, live_server, live_app, google, northwind, shot,
                                                        tmp_path):
    account = google.add_service_account(client_id=CLIENT_ID, email=SA_EMAIL)
    key_path = tmp_path / "northwind.p12"
    private_key, certificate, _ = pkcs12.load_key_and_certificates(base64.b64decode(account["p12_base64"]),
                                                                   b"notasecret")
    key_path.write_bytes(pkcs12.serialize_key_and_certificates(
        b"privatekey", private_key, certificate, None,
        serialization.BestAvailableEncryption(KEY_PASSWORD.encode())))

    log_in(browser, live_server)
    browser.find_element(By.PARTIAL_LINK_TEXT, "Google Calendar").click()
    text_in(browser, "organization-sync-state", "Off")
    assert "No key uploaded yet." in browser.find_element(By.ID, "private-key").text
    assert "No changes yet." in browser.find_element(By.ID, "audit-log").text
    page_url = browser.current_url
    shot("empty organization")

    section = browser.find_element(By.ID, "service-account")
    section.find_element(By.NAME, "service_account_email").send_keys(SA_EMAIL)
    section.find_element(By.NAME, "client_id").send_keys(CLIENT_ID)
    section.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    text_in(browser, "integration", "Service account saved.")
    into_view(browser, "integration")
    shot("service account saved")

    # A key with its own password: upload it without the password, be told, enter it inline, upload again.
    browser.find_element(By.CSS_SELECTOR, "#private-key input[type=file]").send_keys(os.fspath(key_path))
    browser.find_element(By.CSS_SELECTOR, "#private-key form[enctype] button[type=submit]").click()
    text_in(browser, "error-key_password", "protected by a password other than Google's default")
    into_view(browser, "private-key")
    shot("key refused without its password")
    browser.find_element(By.CSS_SELECTOR, "#key-password a.edit").click()
    field = wait(browser, EC.visibility_of_element_located((By.CSS_SELECTOR, "#key-password input[type=password]")))
    assert field.get_attribute("value") == ""
    field.send_keys(KEY_PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "#key-password button[type=submit]").click()
    text_in(browser, "integration", "Private key password saved.")
    assert "Private key password: set" in browser.find_element(By.ID, "key-password").text
    browser.find_element(By.CSS_SELECTOR, "#private-key input[type=file]").send_keys(os.fspath(key_path))
    browser.find_element(By.CSS_SELECTOR, "#private-key form[enctype] button[type=submit]").click()
    text_in(browser, "integration", "stored.")
    assert "Certificate valid" in browser.find_element(By.ID, "private-key").text
    into_view(browser, "private-key")
    shot("key stored")

    # Activity types: none at all is allowed, with a warning; then the ones meant.
    types = browser.find_element(By.ID, "activity-types")
    for box in types.find_elements(By.CSS_SELECTOR, "input[type=checkbox]:checked"):
        box.click()
    types.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    warning = wait(browser, EC.visibility_of_element_located((By.CSS_SELECTOR, "#integration .message.warning")))
    assert "nothing of the portal will go to Google" in warning.text
    into_view(browser, "integration")
    shot("no activity type warns")
    types = browser.find_element(By.ID, "activity-types")
    for label in types.find_elements(By.TAG_NAME, "label"):
        if label.text.startswith(("Meeting", "Customer visit")):
            label.find_element(By.TAG_NAME, "input").click()
    types.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    text_in(browser, "integration", "Activity types saved.")
    into_view(browser, "activity-types")
    shot("activity types chosen")

    # No delegation yet: the test fails as an error, and says what to paste where.
    browser.find_element(By.CSS_SELECTOR, "#connection-test button[type=submit]").click()
    text_in(browser, "test-result", "Domain-wide delegation is missing for client ID " + CLIENT_ID)
    result = browser.find_element(By.ID, "test-result")
    assert result.get_attribute("role") == "alert" and "error" in result.get_attribute("class").split()
    scopes = browser.find_element(By.ID, "delegation-scopes").text
    assert scopes == ",".join(GOOGLE_SCOPES)
    into_view(browser, "test-result")
    shot("test fails without delegation")

    google.delegate(CLIENT_ID, scopes.split(","))
    browser.find_element(By.CSS_SELECTOR, "#connection-test button[type=submit]").click()
    text_in(browser, "test-result", "Connection test passed as " + ADMIN)
    assert "Google issued a new token" in browser.find_element(By.ID, "test-result").text
    assert switch_state(browser, "organization-sync") == ("false", "Off")  # a test alone switches nothing on
    into_view(browser, "test-result")
    shot("test passes")

    browser.find_element(By.ID, "organization-sync").click()
    text_in(browser, "organization-sync-state", "On")
    assert browser.find_element(By.ID, "organization-sync").get_attribute("aria-checked") == "true"
    assert "The integration is on." in browser.find_element(By.ID, "integration").text
    assert not browser.find_elements(By.ID, "integration-error")
    into_view(browser, "integration")
    shot("organization switched on")

    # Switching off asks first; declining keeps it on.
    browser.find_element(By.ID, "organization-sync").click()
    wait(browser, EC.alert_is_present()).dismiss()
    assert switch_state(browser, "organization-sync") == ("true", "On")
    browser.find_element(By.ID, "organization-sync").click()
    wait(browser, EC.alert_is_present()).accept()
    text_in(browser, "organization-sync-state", "Off")
    log = browser.find_element(By.ID, "audit-log").text
    assert "Switched off" in log and "Connection test as " + ADMIN + ": passed" in log
    assert browser.current_url == page_url  # every step happened in place
    assert KEY_PASSWORD not in browser.page_source
    into_view(browser, "integration")
    shot("switched off after confirming")


def test_the_settings_forms_work_by_keyboard_alone(browser, live_server, live_app, google, northwind, shot):
    account = google.add_service_account(client_id=CLIENT_ID, email=SA_EMAIL)
    google.delegate(CLIENT_ID, GOOGLE_SCOPES)
    with live_app.app_context():  # the key file is the one step a keyboard cannot type
        from portal.integration import integration_for, upload_key
        from portal.models import Organization

        upload_key(integration_for(db.session.get(Organization, northwind)), None,
                   base64.b64decode(account["p12_base64"]))
    log_in(browser, live_server)
    browser.get(live_server.url + PAGE)

    tab_to(browser, lambda f: f["name"] == "service_account_email", limit=60)
    field = browser.switch_to.active_element
    field.send_keys(SA_EMAIL)
    keys(browser, Keys.TAB, CLIENT_ID)
    assert browser.switch_to.active_element.get_attribute("name") == "client_id"
    keys(browser, Keys.TAB)
    assert browser.switch_to.active_element.text == "Save"
    shot("account form filled by keyboard")
    keys(browser, Keys.ENTER)
    text_in(browser, "integration", "Service account saved.")
    # The focus goes to what happened, not to the page: Tab continues from there.
    wait(browser, lambda b: b.execute_script("const el = document.activeElement;"
                                             "return el.matches('.message.success') ? el.textContent : ''"))
    assert "Service account saved." in browser.switch_to.active_element.text
    shot("account saved by keyboard")

    tab_to(browser, lambda f: f["id"] == "organization-sync", limit=60)
    switch = browser.switch_to.active_element
    assert switch.get_attribute("role") == "switch"
    keys(browser, Keys.SPACE)
    text_in(browser, "organization-sync-state", "On")
    into_view(browser, "integration")
    shot("switched on by keyboard")
    # The switch keeps the focus across the swap, so a second Space acts on it again.
    assert browser.switch_to.active_element.get_attribute("id") == "organization-sync"
    keys(browser, Keys.SPACE)
    wait(browser, EC.alert_is_present()).accept()
    text_in(browser, "organization-sync-state", "Off")
    into_view(browser, "integration")
    shot("switched off by keyboard")


def test_the_settings_page_fits_a_phone(browser, live_server, live_app, google, northwind, phone, shot):
    account = google.add_service_account(client_id=CLIENT_ID, email=SA_EMAIL)
    with live_app.app_context():
        from portal.integration import audit, integration_for, save_account, upload_key
        from portal.models import Organization

        organization = db.session.get(Organization, northwind)
        row = integration_for(organization)
        save_account(row, None, SA_EMAIL, CLIENT_ID)
        upload_key(row, None, base64.b64decode(account["p12_base64"]))
        for n in range(22):  # enough for the pager
            audit(organization, None, "service_account_changed", client_id=[CLIENT_ID, f"1048576000000000000{n:02d}"])
        db.session.commit()
    log_in(phone, live_server)
    phone.get(live_server.url + PAGE)
    shot("phone: settings")
    assert sideways_overflow(phone) == []
    phone.find_element(By.CSS_SELECTOR, "#connection-test button[type=submit]").click()
    text_in(phone, "test-result", "Domain-wide delegation is missing")  # with the long values to copy
    into_view(phone, "test-result")
    shot("phone: failed test")
    assert sideways_overflow(phone) == []
    phone.find_element(By.ID, "audit-older").click()
    wait(phone, EC.presence_of_element_located((By.ID, "audit-newer")))
    into_view(phone, "audit-log")
    shot("phone: older changes")
    assert sideways_overflow(phone) == []
