"""The week view in a real browser: the hour grid places items by time and overlapping ones side by side,
all-day items sit on top, an edit made in Google arrives after a sync cycle marked as synced; the week and list
views fit a phone's width."""

from datetime import datetime, time, timedelta

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from sqlalchemy import select

from portal.extensions import db
from portal.models import Activity, ProjectTask, User
from portal.sync.engine.run import run_user_cycle
from portal.sync.models import SyncLink
from tests.browser.conftest import sideways_overflow
from tests.browser.walk import WEEK_GRID, log_in, wait
from tests.conftest import GoogleUser
from tests.helpers import make_activity

pytestmark = pytest.mark.browser

ANNA = "anna@demo.example"


def anna(app):
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == ANNA))
        return user.id, user.zone


def this_tuesday(zone):
    today = datetime.now(zone).date()
    return today - timedelta(days=today.weekday()) + timedelta(days=1)


def add(app, owner, zone, day, subject, start, end, **values):
    def at(hours, minutes=0):
        return datetime.combine(day, time(hours, minutes), tzinfo=zone).isoformat()
    return make_activity(app, owner, subject=subject, start=at(*start), end=at(*end), time_zone=zone.key, **values)


def a_project_task(app):
    with app.app_context():
        return db.session.scalar(select(ProjectTask.id).order_by(ProjectTask.id).limit(1))


def item(browser, subject):
    """The grid item (its <li>) showing `subject`."""
    return browser.find_element(By.XPATH, f"//div[@id='week-grid']//li[contains(@class, 'item')]"
                                          f"[.//span[@class='subject' and text()='{subject}']]")


def test_week_grid_places_items_and_an_edit_in_google_arrives_synced(browser, live_server, live_app, google, shot):
    owner, zone = anna(live_app)
    tuesday = this_tuesday(zone)
    add(live_app, owner, zone, tuesday, "Nine sharp", (9, 0), (10, 0))
    add(live_app, owner, zone, tuesday, "Ten sharp", (10, 0), (11, 0))
    add(live_app, owner, zone, tuesday, "Overlap one", (14, 0), (15, 30))
    add(live_app, owner, zone, tuesday, "Overlap two", (15, 0), (16, 0), project_task=a_project_task(live_app))
    with live_app.app_context():
        cycle = run_user_cycle(owner, trigger="test")
        assert cycle is not None and cycle.status == "ok", cycle and cycle.status

    log_in(browser, live_server, ANNA, until=WEEK_GRID)
    shot("week view")
    nine, ten = item(browser, "Nine sharp").rect, item(browser, "Ten sharp").rect
    assert ten["y"] >= nine["y"] + nine["height"] - 2, (nine, ten)  # below it, not beside or over it
    assert abs(ten["x"] - nine["x"]) < 2 and ten["height"] == pytest.approx(nine["height"], abs=2)
    one, two = item(browser, "Overlap one").rect, item(browser, "Overlap two").rect
    assert one["x"] + one["width"] <= two["x"] + 1, (one, two)  # side by side
    assert two["y"] < one["y"] + one["height"] and one["height"] > two["height"]
    assert one["width"] == pytest.approx(two["width"], abs=2) and one["width"] < nine["width"] * 0.6

    # The all-day row is on top of the hours, in Friday's column.
    company_day = item(browser, "Company day")
    assert company_day.find_element(By.XPATH, "ancestor::ul").get_attribute("class") == "all-day"
    friday = browser.find_element(By.CSS_SELECTOR, f"section[data-day='{tuesday + timedelta(days=3)}'] .day-head")
    assert company_day.rect["y"] + company_day.rect["height"] <= nine["y"]
    assert friday.rect["x"] - 1 <= company_day.rect["x"] < friday.rect["x"] + friday.rect["width"]
    today = browser.find_element(By.CSS_SELECTOR, "section.today .day-head")
    assert today.get_attribute("aria-current") == "date"
    assert browser.find_elements(By.CSS_SELECTOR, "section.today .now-line")
    assert all(h.rect["height"] < 45 for h in browser.find_elements(By.CSS_SELECTOR, ".day-head time"))  # one line

    assert item(browser, "Nine sharp").find_element(By.CSS_SELECTOR, ".sync-mark").get_attribute("data-sync") == "synced"
    task = item(browser, "Overlap two").find_element(By.CSS_SELECTOR, ".sync-mark")
    assert task.get_attribute("data-sync") == "not_synced" and task.is_displayed()
    assert "project tasks are never synced" in task.get_attribute("title")

    # Full width; the item opens in a drawer over the grid's edge, which Escape closes, back to the item.
    grid = browser.find_element(By.ID, "week-grid")
    assert grid.rect["width"] > 0.9 * browser.find_element(By.TAG_NAME, "main").rect["width"]
    link = item(browser, "Nine sharp").find_element(By.TAG_NAME, "a")
    link.click()
    drawer = wait(browser, EC.visibility_of_element_located((By.ID, "editor-drawer")))
    wait(browser, EC.visibility_of_element_located((By.CSS_SELECTOR, "#editor form")))
    assert grid.rect["width"] > 0.9 * browser.find_element(By.TAG_NAME, "main").rect["width"]
    assert drawer.rect["x"] > grid.rect["x"] + grid.rect["width"] / 2
    shot("item opened in the drawer")
    browser.switch_to.active_element.send_keys(Keys.ESCAPE)
    wait(browser, EC.invisibility_of_element_located((By.ID, "editor-drawer")))
    assert browser.switch_to.active_element == link

    # Anna moves the customer visit in Google Calendar; the next cycle brings it in.
    with live_app.app_context():
        visit = db.session.scalar(select(Activity).where(Activity.subject == "Visit Acme B.V."))
        event_id = db.session.scalar(select(SyncLink.google_event_id).where(SyncLink.activity_id == visit.id))
        day = visit.start_at.astimezone(zone).date()
    start = datetime.combine(day, time(16), tzinfo=zone)
    GoogleUser(google, ANNA).patch(event_id, summary="Visit Acme B.V. (later)",
                                   start={"dateTime": start.isoformat(), "timeZone": zone.key},
                                   end={"dateTime": (start + timedelta(hours=1)).isoformat(), "timeZone": zone.key})
    with live_app.app_context():
        assert run_user_cycle(owner, trigger="test").status == "ok"
    browser.refresh()
    moved = wait(browser, lambda b: item(b, "Visit Acme B.V. (later)"))
    assert moved.find_element(By.CSS_SELECTOR, ".when").text == "16:00–17:00"
    mark = moved.find_element(By.CSS_SELECTOR, ".sync-mark")
    assert mark.get_attribute("data-sync") == "synced"
    assert "Synced with Google Calendar" in mark.get_attribute("title")
    assert moved.rect["y"] > item(browser, "Ten sharp").rect["y"]
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", moved)
    shot("edit from Google arrived, synced")


def test_week_and_list_fit_a_phone(browser, live_server, live_app, phone, shot):
    log_in(phone, live_server, ANNA, until=WEEK_GRID)
    assert sideways_overflow(phone) == []
    assert phone.find_element(By.XPATH, "//span[@class='subject' and text()='Weekly team meeting']").is_displayed()
    shot("week at 375 px")
    phone.get(live_server.url + "/calendar/list")
    wait(phone, EC.presence_of_element_located((By.ID, "activity-rows")))
    assert sideways_overflow(phone) == []
    shot("list at 375 px")
    phone.find_element(By.LINK_TEXT, "Weekly team meeting").click()
    wait(phone, EC.visibility_of_element_located((By.CSS_SELECTOR, "#editor form")))
    assert sideways_overflow(phone) == []
    shot("item opened at 375 px")
