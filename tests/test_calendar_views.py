"""The calendar's week and list views: the hour grid's placement, the list's next dates, each item's sync mark
and the banner that says when the sync is not working."""

import re
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select

from portal.extensions import db
from tests.helpers import make_activity

AMS = ZoneInfo("Europe/Amsterdam")


def row_html(page, activity_id):
    return re.search(rf'<tr id="activity-{activity_id}">(.*?)</tr>', page, re.S).group(1)


# --- the list view ------------------------------------------------------------------------------------------

def test_list_starts_a_weekly_series_at_its_next_occurrence_not_its_first_past_one(app, world, login_as):
    today = datetime.now(AMS).date()
    first = today - timedelta(days=19)  # three weeks ago less two days: the next one is the day after tomorrow
    start = datetime.combine(first, time(9), tzinfo=AMS)
    activity_id = make_activity(app, world["user"], subject="Weekly review", start=start.isoformat(),
                                end=(start + timedelta(hours=1)).isoformat(),
                                recurrence=["RRULE:FREQ=WEEKLY"])
    page = login_as("user").get("/calendar/list").get_data(as_text=True)
    row = row_html(page, activity_id)
    assert (today + timedelta(days=2)).isoformat() in row, row
    assert first.isoformat() not in row
    assert page.count("Weekly review") == 1


def test_list_leaves_out_a_series_that_has_ended_and_shows_it_with_past_items(app, world, login_as):
    start = datetime(2026, 3, 2, 9, tzinfo=AMS)
    activity_id = make_activity(app, world["user"], subject="Old series", start=start.isoformat(),
                                end=(start + timedelta(hours=1)).isoformat(),
                                recurrence=["RRULE:FREQ=WEEKLY;COUNT=3"])
    client = login_as("user")
    assert "Old series" not in client.get("/calendar/list").get_data(as_text=True)
    row = row_html(client.get("/calendar/list?past=1").get_data(as_text=True), activity_id)
    assert "2026-03-02" in row


# --- the week's hour grid ---------------------------------------------------------------------------------

def item_tag(page, subject):
    """The opening tag of the grid item showing `subject`."""
    for match in re.finditer(r'(<li class="item"[^>]*>)(.*?)</li>', page, re.S):
        if f'<span class="subject">{subject}</span>' in match.group(2):
            return match.group(1), match.group(2)
    raise AssertionError(f"no item {subject!r}")


def test_week_items_carry_their_place_by_time_and_overlaps_share_the_width(app, world, login_as):
    def at(hours, minutes=0):
        return datetime(2026, 3, 3, hours, minutes, tzinfo=AMS).isoformat()
    make_activity(app, world["user"], subject="Nine", start=at(9), end=at(10))
    make_activity(app, world["user"], subject="Ten", start=at(10), end=at(11))
    make_activity(app, world["user"], subject="Talk", start=at(10, 30), end=at(12))
    make_activity(app, world["user"], subject="Holiday", all_day=True, start="2026-03-05", end="2026-03-07")
    page = login_as("user").get("/calendar/?week=2026-03-02").get_data(as_text=True)
    nine, ten, talk = (item_tag(page, s)[0] for s in ("Nine", "Ten", "Talk"))
    assert 'data-top="37.5"' in nine and 'data-width="100"' in nine  # 09:00 is 37.5% down the day
    assert 'data-top="41.667"' in ten and 'data-width="50"' in ten and 'data-left="0"' in ten
    assert 'data-top="43.75"' in talk and 'data-left="50"' in talk
    for day in ("2026-03-05", "2026-03-06"):  # a two-day holiday, in the all-day row of both days
        section = re.search(rf'data-day="{day}">(.*?)</section>', page, re.S).group(1)
        assert "Holiday" in re.search(r'<ul class="all-day"[^>]*>(.*?)</ul>', section, re.S).group(1)
    assert 'id="day-2026-03-02"' in page and ">Mon 2</time>" in page


def test_today_is_marked_with_the_current_time(app, world, login_as):
    page = login_as("user").get("/calendar/").get_data(as_text=True)
    today = datetime.now(AMS).date().isoformat()
    section = re.search(rf'<section class="day today[^"]*"[^>]*data-day="{today}">(.*?)</section>', page, re.S)
    assert section and 'aria-current="date"' in section.group(1) and 'class="now-line"' in section.group(1)
    assert page.count('class="now-line"') == 1
    assert 'class="now-line"' not in login_as("user").get("/calendar/?week=2026-03-02").get_data(as_text=True)


# --- each item's sync mark ---------------------------------------------------------------------------------

def future(days, hours):
    day = datetime.now(AMS).date() + timedelta(days=days)
    start = datetime.combine(day, time(hours), tzinfo=AMS)
    return {"start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat()}


def mark(html):
    found = re.search(r'<span class="sync-mark" data-sync="([a-z_]+)" title="([^"]*)"', html)
    assert found, html
    return found.group(1), found.group(2)


def test_each_item_in_the_week_and_the_list_shows_how_it_stands_with_google(
        app, world, connected, sync_on, run_sync, login_as):
    from portal.models import Activity, ActivityType, ProjectTask
    from portal.sync.models import SyncLink

    sync_on("user")
    synced = make_activity(app, world["user"], subject="Synced one", **future(1, 9))
    failing = make_activity(app, world["user"], subject="Failing one", **future(1, 11))
    with app.app_context():
        task = db.session.scalar(select(ProjectTask.id).where(ProjectTask.name == "Design"))
    make_activity(app, world["user"], subject="Task work", project_task=task, **future(1, 13))
    with app.app_context():
        personal = ActivityType(organization_id=world["acme"], name="Private", sync_to_google=False)
        db.session.add(personal)
        db.session.commit()
    make_activity(app, world["user"], subject="Private one", activity_type="Private", **future(1, 15))
    make_activity(app, world["colleague"], subject="Not anyone's sync", **future(1, 17))
    assert run_sync("user").status == "ok"
    make_activity(app, world["user"], subject="New one", **future(1, 19))
    with app.app_context():
        link = db.session.scalar(select(SyncLink).where(SyncLink.activity_id == failing))
        link.error_message = "Google refused the change: the event is too large."
        db.session.commit()
        assert db.session.get(Activity, synced) is not None

    expected = {
        "Synced one": ("synced", "Synced with Google Calendar"),
        "Failing one": ("error", "Google refused the change: the event is too large."),
        "Task work": ("not_synced", "project tasks are never synced"),
        "Private one": ("not_synced", "The type Private is not selected for sync"),
        "New one": ("pending", "Waiting for the next sync"),
    }
    client = login_as("user")
    week = client.get(f"/calendar/?week={(datetime.now(AMS).date() + timedelta(days=1)).isoformat()}")
    listed = client.get("/calendar/list").get_data(as_text=True)
    for subject, (state, words) in expected.items():
        _, inner = item_tag(week.get_data(as_text=True), subject)
        assert mark(inner)[0] == state and words in mark(inner)[1], (subject, mark(inner))
        assert words in inner  # also in words for screen readers, not only on hover
        row = re.search(rf'<tr id="activity-\d+">((?:(?!</tr>).)*>{subject}</a>.*?)</tr>', listed, re.S).group(1)
        assert mark(row)[0] == state and words in mark(row)[1], (subject, mark(row))
    client.post("/logout")
    colleagues = login_as("admin").get("/calendar/list").get_data(as_text=True)
    row = re.search(r'<tr id="activity-\d+">((?:(?!</tr>).)*>Not anyone&#39;s sync</a>.*?)</tr>', colleagues, re.S)
    assert mark(row.group(1)) == ("not_synced", "Not synced. Neither the owner nor a participant has calendar "
                                                "sync switched on.")


def test_the_sync_mark_reads_every_link_in_one_query(app, world, connected, sync_on, login_as):
    from sqlalchemy import event

    for n in range(6):
        make_activity(app, world["user"], subject=f"Item {n}", **future(1, 8 + n))
    client = login_as("user")
    url = f"/calendar/?week={(datetime.now(AMS).date() + timedelta(days=1)).isoformat()}"
    statements = []
    with app.app_context():
        engine = db.engine
    listen = lambda *args: statements.append(args[2])  # noqa: E731 - the statement text
    event.listen(engine, "before_cursor_execute", listen)
    try:
        assert client.get(url).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", listen)
    assert sum("FROM sync_links" in s for s in statements) == 1, [s for s in statements if "sync_links" in s]


# --- the banner when the sync is not working -------------------------------------------------------------------

def test_the_calendar_says_when_the_organizations_sync_is_paused_and_what_to_do(
        app, world, connected, sync_on, login_as):
    from portal.models import GoogleIntegration

    sync_on("user")
    client = login_as("user")
    assert 'id="sync-banner"' not in client.get("/calendar/").get_data(as_text=True)
    with app.app_context():
        row = db.session.scalar(select(GoogleIntegration).where(GoogleIntegration.organization_id == world["acme"]))
        row.record_error("delegation_missing", "Google refused the delegation for the service account.",
                         "Grant the scopes in the Admin console.")
        db.session.commit()
    for path in ("/calendar/", "/calendar/list"):
        page = client.get(path).get_data(as_text=True)
        banner = re.search(r'<div class="message warning sync-banner"[^>]*id="sync-banner">(.*?)</div>', page, re.S)
        assert banner, path
        text = banner.group(1)
        assert "sync is paused for your organization" in text
        assert "Google refused the delegation" in text and "Grant the scopes in the Admin console." in text
        assert "Only an admin of your organization can fix this" in text
        assert 'href="/profile/calendar-sync"' in text and "delegation_missing" not in text
    client.post("/logout")
    admin = login_as("admin")
    sync_on("admin")
    assert 'href="/settings/integrations/google-calendar"' in re.search(
        r'id="sync-banner">(.*?)</div>', admin.get("/calendar/").get_data(as_text=True), re.S).group(1)


def test_the_calendar_says_when_the_users_own_sync_stopped_with_an_error(app, world, connected, sync_on, login_as):
    from portal.models import User
    from portal.sync.models import CalendarSync

    sync_on("user")
    with app.app_context():
        row = CalendarSync.for_user(db.session.get(User, world["user"]))
        row.error_code, row.error_cause = "calendar_missing", "Your Google calendar could not be found."
        row.error_fix = "Check that your Google account has a calendar."
        db.session.commit()
    page = login_as("user").get("/calendar/").get_data(as_text=True)
    banner = re.search(r'<div class="message error sync-banner" role="alert" id="sync-banner">(.*?)</div>', page, re.S)
    assert banner and "Your calendar sync stopped with an error" in banner.group(1)
    assert "could not be found" in banner.group(1) and "Check that your Google account" in banner.group(1)
    assert 'href="/profile/calendar-sync"' in banner.group(1)


def test_no_banner_when_the_sync_is_simply_off(app, world, login_as):
    assert 'id="sync-banner"' not in login_as("user").get("/calendar/").get_data(as_text=True)


def test_a_week_in_which_the_clocks_change_says_so_beside_its_times(app, world, login_as):
    client = login_as("user")
    assert "Times in Europe/Amsterdam, CET, CEST from Sun 29 Mar." in client.get(
        "/calendar/?week=2026-03-23").get_data(as_text=True)
    assert "Times in Europe/Amsterdam, CET." in client.get("/calendar/?week=2026-03-02").get_data(as_text=True)


def test_the_sync_mark_partial_writes_the_state_and_reason_out_on_an_item_page(app):
    from flask import render_template_string

    from portal.sync.status import SyncStatus

    page = '{% with status = s, detail = True %}{% include "calendar/_sync_mark.html" %}{% endwith %}'
    with app.test_request_context():
        text = render_template_string(page, s=SyncStatus("not_synced", reason="The type Personal is not selected."))
        assert 'id="item-sync-status"' in text and "<strong>Not synced</strong>. The type Personal is not selected." in text
        text = render_template_string(page, s=SyncStatus("error", error="Google refused it."))
        assert "Error, not synced</strong>. Google refused it." in text
        assert render_template_string(page, s=None).strip() == ""
