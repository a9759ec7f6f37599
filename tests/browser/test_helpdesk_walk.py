"""Helpdesk staff diagnose a broken organization in a real browser: the index marks it, the chart shows the
failed cycles, the users' list filtered to errors and searched by e-mail gives the cause and the fix. Then the
same pages on a phone."""

import re
from datetime import UTC, datetime

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from sqlalchemy import select

from portal.extensions import db
from portal.models import Organization, User
from portal.sync.google import TOKENS
from portal.sync.models import CalendarSync
from tests.browser.conftest import sideways_overflow
from tests.browser.walk import log_in, wait

pytestmark = pytest.mark.browser

@pytest.fixture
def broken(google, live_app):
    """The demo organization synced once, then Bram's Workspace address changed (as when someone is renamed in
    Google only): his cycles fail with "not a user of the Google Workspace", Anna's go on."""
    from portal.sync.engine import run_user_cycle

    with live_app.app_context():
        organization = db.session.scalar(select(Organization).where(Organization.name == "Demo Consulting"))
        people = {u.email: u.id for u in organization.users}
        for email in ("anna@demo.example", "bram@demo.example"):
            CalendarSync.for_user(db.session.get(User, people[email])).last_seen_at = datetime.now(UTC)
        db.session.commit()
        assert run_user_cycle(people["anna@demo.example"], trigger="test").status == "ok"
        assert run_user_cycle(people["bram@demo.example"], trigger="test").status == "ok"
        google.control("POST", "/users/bram@demo.example/rename", {"email": "bram.jansen@demo.example"})
        TOKENS.forget()
        for _ in range(2):
            assert run_user_cycle(people["bram@demo.example"], trigger="test").status == "failed"
            assert run_user_cycle(people["anna@demo.example"], trigger="test").status == "ok"
        yield organization.id


def test_helpdesk_diagnoses_a_broken_organization_from_the_chart_to_the_cause(browser, live_server, broken, shot):
    log_in(browser, live_server, "helpdesk@demo.example")
    wait(browser, EC.element_to_be_clickable((By.LINK_TEXT, "Helpdesk"))).click()
    row = wait(browser, EC.presence_of_element_located((By.ID, f"org-{broken}")))
    assert "org-problem" in row.get_attribute("class")
    assert "Error: 1" in row.text and "Healthy: 1" in row.text
    shot("index marks the broken organization")

    row.find_element(By.LINK_TEXT, "Demo Consulting").click()
    chart = wait(browser, EC.presence_of_element_located((By.CSS_SELECTOR, "svg.timeline")))
    failed = chart.find_elements(By.CSS_SELECTOR, "rect.mark-failed")
    assert failed, "the failed cycles are marked on the chart"
    hover = browser.execute_script(
        "return Array.from(document.querySelectorAll('g.slot-failed > title')).map(t => t.textContent)")
    assert any("failed" in text for text in hover)
    summary = browser.find_element(By.ID, "timeline-summary").text
    # the walk's two failures at least (a cycle a log-in or the scheduler starts may add one)
    assert int(re.search(r"(\d+) failed", summary).group(1)) >= 2
    shot("the chart shows the failed cycles")

    browser.find_element(By.CSS_SELECTOR, "#health-results a.health-error").click()
    wait(browser, lambda b: "active" in b.find_element(By.CSS_SELECTOR, "#health-results a.health-error")
         .get_attribute("class"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#user-health tbody tr")
    assert [r.find_element(By.TAG_NAME, "td").text.split("\n")[0] for r in rows] == ["bram@demo.example"]
    assert browser.find_element(By.ID, "health-state").get_attribute("value") == "error"
    shot("users filtered to error")

    search = browser.find_element(By.ID, "health-q")
    search.send_keys("anna")
    wait(browser, EC.text_to_be_present_in_element((By.CSS_SELECTOR, "#health-results"), "No user matches."))
    search.clear()
    search.send_keys("bram@")
    wait(browser, EC.text_to_be_present_in_element((By.CSS_SELECTOR, "#health-results"), "e-mail contains “bram@”"))
    assert browser.switch_to.active_element == search  # typing on is not interrupted
    row = browser.find_element(By.CSS_SELECTOR, "#user-health tbody tr.health-error")
    assert "bram@demo.example is not a user of the Google Workspace" in row.text
    assert "Fix: E-mail addresses must be the same in both systems" in row.text
    assert "?state=error&q=bram" in browser.current_url
    shot("the user found by e-mail, with cause and fix")

    entry = browser.find_element(By.ID, "error-unknown_user")
    browser.execute_script("arguments[0].scrollIntoView()", entry)
    assert "The user is not in the Google Workspace" in entry.text
    day, month = map(int, re.search(r"(\d+) in the last 24 hours · (\d+) in 30 days", entry.text).groups())
    assert day == month >= 2
    assert "Now: 1 affected" in entry.text
    shot("the error catalogue says how often and how to fix it")


def test_helpdesk_pages_fit_a_phone(browser, live_server, broken, phone, shot):
    log_in(phone, live_server, "helpdesk@demo.example")
    phone.get(live_server.url + "/helpdesk/")
    wait(phone, EC.presence_of_element_located((By.ID, f"org-{broken}")))
    assert sideways_overflow(phone) == []
    shot("index on a phone")
    phone.get(live_server.url + f"/helpdesk/organizations/{broken}")
    chart = wait(phone, EC.presence_of_element_located((By.CSS_SELECTOR, "svg.timeline")))
    assert sideways_overflow(phone) == []
    phone.execute_script("arguments[0].scrollIntoView()", chart)
    shot("organization on a phone: the chart scrolls within its card")
    phone.get(live_server.url + f"/helpdesk/organizations/{broken}?state=error#health")
    assert sideways_overflow(phone) == []
    shot("users with errors on a phone")


def test_the_admin_reads_the_same_diagnostics_from_settings_on_a_phone(browser, live_server, broken, phone, shot):
    log_in(phone, live_server, "admin@demo.example")
    phone.get(live_server.url + "/settings/integrations/google-calendar")
    link = wait(phone, EC.presence_of_element_located((By.PARTIAL_LINK_TEXT, "Calendar sync diagnostics")))
    phone.execute_script("arguments[0].click()", link)
    wait(phone, EC.presence_of_element_located((By.CSS_SELECTOR, "svg.timeline rect.mark-failed")))
    assert "bram@demo.example" in phone.find_element(By.ID, "user-health").text
    assert sideways_overflow(phone) == []
    shot("admin diagnostics on a phone")
