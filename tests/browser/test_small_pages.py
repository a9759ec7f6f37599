"""The pages around the others, on a phone and by keyboard: logging in, the top bar and its navigation, the
demo banner, the trash and the error pages."""

from __future__ import annotations

import re

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from sqlalchemy import select

from portal.extensions import db
from tests.browser.conftest import PHONE_WIDTH, sideways_overflow
from tests.browser.walk import PASSWORD, focused, keys, log_in_by_keyboard, shift_tab, wait

pytestmark = pytest.mark.browser

ZONED = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} (CET|CEST)")
WHOAMI = (By.CSS_SELECTOR, "form.whoami")  # the top bar of a logged-in page
MIN_TARGET = 24  # px: the smallest tap target WCAG 2.2 (2.5.8) accepts


def fits(browser):
    assert sideways_overflow(browser) == []


def test_logging_in_by_keyboard_alone_on_a_phone(browser, phone, live_server, shot):
    phone.get(live_server.url + "/login")
    shot("log-in page")
    fits(phone)
    assert focused(phone)["name"] == "email"  # no click needed to start typing
    keys(phone, "anna@demo.example", Keys.TAB, "not-her-password", Keys.ENTER)

    alert = wait(phone, EC.visibility_of_element_located((By.CSS_SELECTOR, "main [role=alert]")))
    shot("refused, with the reason")
    fits(phone)
    assert "message" in alert.get_attribute("class").split() and "error" in alert.get_attribute("class").split()
    assert "Logging in failed" in alert.text
    # The address is kept and the cursor waits in the password, the field to type again.
    assert phone.find_element(By.NAME, "email").get_attribute("value") == "anna@demo.example"
    assert focused(phone)["name"] == "password"
    keys(phone, PASSWORD, Keys.ENTER)

    wait(phone, EC.presence_of_element_located((By.CSS_SELECTOR, "form.whoami")))
    shot("logged in")
    fits(phone)
    assert "/calendar" in phone.current_url


def test_the_top_bar_wraps_whole_links_that_are_easy_to_tap(browser, phone, live_server, shot):
    log_in_by_keyboard(phone, live_server, "admin@demo.example", until=WHOAMI)
    phone.get(live_server.url + "/calendar/trash")
    shot("admin's top bar at 375 px")
    fits(phone)
    nav = phone.find_element(By.CSS_SELECTOR, "nav[aria-label=Main]")
    links = nav.find_elements(By.TAG_NAME, "a")
    texts = [link.text for link in links]
    assert "Settings › Integrations › Google Calendar" in texts and "My profile › Calendar sync" in texts
    for link in links:
        box = phone.execute_script("""
            const r = arguments[0].getBoundingClientRect();
            return {lines: arguments[0].getClientRects().length, height: r.height, left: r.left, right: r.right};
        """, link)
        assert box["lines"] == 1, f"{link.text!r} is broken over {box['lines']} lines"
        assert box["height"] >= MIN_TARGET, f"{link.text!r} is {box['height']} px high"
        assert 0 <= box["left"] and box["right"] <= PHONE_WIDTH
    log_out = phone.find_element(By.CSS_SELECTOR, "form.whoami button")
    assert log_out.size["height"] >= MIN_TARGET
    # The page says where one is: the current area's link is marked for screen readers too.
    assert [link.text for link in links if link.get_attribute("aria-current") == "page"] == ["Calendar"]
    # Who is logged in, in words (not the role's code).
    assert "Ada Admin" in phone.find_element(By.CSS_SELECTOR, "form.whoami").text
    assert "Admin" in phone.find_element(By.CSS_SELECTOR, "form.whoami .who-role").text
    # The top bar leaves most of the screen to the page.
    header = phone.find_element(By.CSS_SELECTOR, "header.topbar")
    assert header.size["height"] <= 0.3 * phone.execute_script("return window.innerHeight")

    # By keyboard: from the top of the page, Tab walks the brand, each link of the menu, then Log out.
    phone.find_element(By.TAG_NAME, "body").click()
    phone.execute_script("document.activeElement.blur(); window.scrollTo(0, 0)")
    walked = []
    for _ in range(len(links) + 2):
        keys(phone, Keys.TAB) if walked else phone.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
        walked.append(phone.switch_to.active_element.text)
    assert walked == ["PSA Portal", *texts, "Log out"]
    shift_tab(phone)
    keys(phone, Keys.ENTER)  # the last menu link: My profile › Calendar sync
    wait(phone, EC.url_contains("/profile/calendar-sync"))
    shot("the profile, reached by keyboard")


def test_the_demo_banner_fits_a_phone(browser, phone, live_app, live_server, shot):
    live_app.config["DEMO_GOOGLE"] = True
    phone.get(live_server.url + "/login")
    banner = phone.find_element(By.CSS_SELECTOR, ".demo-banner")
    shot("demo banner at 375 px")
    fits(phone)
    assert "emulated Google" in banner.text
    assert banner.get_attribute("role") == "note"
    assert banner.size["height"] <= 80  # a note, not half the screen


def _trash_activity(app, subject):
    from portal.activities import delete_activity
    from portal.changes import changed_by
    from portal.models import Activity

    with app.app_context():
        activity = db.session.scalars(select(Activity).where(Activity.subject == subject)).one()
        changed_by(db.session, activity.owner_id)
        delete_activity(activity)
        db.session.commit()
        return activity.id


def test_the_trash_on_a_phone_shows_zoned_times_and_restores_by_keyboard(browser, phone, live_app, live_server, shot):
    visit = _trash_activity(live_app, "Visit Acme B.V.")
    _trash_activity(live_app, "Company day")
    log_in_by_keyboard(phone, live_server, "anna@demo.example", until=WHOAMI)
    phone.get(live_server.url + "/calendar/trash")
    shot("trash with two items at 375 px")
    fits(phone)
    row = phone.find_element(By.ID, f"trash-{visit}")
    assert "Visit Acme B.V." in row.text
    assert len(ZONED.findall(row.text)) >= 2, row.text  # when it was, when it was deleted: with their zone
    assert "Restorable until" in row.text
    button = row.find_element(By.TAG_NAME, "button")
    assert button.get_attribute("aria-label") == "Restore “Visit Acme B.V.”"
    assert button.size["height"] >= MIN_TARGET

    # Tab to the button, Enter: back in the calendar, the trash says so.
    phone.execute_script("arguments[0].focus()", phone.find_element(By.CSS_SELECTOR, "main a"))
    for _ in range(30):
        if phone.switch_to.active_element == button:
            break
        keys(phone, Keys.TAB)
    assert phone.switch_to.active_element == button
    keys(phone, Keys.ENTER)
    notice = wait(phone, EC.visibility_of_element_located((By.CSS_SELECTOR, "main .message.success")))
    shot("restored")
    fits(phone)
    assert "Visit Acme B.V." in notice.text
    assert not phone.find_elements(By.ID, f"trash-{visit}")


@pytest.mark.parametrize("who, path, code", [("anonymous", "/no-such-page", 404),
                                             ("anna@demo.example", "/helpdesk/", 403),
                                             ("anna@demo.example", "/calendar/activities/999999", 404)])
def test_error_pages_say_what_happened_in_words_on_a_phone(browser, phone, live_server, shot, who, path, code):
    if who != "anonymous":
        log_in_by_keyboard(phone, live_server, who, until=WHOAMI)
    phone.get(live_server.url + path)
    shot(f"{code} at 375 px")
    fits(phone)
    heading = phone.find_element(By.TAG_NAME, "h1").text
    assert heading in ("Not found", "Forbidden") and str(code) not in heading  # words first
    assert f"Error {code}" in phone.find_element(By.TAG_NAME, "main").text  # the code for whoever asks
    onward = phone.find_element(By.CSS_SELECTOR, "main a.button")
    assert onward.text == ("Log in" if who == "anonymous" else "Go to the calendar")
    onward.send_keys(Keys.ENTER)
    wait(phone, EC.url_contains("/login" if who == "anonymous" else "/calendar"))


def test_the_top_bar_stays_one_line_on_a_wide_screen(browser, live_server, shot):
    log_in_by_keyboard(browser, live_server, "admin@demo.example", until=WHOAMI)
    browser.get(live_server.url + "/profile/calendar-sync")
    shot("admin's top bar, wide")
    header = browser.find_element(By.CSS_SELECTOR, "header.topbar")
    assert header.size["height"] <= 60
    who = browser.find_element(By.CSS_SELECTOR, "form.whoami .who").text
    assert who.replace("\n", " ") == "Ada Admin · Demo Consulting · Admin"
    assert [a.text for a in browser.find_elements(By.CSS_SELECTOR, "nav[aria-label=Main] a[aria-current=page]")] \
        == ["My profile › Calendar sync"]
