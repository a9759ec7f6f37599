"""A seeded chaos run of the two-way sync, and the oracle that checks its promise afterwards.

People edit both sides at random through the product's real interfaces: the REST API and the pages on the
portal's side, the Google client library acting as the person in their own calendar on the other (tokens
from the emulator, never the sync's service account). Between their edits the sync runs as it does in
production (a user's cycle, the outbox push, a scheduler look for due users), while the emulator answers a
fraction of the sync's requests with 500, 503, 429 and 403 rate limits, connection resets, applied writes
whose answer is dropped, latency and expired sync tokens, and a worker is stopped at random points between
two writes as if its process had died.

Every item carries a unique token in its title, so it can be counted on each side however it was created.
The model remembers, per item and field, each side's last edit that the other side had not yet seen when
it was made (a "live" edit). After the faults stop and every user has had two clean cycles, the oracle
checks: no item twice on a side; every item that should be on both sides is, with equal fields and
occurrences; every live edit is the final value or is kept in the sync journal as a conflict's losing
value; every delete honoured unless an edit the deleting side had not seen overrides it; project tasks
and deselected types never in Google, private events as the Personal type, users whose sync is off only
through a syncing colleague; no uncaught exception and no HTTP 500.
"""

from __future__ import annotations

import base64
import logging
import os
import random
import re
import subprocess
import sys
import time
import traceback
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from googleapiclient.errors import HttpError
from sqlalchemy import select

from portal.extensions import db

ZONE = "Europe/Amsterdam"
PASSWORD = "chaos-password-1"
DOMAIN = "acme.test"
ADMIN = f"admin@{DOMAIN}"
# Two users with sync on, one with it off (in the Workspace all the same).
PEOPLE = {f"anna@{DOMAIN}": True, f"bram@{DOMAIN}": True, f"cees@{DOMAIN}": False}
SERVICE_ACCOUNT = "portal-sync@acme-project.iam.gserviceaccount.com"
CLIENT_ID = "104857600000000000777"
WORDS = ("plan", "review", "sync", "lunch", "demo", "retro", "call", "visit", "workshop", "standup")
FIELDS = ("subject", "description", "location", "when", "participants", "private")
# The journal's field names for each field the model tracks.
JOURNAL_FIELDS = {"when": {"start", "end", "all_day", "time_zone"}}
TIMED_SERIES = ("RRULE:FREQ=DAILY;COUNT=5", "RRULE:FREQ=WEEKLY;COUNT=4")
ALL_DAY_SERIES = ("RRULE:FREQ=WEEKLY;COUNT=4",)


class WorkerKilled(BaseException):
    """Raised at an engine checkpoint: the cycle stops there as if its process had been killed."""


def utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_google_when(value: dict) -> tuple[bool, str]:
    if value.get("date"):
        return True, value["date"]
    moment = datetime.fromisoformat(value["dateTime"].replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(value.get("timeZone") or "UTC"))
    return False, utc_text(moment)


def occurrence_key(moment) -> str:
    if isinstance(moment, datetime):
        return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return moment.strftime("%Y%m%d")


@dataclass
class Edit:
    side: str
    value: Any
    op: int
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class Item:
    token: str
    origin: str  # portal | google
    kind: str  # timed | allday | series
    owner: str  # the portal owner, and the organizer in Google
    created_op: int
    alive: bool = True
    deleted_on: str | None = None
    # field -> side -> the side's last edit the other side had not seen when it was made
    live: dict[str, dict[str, Edit]] = field(default_factory=dict)
    stash: dict[str, Edit] = field(default_factory=dict)  # the portal's live edits at its delete, for a restore
    either: bool = False  # a race whose two outcomes are both right: alive or deleted
    overridden_by: str | None = None  # the side whose unseen edit won over the other side's delete
    activity_ids: set[int] = field(default_factory=set)  # every activity that ever carried the token
    event_ids: set[str] = field(default_factory=set)

    def edit(self, name: str, side: str, value: Any, op: int) -> None:
        self.live.setdefault(name, {})[side] = Edit(side, value, op)

    def supersede(self, name: str, side: str, current: Any) -> None:
        """`side` changes `name`, having seen `current`: its own earlier edit and any edit of the other
        side it can see are over."""
        edits = self.live.get(name, {})
        edits.pop(side, None)
        other = "google" if side == "portal" else "portal"
        if other in edits and edits[other].value == current:
            edits.pop(other)


@dataclass
class Figures:
    seeds: int = 0
    operations: int = 0
    faults: int = 0
    cycles: int = 0
    killed: int = 0
    duplicates: int = 0
    lost: int = 0
    mismatches: int = 0
    crashes: int = 0

    def add(self, other: Figures) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def line(self) -> str:
        return (f"seeds {self.seeds}, operations {self.operations}, faults {self.faults}, cycles {self.cycles}, "
                f"killed workers {self.killed}; duplicates {self.duplicates}, lost {self.lost}, "
                f"mismatches {self.mismatches}, crashes {self.crashes}")

    @property
    def clean(self) -> bool:
        return not (self.duplicates or self.lost or self.mismatches or self.crashes)


TOTAL = Figures(seeds=0)  # every chaos run of this process, for the test session's summary


class Crashes(logging.Handler):
    """Every error the portal logged with a traceback: an exception nothing handled where it happened."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record):
        if record.exc_info and not isinstance(record.exc_info[1], WorkerKilled):
            self.records.append(f"{record.getMessage()}: "
                                f"{''.join(traceback.format_exception(*record.exc_info))[-1500:]}")


class Person:
    """Someone working in their own Google calendar with the real client library."""

    def __init__(self, emulator, email):
        from google.oauth2.credentials import Credentials
        from googleapiclient.discovery import build

        token = emulator.control("POST", "/tokens", {"user": email})["access_token"]
        self.email = email
        self.service = build("calendar", "v3", credentials=Credentials(token), static_discovery=True,
                             cache_discovery=False, client_options={"api_endpoint": emulator.api_endpoint})

    @property
    def events(self):
        return self.service.events()

    def live(self) -> list[dict]:
        items, page = [], None
        while True:
            answer = self.events.list(calendarId="primary", pageToken=page, maxResults=250).execute()
            items.extend(e for e in answer.get("items", []) if e.get("status") != "cancelled")
            page = answer.get("nextPageToken")
            if not page:
                return items

    def instances(self, event_id: str) -> list[dict]:
        try:
            return self.events.instances(calendarId="primary", eventId=event_id, showDeleted=True,
                                         maxResults=250).execute().get("items", [])
        except HttpError as error:
            if error.resp.status in (404, 410):  # deleted meanwhile (a worker process runs beside the person)
                return []
            raise


ROOT = Path(__file__).resolve().parents[2]
# A worker process's settings in a chaos run: short leases, so a killed worker's users are taken over
# within the run; cycles and looks for due users often, so it races the in-process sync all the time.
WORKER_SETTINGS = {"SYNC_LEASE_SECONDS": 2, "SYNC_INTERVAL_SECONDS": 0.5, "SYNC_POLL_SECONDS": 0.1,
                   "SYNC_BUSY_RETRY_SECONDS": 0.2, "SYNC_BACKOFF_BASE_SECONDS": 0.5, "SYNC_BACKOFF_CAP_SECONDS": 2}


class WorkerProcess:
    """A real `flask --app portal worker` on the run's PostgreSQL database, killed with SIGKILL at random
    moments and started again, as a crashed host would be."""

    def __init__(self, app, folder: Path):
        self.app = app
        self.folder = folder
        self.process: subprocess.Popen | None = None
        self.starts = 0
        self.kills = 0

    def start(self) -> None:
        config = self.app.config
        env = {**os.environ, "PORTAL_SQLALCHEMY_DATABASE_URI": config["SQLALCHEMY_DATABASE_URI"],
               "PORTAL_SECRET_KEY": config["SECRET_KEY"], "PORTAL_ENCRYPTION_KEY": config["ENCRYPTION_KEY"],
               **{f"PORTAL_{key}": str(config[key]) for key in (
                   "GOOGLE_TOKEN_URI", "GOOGLE_API_ENDPOINT", "GOOGLE_BATCH_URI", "SYNC_RETRY_BASE_SECONDS",
                   "SYNC_RETRY_CAP_SECONDS", *WORKER_SETTINGS)}}
        self.starts += 1
        log = open(self.folder / f"worker{self.starts}.log", "wb")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "portal", "worker", "--id", f"chaos-worker-{self.starts}"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
            self.kills += 1
        self.process = None

    def crashes(self) -> list[str]:
        """Tracebacks the worker processes logged (a killed one's last words are not counted: it has none)."""
        found = []
        for path in sorted(self.folder.glob("worker*.log")):
            text = path.read_text(errors="replace")
            for block in text.split("Traceback (most recent call last)")[1:]:
                found.append(f"{path.name}: Traceback{block[:1500]}")
        return found


class Chaos:
    """One seeded run against one app and one emulator."""

    def __init__(self, app, emulator, seed: int, operations: int, *, kills: bool = True, log=None,
                 worker: WorkerProcess | None = None):
        self.app = app
        self.emulator = emulator
        self.seed = seed
        self.operations = operations
        self.kills = kills
        self.rng = random.Random(seed)
        self.items: list[Item] = []
        self.log: list[str] = []
        self.problems: list[str] = []
        self.figures = Figures(seeds=1)
        self.faults_on = False
        self.armed: tuple[str, int] | None = None
        self.crashes = Crashes()
        self.print = log or (lambda text: None)
        self.op = 0
        self.worker = worker
        self.window_start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=1)

    # ------------------------------------------------------------------ set-up

    def setup(self) -> None:
        from portal.accounts import add_organization, add_user
        from portal.integration import integration_for, save_account, set_enabled, upload_key
        from portal.models import ActivityType, Project, ProjectTask
        from portal.signin_models import ApiToken
        from portal.sync.google import GOOGLE_SCOPES, TOKENS
        from portal.sync.models import CalendarSync

        self.emulator.control("POST", "/reset", {"seed": self.seed})
        TOKENS.forget()
        for email in [ADMIN, *PEOPLE]:
            self.emulator.add_user(email, time_zone=ZONE)
        account = self.emulator.control("POST", "/service-accounts", {"email": SERVICE_ACCOUNT,
                                                                      "client_id": CLIENT_ID})
        self.emulator.control("POST", "/delegations", {"client_id": CLIENT_ID, "scopes": list(GOOGLE_SCOPES)})
        self.tokens: dict[str, str] = {}
        with self.app.app_context():
            organization = add_organization("Acme")
            admin = add_user(organization, ADMIN, "Admin", "admin", PASSWORD)
            users = {email: add_user(organization, email, email.split("@")[0].title(), "user", PASSWORD)
                     for email in PEOPLE}
            db.session.add(Project(organization=organization, name="Build", tasks=[ProjectTask(name="Code")]))
            db.session.flush()
            db.session.scalars(select(ActivityType).where(ActivityType.organization_id == organization.id,
                                                          ActivityType.name == "Customer visit")).one() \
                .sync_to_google = False
            for email, user in [(ADMIN, admin), *users.items()]:
                row, token = ApiToken.issue(user)
                db.session.add(row)
                self.tokens[email] = token
            db.session.commit()
            self.organization_id = organization.id
            self.task_id = db.session.scalars(select(ProjectTask.id)).first()
            row = integration_for(organization)
            save_account(row, admin, SERVICE_ACCOUNT, CLIENT_ID)
            upload_key(row, admin, base64.b64decode(account["p12_base64"]), "notasecret")
            outcome = set_enabled(row, admin, True, ADMIN)
            assert outcome is None or outcome.ok, outcome
            for email, syncs in PEOPLE.items():
                CalendarSync.for_user(users[email]).switch(syncs)
            db.session.commit()
            self.user_ids = {email: user.id for email, user in users.items()}
        self.people = {email: Person(self.emulator, email) for email in PEOPLE}
        self.client = self.app.test_client()
        self.pages: dict[str, Any] = {}
        for email in PEOPLE:  # each person has been seen logged in: the scheduler syncs them
            self.api(email, "get", "/api/v1/me/calendar-sync")
        for email in self.syncing():
            self.cycle(email)
        if self.worker is not None:
            self.worker.start()
        if self.rng.random() < 0.5:
            self.faults(True)
            self.note("faults on")

    def syncing(self) -> list[str]:
        return [email for email, on in PEOPLE.items() if on]

    # ------------------------------------------------------------------ the portal's interfaces

    def api(self, email: str, method: str, path: str, *, version: int | None = None, **kwargs):
        """A call of the REST API as `email`; with `version`, conditional on the activity still being the one
        read (If-Match), so what the oracle records as seen is what the change was made on, also while a
        worker process writes the same activity at the same moment."""
        headers = {"Authorization": f"Bearer {self.tokens[email]}"}
        if version is not None:
            headers["If-Match"] = f'"{version}"'
        response = getattr(self.client, method)(path, headers=headers, **kwargs)
        self._check_response(response, f"{method.upper()} {path}")
        return response

    def page(self, email: str):
        client = self.pages.get(email)
        if client is None:
            client = self.pages[email] = self.app.test_client()
            response = client.post("/login", data={"email": email, "password": PASSWORD})
            assert response.status_code == 302, response.data[:500]
        return client

    def post_page(self, email: str, path: str, data: dict):
        response = self.page(email).post(path, data=data)
        self._check_response(response, f"POST {path}")
        return response

    def _check_response(self, response, what: str) -> None:
        if response.status_code >= 500:
            self.problems.append(f"crash: {what} answered {response.status_code}")
            self.figures.crashes += 1

    # ------------------------------------------------------------------ the sync, as production runs it

    def cycle(self, email: str) -> None:
        from portal.sync.engine import run_user_cycle

        self._sync(lambda: run_user_cycle(self.user_ids[email], trigger="chaos"), f"cycle {email}")

    def push(self) -> None:
        from portal.sync.engine import push_pending

        self._sync(lambda: push_pending(self.organization_id, trigger="chaos"), "push")

    def tick(self) -> None:
        from portal.sync.scheduler import claim_due_users, run_claim

        def look():
            # A worker runs each claim in a thread of its own: a cycle cut short stops that thread's claim, and
            # the look's other claims (other threads) go on. (A whole process killed is the PostgreSQL run's
            # worker process, whose claims run out.)
            killed = None
            for claim in claim_due_users(10):
                try:
                    run_claim(claim, owner=f"chaos#{self.op}")
                except WorkerKilled as stop:
                    killed = killed or stop
            if killed is not None:
                raise killed

        self._sync(look, "scheduler")

    def _sync(self, run, what: str) -> None:
        from portal.sync import engine

        hook = None
        if self.armed is not None:
            target, skip = self.armed
            seen = {"count": 0}

            def hook(name):
                if name == target and not seen.get("killed"):
                    seen["count"] += 1
                    if seen["count"] > skip:
                        seen["killed"] = True
                        raise WorkerKilled(name)

            engine.CHECKPOINTS.append(hook)
        try:
            with self.app.app_context():
                run()
        except WorkerKilled as stop:
            self.figures.killed += 1
            self.log.append(f"    worker killed at {stop.args[0]}")
            self.armed = None
        finally:
            if hook is not None:
                engine.CHECKPOINTS.remove(hook)
            with self.app.app_context():
                db.session.remove()

    # ------------------------------------------------------------------ faults

    def faults(self, on: bool) -> None:
        self.emulator.control("DELETE", "/faults")
        self.faults_on = on
        if not on:
            return
        rate = self.rng.choice((0.05, 0.1, 0.2))
        common = {"client_id": CLIENT_ID}
        for status, reason in ((500, "backendError"), (503, "backendError"), (429, "rateLimitExceeded"),
                               (403, "rateLimitExceeded")):
            self.emulator.add_fault(kind="error", status=status, reason=reason, fraction=rate / 3, **common)
        self.emulator.add_fault(kind="reset", fraction=rate / 3, **common)
        self.emulator.add_fault(kind="drop_response", fraction=rate, method="POST", **common)
        self.emulator.add_fault(kind="drop_response", fraction=rate, method="PATCH", **common)
        self.emulator.add_fault(kind="drop_response", fraction=rate, method="DELETE", **common)
        self.emulator.add_fault(kind="latency", latency_ms=5, fraction=rate, **common)

    # ------------------------------------------------------------------ reading the two sides

    def activities(self, item: Item, *, deleted: bool = False) -> list:
        from portal.models import Activity

        query = select(Activity).where(Activity.organization_id == self.organization_id,
                                       Activity.subject.contains(item.token))
        rows = db.session.scalars(query.order_by(Activity.id)).all()
        item.activity_ids.update(row.id for row in rows)
        return [row for row in rows if row.is_deleted == deleted]

    def activity(self, item: Item):
        rows = self.activities(item)
        return rows[0] if rows else None

    def events(self, item: Item, calendars: dict[str, list[dict]] | None = None) -> dict[str, dict]:
        """The item's live events by id, each as its organizer's calendar holds it."""
        calendars = calendars if calendars is not None else {email: p.live() for email, p in self.people.items()}
        found: dict[str, dict] = {}
        for email, events in calendars.items():
            for event in events:
                if item.token not in (event.get("summary") or "") or event.get("recurringEventId"):
                    continue
                organizer = (event.get("organizer") or {}).get("email", email)
                if organizer == email or event["id"] not in found:
                    found[event["id"]] = event
        item.event_ids.update(found)
        return found

    def event(self, item: Item) -> dict | None:
        organizer = self.people[item.owner]
        for event in organizer.live():
            if item.token in (event.get("summary") or "") and not event.get("recurringEventId") \
                    and (event.get("organizer") or {}).get("email") == item.owner:
                item.event_ids.add(event["id"])
                return event
        return None

    @staticmethod
    def activity_values(activity) -> dict:
        if activity.all_day:
            when = (True, activity.start_date.isoformat(), activity.end_date.isoformat())
        else:
            when = (False, utc_text(activity.start_at), utc_text(activity.end_at))
        return {
            "subject": activity.subject, "description": activity.description or "",
            "location": activity.location or "", "when": when,
            "participants": frozenset({activity.owner.email} | {u.email for u in activity.participants}),
            "private": bool(activity.activity_type.is_personal),
        }

    @staticmethod
    def event_values(event: dict) -> dict:
        all_day, start = parse_google_when(event["start"])
        _, end = parse_google_when(event["end"])
        organizer = (event.get("organizer") or {}).get("email", "")
        attendees = {a["email"] for a in event.get("attendees") or [] if a.get("email") in PEOPLE}
        return {
            "subject": event.get("summary") or "", "description": event.get("description") or "",
            "location": event.get("location") or "", "when": (all_day, start, end),
            "participants": frozenset(({organizer} if organizer in PEOPLE else set()) | attendees),
            "private": event.get("visibility") in ("private", "confidential"),
        }

    @staticmethod
    def activity_exceptions(activity) -> dict[str, Any]:
        return {exc.original_start: "cancelled" if exc.cancelled else ("subject", exc.subject)
                for exc in activity.exceptions}

    def event_exceptions(self, item: Item, event: dict) -> dict[str, Any]:
        series_subject = event.get("summary")
        out = {}
        for instance in self.people[item.owner].instances(event["id"]):
            _, original = parse_google_when(instance["originalStartTime"])
            key = original.replace("-", "").replace(":", "")
            if instance.get("status") == "cancelled":
                out[key] = "cancelled"
            elif instance.get("summary") != series_subject:
                out[key] = ("subject", instance.get("summary"))
        return out

    # ------------------------------------------------------------------ the run

    def run(self) -> Figures:
        logger = logging.getLogger("portal")
        logger.addHandler(self.crashes)
        try:
            self.setup()
            for number in range(1, self.operations + 1):
                self.op = number
                self.step()
            self.settle()
            self.check()
        finally:
            logger.removeHandler(self.crashes)
            if self.worker is not None:
                self.worker.kill()
            self.emulator.control("DELETE", "/faults")
        self.figures.operations = self.operations
        self.figures.faults = self.emulator.control("GET", "/stats")["faults_triggered"]
        with self.app.app_context():
            from portal.sync.models import SyncCycle

            self.figures.cycles = db.session.query(SyncCycle).count()
            db.session.remove()
        for record in self.crashes.records + (self.worker.crashes() if self.worker is not None else []):
            self.problems.append(f"crash: {record}")
            self.figures.crashes += 1
        return self.figures

    OPERATIONS = (
        ("portal_create", 10), ("portal_edit", 14), ("portal_delete", 4), ("portal_occurrence", 5),
        ("portal_restore", 2),
        ("google_create", 10), ("google_edit", 14), ("google_delete", 4), ("google_occurrence", 5),
        ("google_answer", 3),
        ("cycle", 12), ("push", 7), ("tick", 5), ("expire_tokens", 1), ("toggle_faults", 3), ("arm_kill", 3),
        ("kill_worker", 3),
    )

    def step(self) -> None:
        names, weights = zip(*self.OPERATIONS, strict=True)
        name = self.rng.choices(names, weights)[0]
        if name == "arm_kill" and not self.kills:
            name = "cycle"
        if name == "kill_worker" and self.worker is None:
            name = "push"
        if self.worker is not None:
            time.sleep(0.02)  # people are slower than a loop: give the worker process time to race them
        before = len(self.log)
        if name == "cycle":
            self.cycle(self.rng.choice(self.syncing()))
        else:
            getattr(self, name)()
        if len(self.log) == before:
            self.log.append(f"{self.op:3} {name}")

    def note(self, text: str) -> None:
        self.log.append(f"{self.op:3} {text}")

    def kill_worker(self) -> None:
        self.worker.kill()
        self.note("the worker process is killed (SIGKILL) and started again")
        self.worker.start()

    def settle(self) -> None:
        """Faults stop, no worker is stopped any more, and every user has two clean cycles."""
        self.faults(False)
        self.armed = None
        if self.worker is not None:
            self.worker.kill()
            self.figures.killed += self.worker.kills - 1  # the last one only ends the run
            time.sleep(float(WORKER_SETTINGS["SYNC_LEASE_SECONDS"]) + 0.5)  # its leases run out
        self.note("--- faults off; two clean cycles for every user")
        for _ in range(2):
            self.push()
            for email in self.syncing():
                self.cycle(email)
        self.push()

    # ------------------------------------------------------------------ sync operations

    def expire_tokens(self) -> None:
        email = self.rng.choice(self.syncing())
        self.emulator.add_fault(kind="expire_sync_tokens", user=email)
        self.note(f"Google expires the sync tokens of {email}")

    def toggle_faults(self) -> None:
        self.faults(not self.faults_on)
        self.note(f"faults {'on' if self.faults_on else 'off'}")

    def arm_kill(self) -> None:
        points = ("pulled", "reserved", "series-written", "written", "applied", "replanning", "outbox")
        self.armed = (self.rng.choice(points), self.rng.choice((0, 0, 1)))
        self.note(f"the next sync run stops at {self.armed[0]} (after {self.armed[1]} passes)")

    # ------------------------------------------------------------------ creating items

    def _token(self) -> str:
        return f"T{self.seed}x{len(self.items) + 1:03d}"

    def _slot(self, kind: str) -> tuple:
        day = self.window_start.date() + timedelta(days=self.rng.randrange(0, 12))
        if kind == "allday":
            length = self.rng.choice((1, 1, 2))
            return day, day + timedelta(days=length)
        start = datetime.combine(day, datetime.min.time(), tzinfo=ZoneInfo(ZONE)).replace(
            hour=self.rng.randrange(8, 17))
        return start, start + timedelta(minutes=self.rng.choice((30, 60, 90)))

    def _kind(self) -> tuple[str, bool, list[str]]:
        kind = self.rng.choice(("timed", "timed", "allday", "series"))
        if kind == "series":
            all_day = self.rng.random() < 0.3
            rule = self.rng.choice(ALL_DAY_SERIES if all_day else TIMED_SERIES)
            return kind, all_day, [rule]
        return kind, kind == "allday", []

    def portal_create(self) -> None:
        owner = self.rng.choice(list(PEOPLE))
        token = self._token()
        kind, all_day, recurrence = self._kind()
        start, end = self._slot("allday" if all_day else "timed")
        others = [e for e in PEOPLE if e != owner]
        participants = self.rng.sample(others, self.rng.choice((0, 0, 1, 2)))
        kind_of_type = self.rng.random()
        activity_type = ("Customer visit" if kind_of_type < 0.1 else "Personal" if kind_of_type < 0.2
                         else "Meeting")
        body = {"subject": f"{token} {self.rng.choice(WORDS)}", "start": start.isoformat(), "end": end.isoformat(),
                "all_day": all_day, "time_zone": ZONE, "recurrence": recurrence, "activity_type": activity_type,
                "participants": participants, "description": "", "location": ""}
        if self.rng.random() < 0.08:
            body["project_task"] = self.task_id
        response = self.api(owner, "post", "/api/v1/activities", json=body)
        if response.status_code != 201:
            self.problems.append(f"op {self.op}: the API refused a valid activity: {response.get_json()}")
            return
        item = Item(token, "portal", kind, owner, self.op)
        item.activity_ids.add(response.get_json()["id"])
        with self.app.app_context():
            values = self.activity_values(self.activity(item))
            db.session.remove()
        for name, value in values.items():
            item.edit(name, "portal", value, self.op)
        self.items.append(item)
        self.note(f"portal: {owner} creates {body['subject']!r} {kind} {'all-day ' if all_day else ''}"
                  f"{start}-{end} {recurrence} {activity_type} with {participants}"
                  f"{' (project task)' if 'project_task' in body else ''}")

    def google_create(self) -> None:
        organizer = self.rng.choice(list(PEOPLE))
        token = self._token()
        kind, all_day, recurrence = self._kind()
        start, end = self._slot("allday" if all_day else "timed")
        zone = self.rng.choice((ZONE, ZONE, "UTC"))
        if all_day:
            when = {"start": {"date": start.isoformat()}, "end": {"date": end.isoformat()}}
        else:
            when = {"start": {"dateTime": start.astimezone(ZoneInfo(zone)).isoformat(), "timeZone": zone},
                    "end": {"dateTime": end.astimezone(ZoneInfo(zone)).isoformat(), "timeZone": zone}}
        guests = self.rng.sample([e for e in PEOPLE if e != organizer], self.rng.choice((0, 0, 1, 2)))
        body = {"summary": f"{token} {self.rng.choice(WORDS)}", **when, "recurrence": recurrence,
                "attendees": [{"email": e} for e in guests]}
        if self.rng.random() < 0.15:
            body["visibility"] = "private"
        event = self.people[organizer].events.insert(calendarId="primary", body=body).execute()
        item = Item(token, "google", kind, organizer, self.op)
        item.event_ids.add(event["id"])
        for name, value in self.event_values(event).items():
            item.edit(name, "google", value, self.op)
        self.items.append(item)
        self.note(f"google: {organizer} creates {body['summary']!r} {kind} {when['start']} {recurrence} "
                  f"with {guests}{' private' if 'visibility' in body else ''}")

    # ------------------------------------------------------------------ editing

    def _pick(self, *, alive: bool = True) -> Item | None:
        candidates = [i for i in self.items if i.alive == alive]
        return self.rng.choice(candidates) if candidates else None

    def portal_edit(self) -> None:
        item = self._pick()
        if item is None:
            return
        with self.app.app_context():
            activity = self.activity(item)
            if activity is None:
                db.session.remove()
                return
            current = self.activity_values(activity)
            version = activity.version
            activity_id, owner, all_day = activity.id, activity.owner.email, activity.all_day
            recurring = bool(activity.recurrence)
            start = activity.start_date if all_day else activity.start_at
            end = activity.end_date if all_day else activity.end_at
            exceptions = self.activity_exceptions(activity)
            db.session.remove()
        name = self.rng.choice(FIELDS)
        n = self.op
        if name == "subject":
            body = {"subject": f"{item.token} {self.rng.choice(WORDS)}{n}"}
        elif name == "description":
            body = {"description": self.rng.choice((f"notes {n}", ""))}
        elif name == "location":
            body = {"location": self.rng.choice((f"room {n}", ""))}
        elif name == "when":
            if all_day:
                shift = timedelta(days=self.rng.choice((-2, -1, 1, 2)))
                body = {"start": (start + shift).isoformat(), "end": (end + shift).isoformat(), "all_day": True}
            else:
                shift = timedelta(hours=self.rng.choice((-3, -2, -1, 1, 2, 3)))
                local = ZoneInfo(ZONE)
                body = {"start": (start + shift).astimezone(local).isoformat(),
                        "end": (end + shift).astimezone(local).isoformat()}
        elif name == "participants":
            others = [e for e in PEOPLE if e != owner]
            chosen = set(current["participants"]) - {owner}
            chosen ^= {self.rng.choice(others)}
            body = {"participants": sorted(chosen)}
        else:
            choice = self.rng.choice(("Personal", "Meeting", "Meeting", "Customer visit"))
            body = {"activity_type": choice}
        response = self.api(owner, "patch", f"/api/v1/activities/{activity_id}", json=body, version=version)
        if response.status_code != 200:
            self.note(f"portal: edit of {item.token} refused: {response.status_code} {response.get_json()}")
            return
        with self.app.app_context():
            after = self.activity_values(self.activity(item))
            db.session.remove()
        changed = [f for f in FIELDS if after[f] != current[f]]
        for name_changed in changed:
            item.supersede(name_changed, "portal", current[name_changed])
            item.edit(name_changed, "portal", after[name_changed], self.op)
        if changed:
            self._revive(item, "portal")
        if name == "when" and recurring:
            self._series_moved(item, "portal", exceptions)
        self.note(f"portal: {owner} edits {item.token}: {body}")

    def google_edit(self) -> None:
        item = self._pick()
        if item is None:
            return
        event = self.event(item)
        if event is None:
            return
        person = self.people[item.owner]
        current = self.event_values(event)
        exceptions = self.event_exceptions(item, event) if event.get("recurrence") else {}
        name = self.rng.choice(FIELDS)
        n = self.op
        if name == "subject":
            body = {"summary": f"{item.token} {self.rng.choice(WORDS)}{n}"}
        elif name == "description":
            body = {"description": self.rng.choice((f"notes {n}", ""))}
        elif name == "location":
            body = {"location": self.rng.choice((f"room {n}", ""))}
        elif name == "when":
            body = {}
            days = self.rng.choice((-2, -1, 1, 2))
            hours = self.rng.choice((-3, -2, -1, 1, 2, 3))
            for edge in ("start", "end"):
                value = dict(event[edge])
                if "date" in value:
                    value["date"] = (date.fromisoformat(value["date"]) + timedelta(days=days)).isoformat()
                else:
                    moment = datetime.fromisoformat(value["dateTime"].replace("Z", "+00:00"))
                    value["dateTime"] = (moment + timedelta(hours=hours)).isoformat()
                body[edge] = value
        elif name == "participants":
            others = [e for e in PEOPLE if e != item.owner]
            toggled = self.rng.choice(others)
            attendees = [a for a in event.get("attendees") or [] if a.get("email") != toggled]
            if len(attendees) == len(event.get("attendees") or []):
                attendees.append({"email": toggled})
            if [a for a in attendees if a.get("email") != item.owner] == []:
                attendees = []
            body = {"attendees": attendees}
        else:
            body = {"visibility": "default" if current["private"] else "private"}
        # Conditional on the event as read, as the deletes and the portal side's edits are: a worker writing
        # it at that moment cannot make the oracle misread what the edit was made on (PostgreSQL seed 168).
        request = person.events.patch(calendarId="primary", eventId=event["id"], body=body)
        request.headers["If-Match"] = event["etag"]
        try:
            changed_event = request.execute()
        except HttpError as exc:
            self.note(f"google: edit of {item.token} refused: {exc.resp.status}")
            return
        after = self.event_values(changed_event)
        changed = [f for f in FIELDS if after[f] != current[f]]
        for name_changed in changed:
            item.supersede(name_changed, "google", current[name_changed])
            item.edit(name_changed, "google", after[name_changed], self.op)
        if changed:
            self._revive(item, "google")
        if name == "when" and event.get("recurrence"):
            self._series_moved(item, "google", exceptions)
        self.note(f"google: {item.owner} edits {item.token} ({event['id'][:12]}): {body}")

    def _series_moved(self, item: Item, side: str, seen: dict[str, Any]) -> None:
        """A series moved: its edited occurrences that `side` could see are over (Google drops them too)."""
        for name in [n for n in item.live if n.startswith("occ:")]:
            key = name[4:]
            for edit_side, edit in list(item.live[name].items()):
                if edit_side == side or seen.get(key) == edit.value:
                    item.live[name].pop(edit_side)

    def _revive(self, item: Item, side: str) -> None:
        """An edit on `side` of an item the other side deleted, before that delete reached it: the edit wins."""
        if not item.alive and item.deleted_on not in (None, side):
            item.alive, item.deleted_on = True, None

    # ------------------------------------------------------------------ occurrences

    def portal_occurrence(self) -> None:
        item = self._pick()
        if item is None or item.kind != "series":
            return
        with self.app.app_context():
            activity = self.activity(item)
            if activity is None or not activity.recurrence:
                db.session.remove()
                return
            occurrences = activity.occurrences_between(self.window_start - timedelta(days=3),
                                                       self.window_start + timedelta(days=60))
            if not occurrences:
                db.session.remove()
                return
            occurrence = self.rng.choice(occurrences)
            key = occurrence.key
            exceptions = self.activity_exceptions(activity)
            activity_id, owner, all_day = activity.id, activity.owner.email, activity.all_day
            form = {"occurrence": key, "scope": "this", "subject": occurrence.subject,
                    "description": activity.description or "", "location": occurrence.location or "",
                    "time_zone": activity.time_zone, "activity_type": str(activity.activity_type_id)}
            if all_day:
                form.update(all_day="on", start_date=occurrence.start.isoformat(),
                            end_date=(occurrence.end - timedelta(days=1)).isoformat())
            else:
                zone = ZoneInfo(activity.time_zone)
                start, end = occurrence.start.astimezone(zone), occurrence.end.astimezone(zone)
                form.update(start_date=start.date().isoformat(), start_time=start.strftime("%H:%M"),
                            end_date=end.date().isoformat(), end_time=end.strftime("%H:%M"))
            db.session.remove()
        name = f"occ:{key}"
        if self.rng.random() < 0.4:
            response = self.post_page(owner, f"/calendar/activities/{activity_id}/delete",
                                      {"occurrence": key, "scope": "this"})
            value = "cancelled"
            what = "cancels"
        else:
            form["subject"] = f"{item.token} occ{self.op}"
            response = self.post_page(owner, f"/calendar/activities/{activity_id}", form)
            value = ("subject", form["subject"])
            what = f"retitles to {form['subject']!r}"
        if response.status_code not in (200, 302):
            self.note(f"portal: occurrence {key} of {item.token} refused: {response.status_code}")
            return
        item.supersede(name, "portal", exceptions.get(key))
        item.edit(name, "portal", value, self.op)
        self._revive(item, "portal")
        self.note(f"portal: {owner} {what} occurrence {key} of {item.token}")

    def google_occurrence(self) -> None:
        item = self._pick()
        if item is None or item.kind != "series":
            return
        event = self.event(item)
        if event is None or not event.get("recurrence"):
            return
        person = self.people[item.owner]
        instances = [i for i in person.instances(event["id"]) if i.get("status") != "cancelled"]
        if not instances:
            return
        exceptions = self.event_exceptions(item, event)
        instance = self.rng.choice(instances)
        _, original = parse_google_when(instance["originalStartTime"])
        key = original.replace("-", "").replace(":", "")
        name = f"occ:{key}"
        try:
            if self.rng.random() < 0.4:
                person.events.delete(calendarId="primary", eventId=instance["id"]).execute()
                value, what = "cancelled", "cancels"
            else:
                subject = f"{item.token} occ{self.op}"
                person.events.patch(calendarId="primary", eventId=instance["id"],
                                    body={"summary": subject}).execute()
                value, what = ("subject", subject), f"retitles to {subject!r}"
        except HttpError as exc:
            self.note(f"google: occurrence {key} of {item.token} refused: {exc.resp.status}")
            return
        item.supersede(name, "google", exceptions.get(key))
        item.edit(name, "google", value, self.op)
        self._revive(item, "google")
        self.note(f"google: {item.owner} {what} occurrence {key} of {item.token}")

    def google_answer(self) -> None:
        item = self._pick()
        if item is None:
            return
        event = self.event(item)
        if event is None:
            return
        guests = [a["email"] for a in event.get("attendees") or [] if a.get("email") in PEOPLE
                  and a.get("email") != item.owner]
        if not guests:
            return
        guest = self.rng.choice(guests)
        answer = self.rng.choice(("accepted", "declined", "tentative"))
        attendees = [dict(a, responseStatus=answer) if a.get("email") == guest else a for a in event["attendees"]]
        try:
            self.people[guest].events.patch(calendarId="primary", eventId=event["id"],
                                            body={"attendees": attendees}).execute()
        except HttpError as exc:
            self.note(f"google: {guest}'s answer to {item.token} refused: {exc.resp.status}")
            return
        self.note(f"google: {guest} answers {answer} to {item.token}")

    # ------------------------------------------------------------------ deleting and restoring

    def portal_delete(self) -> None:
        item = self._pick()
        if item is None:
            return
        with self.app.app_context():
            activity = self.activity(item)
            if activity is None:
                db.session.remove()
                return
            current = self.activity_values(activity)
            exceptions = self.activity_exceptions(activity)
            activity_id, owner, version = activity.id, activity.owner.email, activity.version
            db.session.remove()
        event = self.event(item)
        there = None
        if event is not None:
            there = self.event_values(event) | {
                f"occ:{k}": v for k, v in (self.event_exceptions(item, event) if event.get("recurrence")
                                           else {}).items()}
        response = self.api(owner, "delete", f"/api/v1/activities/{activity_id}", version=version)
        if response.status_code != 204:
            self.note(f"portal: delete of {item.token} refused: {response.status_code}")
            return
        self._deleted(item, "portal", current, exceptions, there)
        self.note(f"portal: {owner} deletes {item.token}")

    def google_delete(self) -> None:
        item = self._pick()
        if item is None:
            return
        event = self.event(item)
        if event is None:
            return
        current = self.event_values(event)
        exceptions = self.event_exceptions(item, event) if event.get("recurrence") else {}
        with self.app.app_context():
            activity = self.activity(item)
            there = None if activity is None else self.activity_values(activity) | {
                f"occ:{k}": v for k, v in self.activity_exceptions(activity).items()}
            # The portal changed its type to one that does not go to Google, and that has not reached
            # Google yet: that edit wins over the delete (the activity stays, without its event).
            leaving = (activity is not None and item.origin == "portal"
                       and not activity.activity_type.sync_to_google)
            db.session.remove()
        # Conditional on the event as read, as the portal side's edits are: a worker writing it at that
        # moment cannot make the oracle misread what the delete was made on.
        request = self.people[item.owner].events.delete(calendarId="primary", eventId=event["id"])
        request.headers["If-Match"] = event["etag"]
        try:
            request.execute()
        except HttpError as exc:
            self.note(f"google: delete of {item.token} refused: {exc.resp.status}")
            return
        if leaving:
            # The portal had changed its type to one that does not go to Google, and that has not reached
            # Google: if it still holds when the sync meets the delete, the activity stays (leaving Google
            # anyway); if the type is changed back first, the delete wins. Either end is right.
            self.note("    (deleted while the portal's change of type was on its way: kept or deleted)")
            for edits in item.live.values():
                edits.pop("google", None)
            item.either = True
        else:
            self._deleted(item, "google", current, exceptions, there)
        self.note(f"google: {item.owner} deletes {item.token} ({event['id'][:12]})")

    def _deleted(self, item: Item, side: str, current: dict, exceptions: dict, there: dict | None) -> None:
        """`side` deleted the item, showing `current`; `there` is what the other side shows now (None: not
        there). An edit of the other side wins over the delete when the deleting side had not seen it and
        the sync has not taken it yet (the other side still shows it: one that lost a conflict was taken)."""
        other = "google" if side == "portal" else "portal"
        unseen, cancellations = [], []
        for name, edits in item.live.items():
            seen = exceptions.get(name[4:]) if name.startswith("occ:") else current.get(name)
            if other not in edits or edits[other].value == seen or there is None:
                continue
            if there.get(name) == edits[other].value:
                unseen.append(f"{name} {edits[other].value!r} (here {seen!r})")
                if name.startswith("occ:") and edits[other].value == "cancelled":
                    cancellations.append(name)
        if unseen and len(cancellations) == len(unseen):
            # Cancelled occurrences go the same way as the delete: they do not bring the item back, and they go
            # with it (README): a later restore brings back the copy as the deleting side had it.
            self.note(f"    (only occurrences cancelled in {other}: the delete wins: {'; '.join(unseen)})")
            for name in cancellations:
                item.live[name].pop(other)
            unseen = []
        item.stash = {name: edits.pop(side) for name, edits in item.live.items() if side in edits} \
            if side == "portal" else {}
        for edits in item.live.values():
            edits.pop(side, None)
        if unseen:  # the other side's change, not seen here, wins over the delete
            self.note(f"    ({other}'s edit not seen in {side} wins over the delete: {'; '.join(unseen)})")
            item.overridden_by = other
            return
        item.alive, item.deleted_on = False, side

    def portal_restore(self) -> None:
        item = self._pick(alive=False)
        if item is None:
            return
        with self.app.app_context():
            trashed = self.activities(item, deleted=True)
            if not trashed or self.activities(item):
                db.session.remove()
                return
            activity = trashed[-1]
            activity_id, owner = activity.id, activity.owner.email
            db.session.remove()
        response = self.post_page(owner, f"/calendar/trash/{activity_id}/restore", {})
        if response.status_code != 302:
            self.note(f"portal: restore of {item.token} refused: {response.status_code}")
            return
        item.alive, item.deleted_on = True, None
        if self.event(item) is None:
            # Its event is gone from Google: the restored activity is the portal's own from now on and
            # goes to Google by the portal's rules (its type, project task, who syncs).
            item.origin = "portal"
        for name, edit in item.stash.items():
            item.live.setdefault(name, {})["portal"] = edit
        item.stash = {}
        self.note(f"portal: {owner} restores {item.token} from the trash")

    # ------------------------------------------------------------------ the oracle

    def check(self) -> None:
        from portal.sync.models import SyncJournalEntry

        calendars = {email: person.live() for email, person in self.people.items()}
        with self.app.app_context():
            for item in self.items:
                self._check_item(item, calendars, SyncJournalEntry)
            db.session.remove()

    def _problem(self, kind: str, item: Item, text: str) -> None:
        setattr(self.figures, kind, getattr(self.figures, kind) + 1)
        self.problems.append(f"{kind}: {item.token} ({item.origin}, {item.kind}, owner {item.owner}): {text}")

    def _check_item(self, item: Item, calendars: dict, journal_model) -> None:
        activities = self.activities(item)
        events = self.events(item, calendars)
        if len(activities) > 1:
            self._problem("duplicates", item, f"{len(activities)} activities {[a.id for a in activities]}")
        if len(events) > 1:
            self._problem("duplicates", item, f"{len(events)} events {sorted(events)}")
        activity = activities[0] if activities else None
        event = next(iter(events.values())) if events else None
        if item.either and activity is None and event is None:
            return  # deleted: one of the two right ends
        if item.overridden_by == "google" and activity is None and event is None and self._all_reverts(
                item, journal_model):
            # The Google edits that beat the portal's delete were changed back to what both sides had agreed
            # on before the sync saw them: no change at all (see the README), so the delete may win too.
            return
        if item.overridden_by == "google" and activity is None and event is None and self._all_cancellations(
                item):
            # The Google edits that beat the portal's delete were occurrences, cancelled since: when the sync
            # met the delete after that, it saw only cancelled occurrences, which go the way of the delete
            # (README); when it met it before, the series stayed. Both ends are right.
            return

        if not item.alive:
            if activity is not None:
                self._problem("mismatches", item, f"deleted in {item.deleted_on}, but the activity is back")
            if event is not None:
                self._problem("mismatches", item, f"deleted in {item.deleted_on}, but the event is back")
            return

        in_portal, in_google = self._check_placement(item, activity, event)
        values = self._final_values(item, activity, event, in_portal, in_google)
        if "portal" in values and "google" in values:
            for name in FIELDS:
                if values["portal"][name] != values["google"][name]:
                    self._problem("mismatches", item, f"{name}: portal {values['portal'][name]!r}, "
                                                      f"google {values['google'][name]!r}")
            if activity.recurrence:
                self._check_occurrences(item, activity, event)
        self._check_edits(item, values, journal_model)

    def _check_placement(self, item: Item, activity, event) -> tuple[bool, bool]:
        """Whether the item belongs in the portal and in Google by the rules of the mission; a problem for
        each side where it is not as it belongs."""
        if item.origin == "portal":
            in_portal = True
            in_google = activity is not None and self._eligible(activity)
        else:
            in_google = True
            source = self.event_values(event) if event is not None else None
            in_portal = source is not None and any(PEOPLE.get(p) for p in source["participants"])
        if in_portal and activity is None:
            self._problem("lost", item, "should be in the portal but is not")
        if not in_portal and activity is not None:
            self._problem("mismatches", item, "is in the portal although no user with sync on takes part")
        if in_google and event is None:
            self._problem("lost", item, "should be in Google but is not")
        if not in_google and event is not None:
            why = self._ineligible_reason(activity) if activity is not None else "no activity"
            self._problem("mismatches", item, f"is in Google although it must not be ({why})")
        return in_portal, in_google

    def _final_values(self, item: Item, activity, event, in_portal: bool, in_google: bool) -> dict:
        """The item's fields and occurrences as each side where it belongs ends up with them."""
        values = {}
        if activity is not None and in_portal:
            values["portal"] = self.activity_values(activity) | {
                f"occ:{k}": v for k, v in self.activity_exceptions(activity).items()}
        if event is not None and in_google:
            values["google"] = self.event_values(event) | {
                f"occ:{k}": v for k, v in (self.event_exceptions(item, event) if event.get("recurrence")
                                           else {}).items()}
        return values

    def _check_edits(self, item: Item, values: dict, journal_model) -> None:
        """Every edit made on either side is the final value, or the loser of a conflict kept in the journal."""
        journal = self._losers(item, journal_model)
        agreed = self._agreed(item, journal_model)
        for name, edits in item.live.items():
            for edit in edits.values():
                finals = [v.get(name) for v in values.values()]
                if not finals or all(final == edit.value for final in finals):
                    continue
                if self._journaled(journal, name, edit.value):
                    continue
                if edit.side == "google" and self._agreed_at(agreed, name, edit.at) == edit.value:
                    # Changed in Google and changed back to what both sides had agreed on before the sync
                    # came by: Google tells no more than the content, so that is no change (the README says so).
                    continue
                self._problem("lost", item, f"{edit.side} edit of {name} at op {edit.op} to {edit.value!r} is "
                                            f"neither the final value {finals!r} nor kept in the journal")

    @staticmethod
    def _all_cancellations(item: Item) -> bool:
        edits = [(name, edit) for name, edits in item.live.items() for edit in edits.values() if edit.side == "google"]
        return bool(edits) and all(name.startswith("occ:") and edit.value == "cancelled" for name, edit in edits)

    def _all_reverts(self, item: Item, journal_model) -> bool:
        agreed = self._agreed(item, journal_model)
        edits = [e for edits in item.live.values() for e in edits.values() if e.side == "google"]
        return bool(edits) and all(self._agreed_at(agreed, name, edit.at) == edit.value
                                   for name, edits in item.live.items() for edit in edits.values()
                                   if edit.side == "google")

    def _agreed(self, item: Item, journal_model) -> list[tuple[datetime, dict]]:
        """The states both sides agreed on, in time: each write the sync journaled leaves both sides so."""
        if not item.activity_ids:
            return []
        rows = db.session.scalars(select(journal_model).where(
            journal_model.activity_id.in_(item.activity_ids),
            journal_model.kind.in_(("created", "updated", "linked", "restored"))).order_by(journal_model.id)).all()
        return [(row.created_at, row.after) for row in rows if isinstance(row.after, dict)]

    @staticmethod
    def _agreed_at(agreed: list[tuple[datetime, dict]], name: str, moment: datetime):
        state = None
        for at, after in agreed:
            if at <= moment:
                state = after
        if state is None:
            return None
        if name.startswith("occ:"):
            exc = (state.get("exceptions") or {}).get(name[4:])
            if exc is None:
                return None
            return "cancelled" if exc.get("cancelled") else ("subject", exc.get("subject"))
        if name == "when":
            def moment_of(value):
                if "date" in value:
                    return value["date"]
                return utc_text(datetime.fromisoformat(value["dateTime"]))
            return (bool(state["all_day"]), moment_of(state["start"]), moment_of(state["end"]))
        if name == "participants":
            return frozenset(state.get("participants") or ())
        return state.get(name)

    def _eligible(self, activity) -> bool:
        return self._ineligible_reason(activity) is None

    @staticmethod
    def _ineligible_reason(activity) -> str | None:
        if activity.project_task_id is not None:
            return "a project task"
        if not activity.activity_type.sync_to_google:
            return f"type {activity.activity_type.name} does not sync"
        people = {activity.owner.email} | {u.email for u in activity.participants}
        if not any(PEOPLE.get(p) for p in people):
            return "nobody taking part has sync on"
        return None

    def _losers(self, item: Item, journal_model) -> list:
        if not item.activity_ids:
            return []
        return db.session.scalars(select(journal_model).where(journal_model.activity_id.in_(item.activity_ids),
                                                              journal_model.kind == "conflict")).all()

    @staticmethod
    def _journaled(journal: list, name: str, value: Any) -> bool:
        if name.startswith("occ:"):
            wanted = {f"exceptions[{name[4:]}]"}
        else:
            wanted = JOURNAL_FIELDS.get(name, {name})
        for entry in journal:
            if entry.field not in wanted:
                continue
            if name in ("subject", "description", "location"):
                if entry.before == value:
                    return True
            elif name == "participants":
                if set(entry.before or []) == set(value):
                    return True
            elif name == "private":
                if entry.before == value:
                    return True
            else:
                return True  # times and occurrences: the field's conflict is journaled
        return False

    def _check_occurrences(self, item: Item, activity, event: dict) -> None:
        after = self.window_start - timedelta(days=5)
        before = self.window_start + timedelta(days=60)
        portal = sorted(
            (occurrence_key(o.start), occurrence_key(o.end), o.subject)
            for o in activity.occurrences_between(after, before))
        google = []
        for instance in self.people[item.owner].instances(event["id"]):
            if instance.get("status") == "cancelled":
                continue
            all_day, start = parse_google_when(instance["start"])
            _, end = parse_google_when(instance["end"])
            google.append((start.replace("-", "").replace(":", ""), end.replace("-", "").replace(":", ""),
                           instance.get("summary")))
        google.sort()
        if portal != google:
            only_portal = sorted(set(portal) - set(google))
            only_google = sorted(set(google) - set(portal))
            self._problem("mismatches", item, f"occurrences differ: only in the portal {only_portal}, "
                                              f"only in Google {only_google}")

    def report(self) -> str:
        lines = [f"seed {self.seed}: {self.figures.line()}"]
        if self.problems:
            lines += ["problems:", *("  " + p for p in self.problems), "operations:", *self.log]
            lines += self.journal_of_problems()
        return "\n".join(lines)

    def journal_of_problems(self) -> list[str]:
        """What the sync journaled about the items with problems, to read beside the operations."""
        from portal.sync.models import SyncCycle, SyncJournalEntry

        tokens = {p.split(": ", 2)[1].split()[0] for p in self.problems if not p.startswith("crash")}
        lines = []
        try:
            with self.app.app_context():
                for item in (i for i in self.items if i.token in tokens):
                    if not item.activity_ids:
                        continue
                    lines.append(f"journal of {item.token} (activities {sorted(item.activity_ids)}):")
                    rows = db.session.execute(
                        select(SyncJournalEntry, SyncCycle).join(SyncCycle, SyncCycle.id == SyncJournalEntry.cycle_id)
                        .where(SyncJournalEntry.activity_id.in_(item.activity_ids)).order_by(SyncJournalEntry.id)).all()
                    for entry, cycle in rows:
                        def short(value):
                            return value if not isinstance(value, dict) else {
                                k: v for k, v in value.items() if k in ("subject", "description", "location", "start")}
                        lines.append(f"  cycle {cycle.id} ({cycle.trigger}, user {cycle.user_id}, {cycle.status}) "
                                     f"{entry.kind} {entry.side or ''} {entry.field or ''} "
                                     f"{short(entry.before)!r} -> {short(entry.after)!r} {entry.message or ''}"[:400])
                db.session.remove()
        except Exception as exc:  # noqa: BLE001 - a report must print whatever it can
            lines.append(f"(journal not readable: {exc})")
        return lines


def run_chaos(app, emulator, seed: int, operations: int, **kwargs) -> Chaos:
    chaos = Chaos(app, emulator, seed, operations, **kwargs)
    chaos.run()
    return chaos



ENCRYPTION_KEY = "hYDDs2tKQ-6jSuX4rrNQNlQhX3DOXVkIOCMUDldOZFc="


@contextmanager
def chaos_app(folder: Path, emulator, database_url: str | None = None):
    """A fresh portal on its own database (SQLite in `folder`, or a new database on a PostgreSQL server),
    talking to `emulator`, with the sync's retries kept short so faults cost no real waiting."""
    from portal import create_app

    folder.mkdir(parents=True, exist_ok=True)
    created = None
    if database_url:
        uri, created = _new_postgres_database(database_url)
    else:
        uri = "sqlite:///" + str(folder / "portal.sqlite")
    app = create_app({
        "TESTING": True, "SECRET_KEY": "chaos", "ENCRYPTION_KEY": ENCRYPTION_KEY, "WTF_CSRF_ENABLED": False,
        "SQLALCHEMY_DATABASE_URI": uri, "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
        "GOOGLE_TOKEN_URI": emulator.token_uri, "GOOGLE_API_ENDPOINT": emulator.api_endpoint,
        "GOOGLE_BATCH_URI": emulator.batch_uri, "GOOGLE_TIMEOUT": 5,
        "SYNC_RETRY_BASE_SECONDS": 0.005, "SYNC_RETRY_CAP_SECONDS": 0.02,
        **(WORKER_SETTINGS if database_url else {}),
    })
    with app.app_context():
        db.create_all()
    try:
        yield app
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
        if created is not None:
            _drop_postgres_database(database_url, created)


def _new_postgres_database(base_url: str) -> tuple[str, str]:
    from sqlalchemy import create_engine, text

    name = "portal_chaos_" + uuid.uuid4().hex[:10]
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return re.sub(r"/[^/]*$", "/" + name, base_url), name


def _drop_postgres_database(base_url: str, name: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
