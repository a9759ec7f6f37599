"""The anchors: two known strategies, reproduced in the harness with google-api-python-client against the same
emulator, the same latency and the same data (anchor_size N: N events + N local items, half the same
meetings), beside the portal's own first sync and idle cycle.

- "Relist the window, one request per record", as Outlook Google Calendar Sync (OGCS) does: every sync lists
  every event of its date range again (pages of 250, the API's default), compares, and writes each record
  that differs with a request of its own. OGCS syncs on a schedule the user sets; its default is none
  (SyncInterval = 0, unit "Hours": src/OutlookGoogleCalendarSync/SettingsStore/Calendar.cs), so an hourly
  sync, the smallest of that unit, is taken for its idle hour.
- "One request per changed record, poll on a long interval", as Odoo's google_calendar module does: an
  incremental list with a sync token, one request per record to write, and a cron every 12 hours
  (addons/google_calendar/data/ir_cron.xml: interval_number 12, interval_type hours); Odoo also syncs when a
  user opens the calendar view, which an idle user does not.

Both match records the way the portal's first sync does (subject, start, end), so the comparison is of
requests, not of what gets duplicated. Their token requests are left out (they would add one each).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build

from bench.report import Row
from bench.scenarios import Options, world
from bench.scenarios.calendar import measure_cycle, populate

OGCS_PAGE = 250
OGCS_IDLE_SYNCS_PER_HOUR = 1
ODOO_IDLE_SYNCS_PER_HOUR = 1 / 12


class Anchor:
    """A client of the Calendar API acting as the user, counting its requests."""

    def __init__(self, emulator, email: str):
        token = emulator.control("POST", "/tokens", {"user": email})["access_token"]
        self.service = build("calendar", "v3", credentials=Credentials(token), static_discovery=True,
                             cache_discovery=False, client_options={"api_endpoint": emulator.api_endpoint})
        self.requests = 0
        self.sync_token = None

    def execute(self, request):
        self.requests += 1
        return request.execute()

    def relist_window(self, time_min: str) -> list[dict]:
        """OGCS: the whole date range, page by page."""
        events, page = [], None
        while True:
            answer = self.execute(self.service.events().list(calendarId="primary", timeMin=time_min,
                                                             singleEvents=True, maxResults=OGCS_PAGE, pageToken=page))
            events += answer.get("items", [])
            page = answer.get("nextPageToken")
            if not page:
                return events

    def list_changes(self) -> list[dict]:
        """Odoo: what changed since the last sync token (everything, the first time)."""
        events, page = [], None
        while True:
            params = {"calendarId": "primary", "pageToken": page, "showDeleted": True}
            if self.sync_token:
                params["syncToken"] = self.sync_token
            answer = self.execute(self.service.events().list(**params))
            events += answer.get("items", [])
            page = answer.get("nextPageToken")
            if not page:
                self.sync_token = answer.get("nextSyncToken")
                return events

    def write_missing(self, events: list[dict], local: list[dict]) -> None:
        """One insert per local record Google lacks (records Google has and the local side lacks are made
        locally: no request)."""
        def key(subject, start, end):
            return subject, datetime.fromisoformat(start.replace("Z", "+00:00")), \
                datetime.fromisoformat(end.replace("Z", "+00:00"))

        known = {key(e.get("summary", ""), e["start"]["dateTime"], e["end"]["dateTime"]) for e in events
                 if e.get("status") != "cancelled" and "dateTime" in e.get("start", {})}
        for item in local:
            if key(item["summary"], item["start"]["dateTime"], item["end"]["dateTime"]) not in known:
                self.execute(self.service.events().insert(calendarId="primary", body=item))


def local_items(w, calendar) -> list[dict]:
    """The user's activities as event bodies: the anchors' local store."""
    from sqlalchemy import select

    from portal.extensions import db
    from portal.models import Activity

    with w.app.app_context():
        rows = db.session.execute(select(Activity.subject, Activity.start_at, Activity.end_at)
                                  .where(Activity.owner_id == calendar.user_id)).all()
    return [{"summary": r.subject, "start": {"dateTime": r.start_at.isoformat(), "timeZone": "UTC"},
             "end": {"dateTime": r.end_at.isoformat(), "timeZone": "UTC"}} for r in rows]


def run(options: Options, results) -> None:
    n = options.size("anchor_size", 1000, 10)
    latency = options.latency_ms
    figures = {}
    with world(options) as w:
        ours_calendar = populate(w, n, prefix="ours-")
        first = measure_cycle(w, ours_calendar, latency_ms=latency)
        measure_cycle(w, ours_calendar, latency_ms=latency)  # the echo
        idle = measure_cycle(w, ours_calendar, latency_ms=latency)
        interval = float(options.worker_config.get("SYNC_INTERVAL_SECONDS", options.size("interval", 30.0, 30.0)))
        figures["ours"] = {"first_requests": first.requests, "first_seconds": first.seconds,
                           "idle_requests_per_sync": idle.requests, "syncs_per_hour": 3600 / interval}
        local = local_items(w, ours_calendar)
        time_min = (datetime.now(UTC) - timedelta(days=1)).isoformat()
        for name, syncs_per_hour in (("OGCS", OGCS_IDLE_SYNCS_PER_HOUR), ("Odoo", ODOO_IDLE_SYNCS_PER_HOUR)):
            calendar = populate(w, n, prefix=f"{name.lower()}-")  # the same data for each
            anchor = Anchor(w.emulator, calendar.email)
            w.emulator.set_latency(latency)
            began = time.perf_counter()
            events = anchor.relist_window(time_min) if name == "OGCS" else anchor.list_changes()
            anchor.write_missing(events, local)
            first_seconds, first_requests = time.perf_counter() - began, anchor.requests
            anchor.requests = 0
            if name == "OGCS":  # compares the whole window again; nothing differs, nothing is written
                anchor.write_missing(anchor.relist_window(time_min), local)
            else:  # no record changed on either side: the changes list is all
                anchor.list_changes()
            w.emulator.set_latency(0)
            figures[name] = {"first_requests": first_requests, "first_seconds": first_seconds,
                             "idle_requests_per_sync": anchor.requests, "syncs_per_hour": syncs_per_hour}
            print(f"   {name}: first sync {first_requests} requests, {first_seconds:.1f} s; idle sync "
                  f"{anchor.requests} requests", flush=True)
    for figure in figures.values():
        figure["idle_requests_per_hour"] = figure["idle_requests_per_sync"] * figure["syncs_per_hour"]
    results.details["anchors"] = {"size": n, **figures}
    ours = figures["ours"]
    pushed = results.details.get("push", {}).get("requests_per_user_hour", {}).get("push")
    for name in ("OGCS", "Odoo"):
        theirs = figures[name]
        if pushed is not None:  # the push scenario ran before in this run: its measured idle cost
            results.add(Row("anchors", f"idle hour: requests, ours (push) / {name}",
                            pushed / theirs["idle_requests_per_hour"], "",
                            note=f"{pushed:.1f} against {theirs['idle_requests_per_hour']:.2f}"))
        results.add(
            Row("anchors", f"first sync {n:,} + {n:,}: requests, ours / {name}",
                ours["first_requests"] / theirs["first_requests"], "",
                note=f"{ours['first_requests']} against {theirs['first_requests']}"),
            Row("anchors", f"first sync {n:,} + {n:,}: time, ours / {name}", ours["first_seconds"] / theirs["first_seconds"],
                "", note=f"{ours['first_seconds']:.1f} s against {theirs['first_seconds']:.1f} s"),
            Row("anchors", f"idle hour: requests, ours (poll {3600 / ours['syncs_per_hour']:.0f} s) / {name} "
                           f"(every {1 / theirs['syncs_per_hour']:.0f} h)",
                ours["idle_requests_per_hour"] / theirs["idle_requests_per_hour"], "",
                note=f"{ours['idle_requests_per_hour']:.0f} against {theirs['idle_requests_per_hour']:.2f}"),
        )
