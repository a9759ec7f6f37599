"""My profile › Calendar sync: the switch, a status that agrees with the organization's, what the sync did for
this user in words (their own changes pushed by the organization's outbox too), conflicts with a restore, and
items that could not be synced with the reason and the fix."""

import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

from portal.extensions import db
from portal.models import Activity, Organization
from portal.sync.models import SyncCycle, SyncJournalEntry, SyncLink
from portal.sync.policy import integration_of
from tests.helpers import make_activity

START = datetime.now(UTC).replace(microsecond=0, second=0, minute=0) + timedelta(days=2)
PAGE = "/profile/calendar-sync"


def slot(hours=0):
    return {"start": (START + timedelta(hours=hours)).isoformat(),
            "end": (START + timedelta(hours=hours + 1)).isoformat()}


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _TextOf(HTMLParser):
    def __init__(self, element_id):
        super().__init__()
        self.element_id, self.depth, self.found, self.parts = element_id, 0, False, []

    def handle_starttag(self, tag, attrs):
        if tag in VOID:
            return
        if self.depth:
            self.depth += 1
        elif dict(attrs).get("id") == self.element_id and not self.found:
            self.found, self.depth = True, 1

    def handle_endtag(self, tag):
        if self.depth and tag not in VOID:
            self.depth -= 1

    def handle_data(self, data):
        if self.depth:
            self.parts.append(data)


def text_of(html: str, element_id: str) -> str:
    """The text inside the element with that id, spaces squeezed."""
    parser = _TextOf(element_id)
    parser.feed(html)
    assert parser.found, f"no element #{element_id}"
    return " ".join(" ".join(parser.parts).split())


def pause_organization(app, world):
    with app.app_context():
        integration = integration_of(db.session.get(Organization, world["acme"]))
        integration.record_error("delegation_missing", "Domain-wide delegation is missing.", "Add it again.")
        db.session.commit()


def test_switch_says_what_it_switches_and_its_state_in_words(app, world, login_as, connected):
    client = login_as("user")
    html = client.get(PAGE).get_data(as_text=True)
    assert 'role="switch"' in html and 'aria-checked="false"' in html
    assert text_of(html, "sync-switch-label") == "Sync my calendar with Google"
    assert text_of(html, "sync-switch-state") == "Off"
    html = client.post(PAGE, data={"enabled": "on"}, headers={"HX-Request": "true"}).get_data(as_text=True)
    assert 'aria-checked="true"' in html and text_of(html, "sync-switch-state") == "On"
    html = client.post(PAGE, data={"enabled": "off"}, headers={"HX-Request": "true"}).get_data(as_text=True)
    assert 'aria-checked="false"' in html and text_of(html, "sync-switch-state") == "Off"


def test_switch_is_disabled_with_the_reason_while_the_organization_is_paused(app, world, login_as, connected):
    pause_organization(app, world)
    html = login_as("user").get(PAGE).get_data(as_text=True)
    button = re.search(r'<button[^>]*role="switch"[^>]*>', html).group(0)
    assert " disabled" in button
    assert "paused" in text_of(html, "sync-switch-hint").lower()


def test_switch_is_disabled_with_the_reason_while_the_organization_is_off(app, world, login_as):
    html = login_as("user").get(PAGE).get_data(as_text=True)
    button = re.search(r'<button[^>]*role="switch"[^>]*>', html).group(0)
    assert " disabled" in button and "admin" in text_of(html, "sync-switch-hint")


def test_a_paused_organization_is_not_shown_as_synced(app, world, login_as, connected, sync_on, run_sync):
    sync_on("user")
    run_sync("user")
    pause_organization(app, world)
    client = login_as("user")
    html = client.get(PAGE).get_data(as_text=True)
    status = text_of(html, "sync-status")
    assert status.startswith("Paused") and "Synced" not in html
    assert "starts again once an admin fixes the settings" in status  # the explanation beside the label
    # the user who is paused can still switch off; the switch is not locked on
    button = re.search(r'<button[^>]*role="switch"[^>]*>', html).group(0)
    assert 'aria-checked="true"' in button and " disabled" not in button


def test_recent_changes_say_in_words_what_went_to_and_came_from_google(app, world, login_as, connected, sync_on,
                                                                       run_sync, google_user):
    from portal.sync.engine import push_pending

    sync_on("user")
    run_sync("user")
    # Made in the portal: the organization's outbox pushes it, not the user's own cycle.
    make_activity(app, world["user"], subject="Dentist", **slot())
    with app.app_context():
        push_pending(world["acme"], trigger="change")
        outbox = db.session.scalars(db.select(SyncCycle).where(SyncCycle.user_id.is_(None))).all()
        assert any(c.google_created for c in outbox)
    client = login_as("user")
    html = client.get(PAGE).get_data(as_text=True)
    changes = text_of(html, "recent-changes")
    assert "Created ‘Dentist’ in Google" in changes
    assert "+0 ~0" not in html and "−0" not in html

    person = google_user("user@acme.test")
    [event] = person.live()
    moved = START + timedelta(days=1, hours=1)
    person.patch(event["id"], start={"dateTime": moved.isoformat()},
                 end={"dateTime": (moved + timedelta(hours=1)).isoformat()})
    run_sync("user")
    changes = text_of(client.get(PAGE).get_data(as_text=True), "recent-changes")
    local = moved.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Amsterdam"))
    assert f"Moved ‘Dentist’ to {local:%a} {local.day} {local:%b %H:%M}" in changes
    assert "changed in Google" in changes
    # newest first
    assert changes.index("Moved ‘Dentist’") < changes.index("Created ‘Dentist’")


def test_someone_elses_changes_are_not_in_my_recent_changes(app, world, login_as, connected, sync_on, run_sync):
    from portal.sync.engine import push_pending

    sync_on("user", "colleague")
    make_activity(app, world["colleague"], subject="Carl's private planning", **slot())
    with app.app_context():
        push_pending(world["acme"], trigger="change")
    html = login_as("user").get(PAGE).get_data(as_text=True)
    assert "Carl's private planning" not in html and "Carl&#39;s private planning" not in html


def test_recent_changes_page_on_with_show_more(app, world, login_as, connected):
    activity_id = make_activity(app, world["user"], subject="Standup", **slot())
    with app.app_context():
        for n in range(14):
            db.session.add(SyncJournalEntry(organization_id=world["acme"], activity_id=activity_id, kind="updated",
                                            side="portal", field=None, before={"subject": f"Standup {n}"},
                                            after={"subject": f"Standup {n + 1}"}))
        db.session.commit()
    client = login_as("user")
    html = client.get(PAGE).get_data(as_text=True)
    assert "Renamed ‘Standup 13’ to ‘Standup 14’" in html and "‘Standup 0’" not in html
    more = re.search(r'href="(/profile/calendar-sync/changes\?before=\d+)"', html)
    assert more and f'hx-get="{more.group(1)}"' in html
    older = client.get(more.group(1), headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "Renamed ‘Standup 0’ to ‘Standup 1’" in older and "<html" not in older
    assert "Standup 14’" not in older
    page = client.get(more.group(1)).get_data(as_text=True)
    assert "<html" in page and "Renamed ‘Standup 0’" in page
    assert client.get("/profile/calendar-sync/changes?before=abc").status_code == 200


def test_quiet_cycles_are_collapsed_and_counts_are_in_words(app, world, login_as, connected, sync_on, run_sync):
    sync_on("user")
    make_activity(app, world["user"], subject="Review", **slot())
    run_sync("user")
    for _ in range(4):
        run_sync("user")
    html = login_as("user").get(PAGE).get_data(as_text=True)
    cycles = text_of(html, "sync-cycles")
    assert "4 quiet cycles" in cycles and "nothing changed" in cycles
    assert "1 to Google" in cycles
    assert "+0" not in cycles and "~0" not in cycles


def test_conflict_shows_the_losing_value_and_restores_it_from_the_profile(app, world, login_as):
    activity_id = make_activity(app, world["user"], subject="Planning", **slot())
    with app.app_context():
        entry = SyncJournalEntry(organization_id=world["acme"], activity_id=activity_id, kind="conflict",
                                 side="portal", field="location", before="Room 1", after="Room 2")
        db.session.add(entry)
        db.session.commit()
        entry_id = entry.id
    client = login_as("user")
    html = client.get(PAGE).get_data(as_text=True)
    conflicts = text_of(html, "sync-conflicts")
    assert "Room 1" in conflicts and "Room 2" in conflicts and "Planning" in conflicts
    action = f"/calendar/activities/{activity_id}/restore-value/{entry_id}"
    assert f'action="{action}"' in html and 'name="return_to" value="/profile/calendar-sync"' in html
    response = client.post(action, data={"return_to": PAGE})
    assert response.status_code == 302 and response.headers["Location"].endswith(PAGE)
    with app.app_context():
        assert db.session.get(Activity, activity_id).location == "Room 1"
    html = client.get(PAGE).get_data(as_text=True)
    assert "Restored" in html and f'action="{action}"' not in html and "Put back." in text_of(html, "sync-conflicts")


def test_items_that_could_not_be_synced_show_reason_fix_and_link(app, world, login_as):
    activity_id = make_activity(app, world["user"], subject="Board meeting", **slot())
    with app.app_context():
        db.session.add(SyncLink(organization_id=world["acme"], activity_id=activity_id, google_event_id="evt1",
                                calendar_email="user@acme.test", origin="portal", confirmed=True,
                                error_message="Only the organizer of this event can change it in Google.",
                                error_at=datetime.now(UTC)))
        db.session.commit()
    html = login_as("user").get(PAGE).get_data(as_text=True)
    failed = text_of(html, "sync-failed")
    assert "Board meeting" in failed and "Only the organizer of this event can change it in Google." in failed
    assert "Change the activity as its owner." in failed  # the catalogue's fix
    assert f'href="/calendar/activities/{activity_id}"' in html
