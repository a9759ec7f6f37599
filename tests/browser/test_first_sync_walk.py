"""A demo user previews their first sync, switches sync on, watches it progress and sees it synced, in a real
browser against the emulated Google."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from sqlalchemy import func, select

from portal.extensions import db
from portal.models import User
from portal.sync import engine
from portal.sync.models import CalendarSync, SyncCycle, SyncLink
from tests.browser import walk
from tests.browser.conftest import PHONE_WIDTH, WIDE, connect_demo, sideways_overflow
from tests.conftest import GoogleUser

pytestmark = pytest.mark.browser

ANNA = "anna@demo.example"


def wait(browser, condition):
    """Longer than the other walks wait: the app's own scheduler runs the first sync meanwhile."""
    return walk.wait(browser, condition, timeout=15)


@pytest.fixture
def google(emulated_google, live_app):
    """The demo organization connected to an emulated Google, nobody's own sync on yet (so Anna's first sync
    is the first to write anything). Not the shared `google`: this emulator sends no webhooks to the portal, and
    writes go in batches of two."""
    server = emulated_google(SYNC_BATCH_SIZE=2)  # a write batch of two items: the progress has steps to show
    connect_demo(live_app, server)
    with live_app.app_context():
        for row in db.session.scalars(select(CalendarSync)):
            row.switch(False)
        db.session.commit()
    return server


def test_user_previews_switches_on_and_watches_the_first_sync(browser, live_server, live_app, google, shot):
    calendar = GoogleUser(google, ANNA)
    soon = datetime.now(UTC).replace(microsecond=0, second=0, minute=0) + timedelta(days=2)
    calendar.insert(summary="Quarterly review", start={"dateTime": soon.isoformat(), "timeZone": "UTC"},
                    end={"dateTime": (soon + timedelta(hours=1)).isoformat(), "timeZone": "UTC"})
    old = soon - timedelta(days=50)
    calendar.insert(summary="Last season's offsite", start={"dateTime": old.isoformat(), "timeZone": "UTC"},
                    end={"dateTime": (old + timedelta(hours=3)).isoformat(), "timeZone": "UTC"})
    events_before = sorted((e["id"], e["etag"]) for e in calendar.list(showDeleted=True))

    walk.log_in(browser, live_server, ANNA, until=walk.WEEK_GRID, timeout=15)
    browser.get(live_server.url + "/profile/calendar-sync")

    # Preview: what switching on would do, nothing changed yet.
    wait(browser, EC.element_to_be_clickable((By.ID, "preview-button"))).click()
    result = wait(browser, EC.visibility_of_element_located((By.CSS_SELECTOR, "#first-sync-preview .preview-result")))
    assert browser.current_url.endswith("/profile/calendar-sync")  # in place, by htmx
    to_portal = int(browser.find_element(By.ID, "preview-to-portal-count").text)
    to_google = int(browser.find_element(By.ID, "preview-to-google-count").text)
    assert to_portal == 1 and "Quarterly review" in browser.find_element(By.ID, "preview-to-portal").text
    assert to_google >= 1
    assert "Last season's offsite" in result.text and "left alone" in result.text
    shot("preview")
    browser.set_window_size(PHONE_WIDTH, 800)  # the preview's lists fit a phone
    try:
        assert sideways_overflow(browser) == []
        browser.execute_script("document.getElementById('preview-title').scrollIntoView()")
        shot("preview on a phone")
    finally:
        browser.set_window_size(*WIDE)
    assert sorted((e["id"], e["etag"]) for e in calendar.list(showDeleted=True)) == events_before
    with live_app.app_context():
        assert db.session.scalar(select(func.count()).select_from(SyncLink)) == 0

    # Switch on. The app's own scheduler runs the first sync; it is held after its first write batch, so
    # the walk sees it under way.
    reached, release = threading.Event(), threading.Event()

    def hold(name):
        if name == "first-sync-slice" and not reached.is_set():
            reached.set()
            release.wait(30)

    engine.CHECKPOINTS.append(hold)
    try:
        browser.find_element(By.CSS_SELECTOR, "#calendar-sync [role=switch]").click()
        wait(browser, EC.presence_of_element_located((By.CSS_SELECTOR,
                                                      "#calendar-sync [role=switch][aria-checked=true]")))
        wait(browser, EC.text_to_be_present_in_element((By.ID, "first-sync-progress"), "First sync"))
        shot("switched on")
        assert reached.wait(30), "the first sync never reached its first batch"
        wait(browser, EC.text_to_be_present_in_element((By.ID, "first-sync-count"), f"2 of {to_google + to_portal}"))
        assert attribute(browser, "first-sync-progress", "hx-trigger") == "every 2s"  # polls while it runs
        shot("progress")
    finally:
        release.set()
        engine.CHECKPOINTS.remove(hold)

    done = wait(browser, EC.text_to_be_present_in_element((By.ID, "first-sync-progress"), "First sync done"))
    assert done
    # The last poll refreshes the card once: its status is the user's health now, and nothing polls.
    wait(browser, EC.text_to_be_present_in_element((By.ID, "sync-status"), "Healthy"))
    assert attribute(browser, "first-sync-progress", "hx-trigger") is None
    assert "every" not in (attribute(browser, "sync-card", "hx-trigger") or "")
    shot("synced")
    with live_app.app_context():
        cycle = db.session.scalars(select(SyncCycle).join(User, User.id == SyncCycle.user_id)
                                   .where(User.email == ANNA).order_by(SyncCycle.id)).first()
        assert cycle.status == "ok", cycle.message
    assert "Quarterly review" in [a.subject for a in _activities(live_app)]
    assert {e["summary"] for e in calendar.live()} >= {"Quarterly review", "Weekly team meeting"}


def attribute(browser, element_id, name):
    """Read in one step: the polled element may be swapped between finding it and reading it."""
    return browser.execute_script("const e = document.getElementById(arguments[0]); "
                                  "return e ? e.getAttribute(arguments[1]) : undefined;", element_id, name)


def _activities(app):
    from portal.models import Activity

    with app.app_context():
        rows = db.session.scalars(select(Activity).where(Activity.deleted_at.is_(None))).all()
        for row in rows:
            db.session.expunge(row)
        return rows
