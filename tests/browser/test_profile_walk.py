"""My profile in a real browser: the calendar sync switch worked by keyboard alone, and the profile pages on a
375 px phone without sideways scrolling."""

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from sqlalchemy import select

from portal.extensions import db
from portal.models import User
from portal.sync.models import CalendarSync
from tests.browser.conftest import sideways_overflow
from tests.browser.walk import log_in, switch_state, tab_to, wait

pytestmark = pytest.mark.browser

ANNA = "anna@demo.example"


MAIN_NAV = (By.CSS_SELECTOR, "nav[aria-label=Main]")


@pytest.fixture
def google(google, live_app):
    """The demo organization connected to the emulator, Anna's own sync still off."""
    with live_app.app_context():
        anna = db.session.scalar(select(User).where(User.email == ANNA))
        CalendarSync.for_user(anna).switch(False)
        db.session.commit()
    return google


def test_user_switches_sync_on_and_off_by_keyboard(browser, live_server, live_app, google, shot):
    log_in(browser, live_server, ANNA, until=MAIN_NAV)
    browser.find_element(By.LINK_TEXT, "My profile › Calendar sync").click()
    wait(browser, EC.presence_of_element_located((By.ID, "sync-switch")))
    assert browser.find_element(By.ID, "sync-switch-label").text == "Sync my calendar with Google"
    assert switch_state(browser, "sync-switch") == ("false", "Off")
    shot("profile with the switch off")

    browser.find_element(By.TAG_NAME, "body").click()
    tab_to(browser, lambda f: f["id"] == "sync-switch", limit=40)
    shot("switch focused by Tab")
    browser.switch_to.active_element.send_keys(Keys.SPACE)
    wait(browser, EC.text_to_be_present_in_element((By.ID, "sync-switch-state"), "On"))
    assert switch_state(browser, "sync-switch") == ("true", "On")
    status = browser.find_element(By.ID, "sync-status").text
    assert status.split(" —")[0] in ("First sync under way", "Healthy")
    with live_app.app_context():
        assert db.session.scalar(select(CalendarSync.enabled).join(User).where(User.email == ANNA)) is True
    shot("switched on with Space")

    # The focus stays on the switch after the swap, so the keyboard user switches back without hunting for it.
    assert browser.switch_to.active_element.get_attribute("id") == "sync-switch"
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    wait(browser, EC.text_to_be_present_in_element((By.ID, "sync-switch-state"), "Off"))
    assert switch_state(browser, "sync-switch") == ("false", "Off")
    assert browser.find_element(By.ID, "sync-status").text.startswith("Off")
    with live_app.app_context():
        assert db.session.scalar(select(CalendarSync.enabled).join(User).where(User.email == ANNA)) is False
    shot("switched off with Enter")


def fill_profile(app):
    """What makes the profile pages wide: a conflict with long values, an item that could not be synced, sync
    runs, an API token in the table."""
    from portal.models import Activity
    from portal.signin_models import ApiToken
    from portal.sync.models import SyncJournalEntry, SyncLink

    with app.app_context():
        anna = db.session.scalar(select(User).where(User.email == ANNA))
        activity = db.session.scalars(select(Activity).where(Activity.owner_id == anna.id)).first()
        db.session.add(SyncJournalEntry(organization_id=anna.organization_id, activity_id=activity.id,
                                        kind="conflict", side="portal", field="location",
                                        before="Meeting room Amsterdam-Zuid, third floor, next to the kitchen",
                                        after="https://meet.example.com/a-very-long-address-without-any-spaces"))
        link = db.session.scalar(select(SyncLink).where(SyncLink.activity_id == activity.id))
        if link is None:
            link = SyncLink(organization_id=anna.organization_id, activity_id=activity.id, google_event_id="x1",
                            calendar_email=ANNA, origin="portal", confirmed=True)
            db.session.add(link)
        link.error_message = "Google refused the event: Invalid attendee email."
        token, _secret = ApiToken.issue(anna, name="Reporting script for the monthly figures")
        db.session.add(token)
        db.session.commit()


@pytest.mark.parametrize("path", ["/profile/calendar-sync", "/profile/security", "/profile/api-tokens",
                                  "/profile/calendar-sync/changes"])
def test_profile_pages_fit_a_phone(browser, live_server, live_app, google, phone, shot, path):
    with live_app.app_context():
        CalendarSync.for_user(db.session.scalar(select(User).where(User.email == ANNA))).switch(True)
        db.session.commit()
    fill_profile(live_app)
    log_in(phone, live_server, ANNA, until=MAIN_NAV)
    phone.get(live_server.url + path)
    wait(phone, EC.presence_of_element_located((By.TAG_NAME, "h1")))
    assert "Not found" not in phone.title
    shot(path.strip("/").replace("/", "-") + " at 375 px")
    assert sideways_overflow(phone) == []
