"""The calendar's week and list views: the hour grid's placement, the list's next dates, each item's sync mark
and the banner that says when the sync is not working."""

import re
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

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
