"""A demo user logs in and creates, edits and deletes a weekly series with a participant, in a real browser."""

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.select import Select
from sqlalchemy import select

from portal.extensions import db
from portal.models import Activity
from tests.browser.walk import WEEK_GRID, log_in, wait

pytestmark = pytest.mark.browser


def fill(browser, name, value):
    field = browser.find_element(By.CSS_SELECTOR, f"#editor [name={name}]")
    browser.execute_script("arguments[0].value = arguments[1]", field, value)


def test_create_edit_delete_weekly_series_in_the_browser(browser, live_server, live_app):
    log_in(browser, live_server, "anna@demo.example", until=WEEK_GRID)
    browser.find_element(By.LINK_TEXT, "New activity").click()
    form = wait(browser, EC.visibility_of_element_located((By.CSS_SELECTOR, "#editor #activity-form")))
    assert browser.current_url.endswith("/calendar/")  # opened in place by htmx, no page load

    form.find_element(By.NAME, "subject").send_keys("Browser weekly sync-up")
    fill(browser, "start_date", "2026-12-01")
    fill(browser, "start_time", "10:00")
    fill(browser, "end_date", "2026-12-01")
    fill(browser, "end_time", "11:00")
    Select(form.find_element(By.NAME, "freq")).select_by_value("WEEKLY")
    form.find_element(By.CSS_SELECTOR, "input[name=byday][value=TU]").click()
    form.find_element(By.CSS_SELECTOR, "input[name=participants][value='bram@demo.example']").click()
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(browser, EC.text_to_be_present_in_element((By.ID, "editor"), "Created"))

    with live_app.app_context():
        activity = db.session.scalars(select(Activity).where(Activity.subject == "Browser weekly sync-up")).one()
        assert "FREQ=WEEKLY" in activity.recurrence[0] and "BYDAY=TU" in activity.recurrence[0]
        assert [u.email for u in activity.participants] == ["bram@demo.example"]
        activity_id = activity.id

    browser.get(live_server.url + "/calendar/?week=2026-12-08")
    link = wait(browser, EC.element_to_be_clickable((By.PARTIAL_LINK_TEXT, "Browser weekly sync-up")))
    link.click()
    form = wait(browser, EC.visibility_of_element_located((By.CSS_SELECTOR, "#editor #activity-form")))
    subject = form.find_element(By.NAME, "subject")
    subject.clear()
    subject.send_keys("Browser weekly sync-up (moved)")
    # An opened occurrence starts with "This occurrence", as in Google; this walk changes the whole series.
    assert form.find_element(By.CSS_SELECTOR, "#scope input[value=this]").is_selected()
    form.find_element(By.CSS_SELECTOR, "#scope input[value=all]").click()
    fill(browser, "end_time", "09:00")  # invalid first: the error shows next to the field
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    error = wait(browser, EC.visibility_of_element_located((By.ID, "error-end")))
    assert "before the start" in error.text
    fill(browser, "end_time", "11:30")
    browser.find_element(By.CSS_SELECTOR, "#editor button[type=submit]").click()
    wait(browser, EC.text_to_be_present_in_element((By.ID, "editor"), "Saved"))
    assert "Browser weekly sync-up (moved)" in browser.find_element(By.ID, "week-grid").text

    with live_app.app_context():
        assert db.session.get(Activity, activity_id).local_end().strftime("%H:%M") == "11:30"

    browser.find_element(By.PARTIAL_LINK_TEXT, "Browser weekly sync-up (moved)").click()
    delete = wait(browser, EC.element_to_be_clickable((By.CSS_SELECTOR, "#editor button.danger")))
    browser.find_element(By.CSS_SELECTOR, "#delete-form input[name=scope][value=all]").click()
    delete.click()
    wait(browser, EC.alert_is_present()).accept()  # hx-confirm
    wait(browser, EC.text_to_be_present_in_element((By.ID, "editor"), "Deleted"))
    assert "Browser weekly sync-up" not in browser.find_element(By.ID, "week-grid").text
    with live_app.app_context():
        assert db.session.get(Activity, activity_id).is_deleted


def test_pages_work_without_javascript_links(browser, live_server):
    """The week navigation is a real link: following its href loads the next week."""
    log_in(browser, live_server, "anna@demo.example", until=WEEK_GRID)
    href = browser.find_element(By.PARTIAL_LINK_TEXT, "Next week").get_attribute("href")
    browser.get(href)
    assert "week=" in browser.current_url
    assert browser.find_element(By.ID, "week-grid")


def test_pages_run_under_the_content_security_policy(browser, live_server):
    """No inline script or style: the type colours come from data attributes through portal.js, also in what
    htmx swaps in, and the browser reports nothing refused (the `browser` fixture checks its console)."""
    from tests.browser.conftest import csp_violations

    log_in(browser, live_server, "anna@demo.example", until=WEEK_GRID)  # the demo has items in the current week
    wait(browser, EC.presence_of_element_located((By.CSS_SELECTOR, "#week-grid .item[data-colour]")))
    for label in ("Next week", "Previous week"):  # back to this week, swapped in by htmx
        grid = browser.find_element(By.ID, "week-grid")
        browser.find_element(By.PARTIAL_LINK_TEXT, label).click()
        wait(browser, EC.staleness_of(grid))
    item = wait(browser, EC.presence_of_element_located((By.CSS_SELECTOR, "#week-grid .item[data-colour]")))
    painted = browser.execute_script(
        "const probe = document.createElement('i'); probe.style.color = arguments[0].dataset.colour;"
        "document.body.append(probe); const want = getComputedStyle(probe).color; probe.remove();"
        "return [getComputedStyle(arguments[0]).borderLeftColor, want];", item)
    assert painted[0] == painted[1], painted
    assert csp_violations(browser) == []
