"""The activity editor in Chromium: created by keyboard alone, focus where the work continues, answered by a
participant, and at a phone's width."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.select import Select
from sqlalchemy import select

from portal.extensions import db
from portal.models import Activity, ActivityParticipant
from tests.browser.conftest import sideways_overflow
from tests.browser.walk import WEEK_GRID, focused, keys, log_in, log_in_by_keyboard, tab_to, wait

pytestmark = pytest.mark.browser

AMSTERDAM = ZoneInfo("Europe/Amsterdam")  # the demo users' zone


def named(name, value=None):
    return lambda f: f["name"] == name and (value is None or f["value"] == value)


def open_new_activity(browser):
    browser.find_element(By.LINK_TEXT, "New activity").click()
    return wait(browser, EC.visibility_of_element_located((By.CSS_SELECTOR, "#editor #activity-form")))


def next_weeks_tuesday():
    today = datetime.now(AMSTERDAM).date()
    return today - timedelta(days=today.weekday()) + timedelta(days=8)


def test_a_weekly_item_with_a_participant_is_created_by_keyboard_alone(browser, live_server, live_app, shot):
    log_in_by_keyboard(browser, live_server, "anna@demo.example")
    shot("calendar")
    tab_to(browser, lambda f: f["tag"] == "a" and f["text"] == "New activity")
    keys(browser, Keys.ENTER)
    wait(browser, EC.visibility_of_element_located((By.CSS_SELECTOR, "#editor #activity-form")))
    wait(browser, lambda b: focused(b)["name"] == "subject")
    shot("editor open, focus on the subject")

    day = next_weeks_tuesday()
    typed_day = day.strftime("%m%d%Y")  # Chromium's date field in its en-US locale: month, day, year
    keys(browser, "Keyboard weekly review")
    tab_to(browser, named("start_date"))
    keys(browser, typed_day)
    tab_to(browser, named("start_time"))
    keys(browser, "1000AM")
    tab_to(browser, named("end_date"))
    keys(browser, typed_day)
    tab_to(browser, named("end_time"))
    keys(browser, "1100AM")
    tab_to(browser, named("freq"))
    keys(browser, "W")  # a closed select takes the option starting with the typed letter: Weekly
    weekdays = wait(browser, EC.visibility_of_element_located((By.ID, "repeat-weekdays")))
    assert not browser.find_element(By.ID, "repeat-monthly").is_displayed()
    assert not browser.find_element(By.ID, "repeat-until").is_displayed()
    tab_to(browser, named("byday", day.strftime("%a")[:2].upper()))
    keys(browser, Keys.SPACE)
    assert weekdays.find_element(By.CSS_SELECTOR, "input[value=TU]").is_selected()
    shot("weekly on Tuesday")

    tab_to(browser, lambda f: f["id"] == "participant-filter")
    keys(browser, "bram")
    assert not browser.find_element(By.CSS_SELECTOR, "input[name=participants][value='admin@demo.example']"
                                    ).is_displayed()
    tab_to(browser, named("participants", "bram@demo.example"))
    keys(browser, Keys.SPACE)
    shot("participant ticked")
    tab_to(browser, lambda f: f["type"] == "submit" and f["form"] == "editor-form")
    keys(browser, Keys.ENTER)
    wait(browser, EC.text_to_be_present_in_element((By.ID, "editor"), "Created"))
    wait(browser, lambda b: focused(b)["id"] == "saved-message")
    shot("created, focus on the message")

    with live_app.app_context():
        activity = db.session.scalars(select(Activity).where(Activity.subject == "Keyboard weekly review")).one()
        assert activity.recurrence == ["RRULE:FREQ=WEEKLY;BYDAY=TU"]
        assert [u.email for u in activity.participants] == ["bram@demo.example"]
        assert activity.local_start().strftime("%Y-%m-%d %H:%M") == f"{day.isoformat()} 10:00"

    tab_to(browser, lambda f: f["tag"] == "a" and f["text"].startswith("Next week"), back=True)
    grid = browser.find_element(By.ID, "week-grid")
    keys(browser, Keys.ENTER)
    wait(browser, EC.staleness_of(grid))
    tuesday = wait(browser, EC.presence_of_element_located(
        (By.CSS_SELECTOR, f'#week-grid [data-day="{day.isoformat()}"]')))
    assert "Keyboard weekly review" in tuesday.text
    shot("in the calendar")


def test_focus_moves_into_the_editor_save_is_near_and_escape_closes_it(browser, live_server):
    log_in(browser, live_server, "anna@demo.example", until=WEEK_GRID)
    open_new_activity(browser)
    wait(browser, lambda b: focused(b)["name"] == "subject")
    presses = tab_to(browser, lambda f: f["type"] == "submit" and f["form"] == "editor-form", limit=40)
    assert presses <= 15
    keys(browser, Keys.ESCAPE)
    wait(browser, lambda b: not b.find_element(By.ID, "editor").find_elements(By.CSS_SELECTOR, "*"))
    assert focused(browser)["text"] == "New activity"  # back where the person was


def test_the_editor_lays_out_its_controls_where_they_belong(browser, live_server, live_app):
    log_in(browser, live_server, "anna@demo.example", until=WEEK_GRID)
    with live_app.app_context():
        weekly = db.session.scalars(select(Activity).where(Activity.subject == "Weekly team meeting")).one()
        key = weekly.occurrences_shown(weekly.start_at, weekly.start_at + timedelta(days=30), limit=3,
                                       budget=1000)[0][0].key
    browser.get(f"{live_server.url}/calendar/activities/{weekly.id}?occurrence={key}")
    wait(browser, EC.visibility_of_element_located((By.ID, "scope")))
    # Each radio sits just before its own words, on their line.
    for radio in browser.find_elements(By.CSS_SELECTOR, "#scope input[type=radio]"):
        box, label = radio.rect, radio.find_element(By.XPATH, "..").rect
        assert box["width"] < 30 and abs(box["x"] - label["x"]) < 12, (box, label)
    Select(browser.find_element(By.NAME, "ends")).select_by_value("count")
    assert browser.find_element(By.ID, "repeat-count").is_displayed()
    assert not browser.find_element(By.ID, "repeat-until").is_displayed()
    fits = browser.execute_script("""
        const select = document.querySelector('select[name=ends]'), form = document.getElementById('editor-form');
        const probe = document.createElement('span'); probe.style.font = getComputedStyle(select).font;
        probe.textContent = select.options[select.selectedIndex].text; document.body.append(probe);
        const needed = probe.getBoundingClientRect().width; probe.remove();
        const box = select.getBoundingClientRect();
        return [box.width, needed, box.right, form.getBoundingClientRect().right];
    """)
    assert fits[0] >= fits[1] + 16 and fits[2] <= fits[3] + 1, fits
    assert len(browser.find_elements(By.CSS_SELECTOR, "#editor button.danger")) == 1
    # The question before deleting follows the choice.
    delete_form = browser.find_element(By.ID, "delete-form")
    assert delete_form.get_attribute("hx-confirm").startswith("Delete the occurrence of")
    delete_form.find_element(By.CSS_SELECTOR, "input[name=scope][value=all]").click()
    assert delete_form.get_attribute("hx-confirm").endswith("and all its occurrences?")


def test_a_participant_declines_then_accepts(browser, live_server, live_app, shot):
    log_in(browser, live_server, "bram@demo.example", until=WEEK_GRID)
    shot("participant's calendar")
    browser.find_element(By.PARTIAL_LINK_TEXT, "Weekly team meeting").click()
    view = wait(browser, EC.visibility_of_element_located((By.CSS_SELECTOR, "#editor #activity-view")))
    assert "Anna de Vries" in view.text and not view.find_elements(By.NAME, "subject")
    shot("read view with the owner and answer buttons")

    view.find_element(By.CSS_SELECTOR, "button[value=declined]").click()
    wait(browser, EC.text_to_be_present_in_element((By.ID, "editor"), "Answered"))
    pressed = browser.find_element(By.CSS_SELECTOR, "#editor button[aria-pressed=true]")
    assert pressed.get_attribute("value") == "declined"
    assert focused(browser)["id"] == "answer-message"
    shot("declined")

    browser.find_element(By.CSS_SELECTOR, "#editor button[value=accepted]").click()
    wait(browser, EC.text_to_be_present_in_element((By.CSS_SELECTOR, "#editor #answer-message"), "accepted"))
    assert browser.find_element(By.CSS_SELECTOR, "#editor button[aria-pressed=true]").get_attribute(
        "value") == "accepted"
    shot("accepted")
    with live_app.app_context():
        row = db.session.scalars(select(ActivityParticipant).join(Activity).where(
            Activity.subject == "Weekly team meeting")).one()
        assert (row.user.email, row.response_status, row.response_pending) == ("bram@demo.example", "accepted", True)

    browser.refresh()  # the answer stays
    wait(browser, EC.presence_of_element_located((By.ID, "week-grid")))
    browser.find_element(By.PARTIAL_LINK_TEXT, "Weekly team meeting").click()
    wait(browser, EC.visibility_of_element_located((By.CSS_SELECTOR, "#editor #activity-view")))
    assert browser.find_element(By.CSS_SELECTOR, "#editor button[aria-pressed=true]").get_attribute(
        "value") == "accepted"


def test_the_editor_at_a_phones_width(phone, live_server, shot):
    log_in(phone, live_server, "anna@demo.example", until=WEEK_GRID)
    form = open_new_activity(phone)
    Select(form.find_element(By.NAME, "freq")).select_by_value("WEEKLY")
    Select(form.find_element(By.NAME, "ends")).select_by_value("until")
    assert form.find_element(By.ID, "repeat-until").is_displayed()
    shot("new weekly item at 375 px")
    assert sideways_overflow(phone) == []
    phone.find_element(By.LINK_TEXT, "Cancel").click()
    wait(phone, lambda b: not b.find_element(By.ID, "editor").find_elements(By.CSS_SELECTOR, "*"))
    phone.find_element(By.PARTIAL_LINK_TEXT, "Weekly team meeting").click()
    wait(phone, EC.visibility_of_element_located((By.ID, "delete-form")))
    shot("one occurrence at 375 px")
    assert sideways_overflow(phone) == []
