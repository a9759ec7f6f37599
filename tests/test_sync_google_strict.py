"""The sync against an emulator as strict as Google: writes valid under Google's patch semantics, fields the
portal does not own kept intact, and what real calendars hold handled."""

from datetime import UTC, datetime, timedelta

import pytest

FUTURE = (datetime.now(UTC) + timedelta(days=10)).date()


def day(offset=0):
    return (FUTURE + timedelta(days=offset)).isoformat()


def timed(offset=0, hour=10, minutes=60, zone="+01:00"):
    start = datetime.fromisoformat(f"{day(offset)}T{hour:02d}:00:00{zone}")
    return start.isoformat(), (start + timedelta(minutes=minutes)).isoformat()


@pytest.fixture
def synced(app, api, world, connected, sync_on, run_sync, google_user):
    """Create an activity through the API, sync it, and return (client, activity id, event id, google)."""
    def make(**body):
        sync_on("user")
        client = api("user")
        created = client.post("/api/v1/activities", json={"subject": "Item", "activity_type": "Meeting", **body})
        assert created.status_code == 201, created.get_json()
        cycle = run_sync("user")
        assert cycle.status == "ok", cycle.message
        google = google_user("user@acme.test")
        [event] = google.live()
        return client, created.get_json()["id"], event["id"], google
    return make


def test_switching_between_timed_and_all_day_reaches_google(synced, run_sync):
    start, end = timed()
    client, activity_id, event_id, google = synced(start=start, end=end, time_zone="Europe/Amsterdam")

    switched = client.patch(f"/api/v1/activities/{activity_id}", json={"all_day": True, "start": day(),
                                                                       "end": day(1)})
    assert switched.status_code == 200, switched.get_json()
    cycle = run_sync("user")
    assert cycle.status == "ok", cycle.message
    event = google.get(event_id)
    assert event["start"] == {"date": day()} and event["end"] == {"date": day(1)}

    start, end = timed(hour=14)
    back = client.patch(f"/api/v1/activities/{activity_id}", json={"all_day": False, "start": start, "end": end,
                                                                   "time_zone": "America/New_York"})
    assert back.status_code == 200, back.get_json()
    cycle = run_sync("user")
    assert cycle.status == "ok", cycle.message
    event = google.get(event_id)
    assert event["start"]["timeZone"] == "America/New_York" and "date" not in event["start"]
    assert datetime.fromisoformat(event["start"]["dateTime"]) == datetime.fromisoformat(start)
