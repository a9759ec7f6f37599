"""An admin connects the demo organization to Google (the emulator) in a real browser: service account,
key upload, the inline password edit, a refused switch-on with its reason, then a working one."""

import base64
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from portal.emulator.server import EmulatorServer
from portal.sync.google import GOOGLE_SCOPES, TOKENS

pytestmark = pytest.mark.browser

SA_EMAIL = "portal-sync@demo-project.iam.gserviceaccount.com"
CLIENT_ID = "104857600000000000009"
PASSWORD = "Demo-key-pw-4417"


def wait(browser, condition, timeout=10):
    return WebDriverWait(browser, timeout).until(condition)


def text_in(browser, element_id, text):
    return wait(browser, EC.text_to_be_present_in_element((By.ID, element_id), text))


@pytest.fixture
def google(live_app):
    with EmulatorServer() as server:
        TOKENS.forget()
        live_app.config.update(GOOGLE_TOKEN_URI=server.token_uri, GOOGLE_API_ENDPOINT=server.api_endpoint,
                               GOOGLE_BATCH_URI=server.batch_uri, GOOGLE_TIMEOUT=5)
        server.add_user("admin@demo.example")
        yield server
    TOKENS.forget()


def test_admin_sets_up_google_in_the_browser(browser, live_server, live_app, google, tmp_path):
    account = google.add_service_account(client_id=CLIENT_ID, email=SA_EMAIL)
    key_path = tmp_path / "demo-project.p12"
    private_key, certificate, _ = pkcs12.load_key_and_certificates(base64.b64decode(account["p12_base64"]),
                                                                   b"notasecret")
    key_path.write_bytes(pkcs12.serialize_key_and_certificates(
        b"privatekey", private_key, certificate, None, serialization.BestAvailableEncryption(PASSWORD.encode())))

    browser.get(live_server.url + "/login")
    browser.find_element(By.NAME, "email").send_keys("admin@demo.example")
    browser.find_element(By.NAME, "password").send_keys("demo-password")
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait(browser, EC.element_to_be_clickable((By.PARTIAL_LINK_TEXT, "Google Calendar"))).click()
    text_in(browser, "integration-state", "off")
    page_url = browser.current_url

    section = browser.find_element(By.ID, "service-account")
    section.find_element(By.NAME, "service_account_email").send_keys(SA_EMAIL)
    section.find_element(By.NAME, "client_id").send_keys(CLIENT_ID)
    section.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    text_in(browser, "integration", "Service account saved.")

    # A key with its own password: upload it without the password, be told, enter it inline, upload again.
    browser.find_element(By.CSS_SELECTOR, "#private-key input[type=file]").send_keys(os.fspath(key_path))
    browser.find_element(By.CSS_SELECTOR, "#private-key form[enctype] button[type=submit]").click()
    text_in(browser, "error-key_password", "protected by a password other than Google's default")

    browser.find_element(By.CSS_SELECTOR, "#key-password a.edit").click()
    field = wait(browser, EC.visibility_of_element_located((By.CSS_SELECTOR, "#key-password input[type=password]")))
    assert field.get_attribute("value") == ""
    field.send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "#key-password button[type=submit]").click()
    text_in(browser, "integration", "Private key password saved.")
    assert "Private key password: set" in browser.find_element(By.ID, "key-password").text

    browser.find_element(By.CSS_SELECTOR, "#private-key input[type=file]").send_keys(os.fspath(key_path))
    browser.find_element(By.CSS_SELECTOR, "#private-key form[enctype] button[type=submit]").click()
    text_in(browser, "integration", "stored.")
    assert "Certificate valid" in browser.find_element(By.ID, "private-key").text

    # No delegation yet: switching on runs the test, stays off and says what to paste where.
    browser.find_element(By.CSS_SELECTOR, "button.switch").click()
    text_in(browser, "test-result", "Domain-wide delegation is missing for client ID " + CLIENT_ID)
    assert browser.find_element(By.ID, "integration-state").text == "Integration is off"
    scopes = browser.find_element(By.ID, "delegation-scopes").text
    assert scopes == ",".join(GOOGLE_SCOPES)
    assert browser.find_element(By.ID, "integration-error").is_displayed()

    google.delegate(CLIENT_ID, scopes.split(","))
    browser.find_element(By.CSS_SELECTOR, "button.switch").click()
    text_in(browser, "integration-state", "Integration is on")
    assert "Connection test passed" in browser.find_element(By.ID, "integration").text
    assert not browser.find_elements(By.ID, "integration-error")
    assert browser.current_url == page_url  # every step happened in place
    assert PASSWORD not in browser.page_source
    browser.save_screenshot(os.fspath(tmp_path / "settings.png"))
    if os.environ.get("SCREENSHOT_TO"):
        browser.save_screenshot(os.environ["SCREENSHOT_TO"])
