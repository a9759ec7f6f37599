"""Diagnostics: the builders on their own (timeline, quiet cycles, health table, catalogue, contents taken out of
messages), then against the emulator with real failures, and who may read which organization's."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from zoneinfo import ZoneInfo

from sqlalchemy import select

from portal import diagnostics
from portal.extensions import db
from portal.sync.google import ERRORS
from tests.conftest import SERVICE_CLIENT_ID
from tests.helpers import make_activity

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
AMSTERDAM = ZoneInfo("Europe/Amsterdam")


def cycle(minutes_ago, status="ok", *, errors=0, message=None, code=None, user_id=1, **counts):
    values = dict(portal_created=0, portal_updated=0, portal_deleted=0, google_created=0, google_updated=0,
                  google_deleted=0, conflicts=0)
    values.update(counts)
    return SimpleNamespace(started_at=NOW - timedelta(minutes=minutes_ago), status=status, errors=errors,
                           message=message, error_code=code, user_id=user_id, **values)


def test_quiet_cycles_run_together_and_the_others_keep_their_rows():
    cycles = [cycle(0), cycle(1), cycle(2, portal_created=2, google_updated=1), *[cycle(m) for m in range(3, 121)],
              cycle(121, "failed", message="Google could not be reached.", code="unreachable"), cycle(122)]
    rows = diagnostics.collapse_cycles(cycles, who=lambda c: "user@acme.test")
    assert [(r.kind, r.count) for r in rows] == [("idle", 2), ("changed", 1), ("idle", 118), ("failed", 1),
                                                 ("idle", 1)]
    assert rows[1].text == "2 created in the portal, 1 changed in Google"
    assert rows[3].code == "unreachable" and rows[3].text == "Google could not be reached."
    assert diagnostics.quiet_words(rows[2]).startswith("118 idle cycles")
    # 10:00–11:57 UTC is 11:00–12:57 in Amsterdam, said with its zone
    assert diagnostics.span_words(rows[2], AMSTERDAM) == "2026-11-30 11:00–12:57 CET"


def test_the_list_stops_reading_once_it_has_enough_rows():
    read = []

    def newest_first():
        for minutes in range(1000):
            read.append(minutes)
            yield cycle(minutes, portal_updated=1) if minutes % 2 else cycle(minutes)

    rows = diagnostics.collapse_cycles(newest_first(), limit=5)
    assert len(rows) == 6 and len(read) == 7  # five rows, a sixth saying there are more


def test_a_cycle_that_only_met_a_conflict_or_an_item_error_is_not_idle():
    rows = diagnostics.collapse_cycles([cycle(0, conflicts=1), cycle(1, "partial", errors=2)])
    assert [r.kind for r in rows] == ["changed", "changed"]
    assert rows[0].text == "1 conflict decided"
    assert rows[1].text == "2 items could not be synced"


def test_the_timeline_marks_failed_cycles_and_item_errors_and_labels_hours_in_the_viewers_zone():
    failures = [cycle(32, "failed"), cycle(34, "failed")]
    errors = [SimpleNamespace(created_at=NOW - timedelta(hours=5))]
    timeline = diagnostics.build_timeline([cycle(m) for m in range(0, 600, 5)] + failures, errors, now=NOW,
                                          zone=AMSTERDAM)
    assert len(timeline.slots) == 96
    failed = [s for s in timeline.slots if s.failed]
    assert len(failed) == 1 and "2 cycles failed" in failed[0].title and "CET" in failed[0].title
    assert [s.item_errors for s in timeline.slots if s.item_errors] == [1]
    # a failure stays visible beside many fine cycles
    bar = next(b for b in failed[0].bars if b.result == "failed")
    assert bar.height >= 2
    labels = [label for _x, label in timeline.ticks]
    assert labels and all(int(label[:2]) % 3 == 0 for label in labels)
    assert "15:00" in labels  # 14:00 UTC yesterday is 15:00 in Amsterdam
    assert timeline.totals["failed"] == 2 and timeline.totals["item_errors"] == 1
    assert "2 failed" in timeline.summary and "1 item could not be synced" in timeline.summary
    # what happened before the 24 hours is left out
    assert diagnostics.build_timeline([cycle(60 * 25, "failed")], [], now=NOW, zone=AMSTERDAM).totals["failed"] == 0


def test_the_health_table_counts_filters_searches_and_caps():
    users = [SimpleNamespace(id=i, email=f"person{i:04d}@big.test", name=f"P {i}", active=True) for i in range(3000)]
    integration = SimpleNamespace(enabled=True, is_configured=True, is_paused=False, error_cause=None)
    rows = {i: SimpleNamespace(enabled=True, error_code="unknown_user" if i % 100 == 0 else None,
                               error_cause="not in the Workspace", last_seen_at=NOW, backoff_until=None,
                               failures=0, last_success_at=NOW) for i in range(0, 3000, 2)}
    table = diagnostics.health_table(users, rows, integration, now=NOW, session_lifetime=timedelta(hours=12))
    assert table.total == 3000 and table.matching == 3000 and len(table.rows) == 50
    assert table.counts["error"] == 30 and table.counts["healthy"] == 1470 and table.counts["off"] == 1500
    assert table.rows[0].health.state == "error"  # problems first
    errors = diagnostics.health_table(users, rows, integration, now=NOW, session_lifetime=timedelta(hours=12),
                                      state="error")
    assert errors.matching == 30 and {r.health.state for r in errors.rows} == {"error"}
    found = diagnostics.health_table(users, rows, integration, now=NOW, session_lifetime=timedelta(hours=12),
                                     query="  PERSON0100@ ")
    assert [r.user.email for r in found.rows] == ["person0100@big.test"]
    nonsense = diagnostics.health_table(users, rows, integration, now=NOW, session_lifetime=timedelta(hours=12),
                                        state="<script>")
    assert nonsense.state == "" and nonsense.matching == 3000


def test_the_catalogue_has_every_code_with_its_counts_those_that_occurred_first():
    entries = diagnostics.catalogue({"delegation_missing": 3}, {"delegation_missing": 5, "timeout": 2},
                                    {"delegation_missing": 1})
    codes = [e.code for e in entries]
    assert set(ERRORS) | set(diagnostics.OTHER_ERRORS) == set(codes)
    assert codes[:2] == ["delegation_missing", "timeout"]
    first = entries[0]
    assert (first.last_day, first.last_month, first.now) == (3, 5, 1)
    assert first.summary == "the service account is not allowed to act for users"
    assert "Manage domain-wide delegation" in first.fix
    assert all(e.cause and e.fix and "{" not in e.cause + e.fix for e in entries)
    assert all(e.code in diagnostics.SUMMARIES for e in entries)


def test_contents_are_taken_out_of_error_messages():
    activity = SimpleNamespace(subject="Zanzibar merger", location="Room 7", description=None)
    entry = SimpleNamespace(created_at=NOW, activity_id=12, google_event_id="abc",
                            message="Google refused 'ZANZIBAR MERGER' at Room 7")
    [problem] = diagnostics.item_problems([entry], {12: activity})
    assert problem.message == "Google refused 'activity #12' at activity #12"


# --- against the emulator -----------------------------------------------------------------------------------

def _revoke_and_fail(app, connected, run_sync):
    from portal.sync.google import TOKENS

    connected.control("DELETE", "/delegations", {"client_id": SERVICE_CLIENT_ID})
    with app.app_context():  # as once the token of the last cycle has expired (the workers' shared one too)
        TOKENS.forget()
        db.session.commit()
    failed = run_sync("user")
    assert failed.status == "failed" and failed.error_code == "delegation_missing"
    return failed


def test_a_revoked_delegation_shows_in_the_chart_the_catalogue_and_the_index(app, world, connected, sync_on,
                                                                               run_sync, login_as):
    sync_on("user")
    assert run_sync("user").status == "ok"
    _revoke_and_fail(app, connected, run_sync)
    client = login_as("helpdesk")
    index = client.get("/helpdesk/").get_data(as_text=True)
    assert "Paused — the service account is not allowed to act for users (delegation missing)" in index
    assert f'class="org-problem" id="org-{world["acme"]}"' in index
    page = client.get(f"/helpdesk/organizations/{world['acme']}").get_data(as_text=True)
    assert page.count('class="mark-failed"') == 1
    assert re.search(r"<title>[^<]*1 cycle failed[^<]*</title>", page)
    catalogue = page[page.index('id="catalogue"'):]
    entry = catalogue[catalogue.index('id="error-delegation_missing"'):]
    entry = entry[:entry.index("</li>")]
    assert "1 in the last 24 hours · 1 in 30 days" in entry
    assert SERVICE_CLIENT_ID in entry  # the fix names this organization's client ID
    # the failed cycle keeps its row, the fine one before it is an idle run
    cycles = page[page.index('id="cycles"'):page.index("</ul>", page.index('id="cycles"'))]
    assert cycles.index("the service account is not allowed to act for users") < cycles.index("1 idle cycle")


def test_an_item_refused_by_google_never_shows_its_subject_to_the_helpdesk(app, world, connected, sync_on,
                                                                             run_sync, login_as):
    sync_on("user")
    activity_id = make_activity(app, world["user"], subject="Quokka acquisition plan", location="Boardroom Q",
                                start="2026-12-02T09:00:00+01:00", end="2026-12-02T10:00:00+01:00")
    # Google's refusal quotes the event, as its messages may
    connected.control("POST", "/faults", {"kind": "error", "status": 400, "reason": "invalid", "method": "POST",
                                          "path_regex": "/events", "count": 50,
                                          "message": "Invalid event 'Quokka acquisition plan' in Boardroom Q"})
    result = run_sync("user")
    connected.control("DELETE", "/faults")
    assert result.errors >= 1
    with app.app_context():
        from portal.sync.models import SyncJournalEntry
        messages = db.session.scalars(select(SyncJournalEntry.message).where(SyncJournalEntry.kind == "error")).all()
        assert any("Quokka" in (m or "") for m in messages)  # the journal holds it; the pages must not show it
    client = login_as("helpdesk")
    pages = [client.get(a).get_data(as_text=True) for a in (
        "/helpdesk/", f"/helpdesk/organizations/{world['acme']}",
        f"/helpdesk/organizations/{world['acme']}?state=error", f"/helpdesk/organizations/{world['acme']}?q=user")]
    for page in pages:
        assert "quokka" not in page.lower()
        assert "Boardroom" not in page
    assert f"activity #{activity_id}" in pages[1]
    # Google's refusal of one item has no count of its own: the catalogue says where it is counted
    refused = pages[1][pages[1].index('id="error-event_refused"'):]
    refused = refused[:refused.index("</li>")]
    assert re.search(r"Counted with the items that could not be synced: [1-9]\d* in the last 24 hours", refused)


def test_the_health_results_alone_for_htmx_and_the_whole_page_without_it(app, world, connected, sync_on,
                                                                          run_sync, login_as):
    sync_on("user", "colleague")
    with app.app_context():
        from portal.models import User
        from portal.sync.models import CalendarSync
        for key in ("user", "colleague"):
            CalendarSync.for_user(db.session.get(User, world[key])).last_seen_at = datetime.now(UTC)
        db.session.commit()
    connected.control("POST", "/faults", {"kind": "error", "status": 403, "reason": "forbidden", "method": "GET",
                                          "user": "colleague@acme.test", "count": 20,
                                          "message": "The calendar is switched off for this account"})
    assert run_sync("colleague").status == "failed"
    connected.control("DELETE", "/faults")
    assert run_sync("user").status == "ok"
    client = login_as("helpdesk")
    address = f"/helpdesk/organizations/{world['acme']}?state=error"
    partial = client.get(address, headers={"HX-Request": "true", "HX-Target": "health-results"}).get_data(as_text=True)
    assert partial.lstrip().startswith('<div id="health-results"')
    assert "colleague@acme.test" in partial and "user@acme.test" not in partial
    assert "Fix:" in partial
    page = client.get(address).get_data(as_text=True)
    assert "<html" in page and 'id="timeline"' in page and "colleague@acme.test" in page
    found = client.get(f"/helpdesk/organizations/{world['acme']}?q=USER@acme").get_data(as_text=True)
    results = found[found.index('id="health-results"'):found.index("</table>", found.index('id="health-results"'))]
    assert "user@acme.test" in results and "colleague@acme.test" not in results
    # the helpdesk's search finds the organization by a user's e-mail
    index = client.get("/helpdesk/?q=colleague@acme").get_data(as_text=True)
    assert re.search(rf'href="/helpdesk/organizations/{world["acme"]}\?q=colleague(@|%40)acme.test#health"', index)
    assert "Globex" not in index.split('id="organizations"')[1]


def test_admins_read_their_own_organizations_diagnostics_only(app, world, connected, sync_on, run_sync, login_as,
                                                              client, auth):
    sync_on("user")
    _revoke_and_fail(app, connected, run_sync)
    settings = login_as("admin").get("/settings/integrations/google-calendar").get_data(as_text=True)
    assert 'href="/settings/integrations/google-calendar/diagnostics"' in settings
    own = client.get("/settings/integrations/google-calendar/diagnostics").get_data(as_text=True)
    assert "user@acme.test" in own and 'class="mark-failed"' in own
    assert "Paused — the service account is not allowed to act for users" in own
    auth.logout()
    other = login_as("other_admin").get("/settings/integrations/google-calendar/diagnostics")
    assert other.status_code == 200
    text = other.get_data(as_text=True)
    assert "acme.test" not in text and 'class="mark-failed"' not in text and "Paused —" not in text
    assert "user@globex.test" in text
    # no address leads an admin to another organization's page
    assert client.get(f"/helpdesk/organizations/{world['acme']}").status_code == 403
    assert client.get(f"/settings/integrations/google-calendar/diagnostics?organization_id={world['acme']}") \
        .get_data(as_text=True).count("acme.test") == 0
