"""In-memory state of the emulated Workspace: users, calendars, events, service accounts, tokens,
channels and the controllable clock. Plain picklable objects so it can be persisted to SQLite."""

from __future__ import annotations

import datetime as dt
import pickle
import random
import sqlite3
import threading
import time
from collections import Counter

from portal.emulator.timeutil import UTC


class User:
    def __init__(self, email, time_zone="UTC", name=None):
        self.email = email
        self.time_zone = time_zone
        self.name = name or email.split("@")[0]


class ServiceAccount:
    def __init__(self, email, client_id, private_key_pem, key_id, public_key_pem):
        self.email = email
        self.client_id = client_id
        self.private_key_pem = private_key_pem
        self.public_key_pem = public_key_pem
        self.key_id = key_id


class AccessToken:
    def __init__(self, token, user, scopes, expiry, client_id=None):
        self.token = token
        self.user = user
        self.scopes = set(scopes)
        self.expiry = expiry
        self.client_id = client_id


class Calendar:
    """A user's primary calendar: per-calendar entries and a change sequence for sync tokens."""

    def __init__(self, cal_id, time_zone):
        self.id = cal_id
        self.time_zone = time_zone
        self.entries = {}  # event id -> Entry (instances' exceptions included)
        self.seq = 0
        self.sync_epoch = 1
        self.updated = None


class Core:
    """The shared part of an event (one per event, referenced by every attendee's copy)."""

    def __init__(self, event_id, organizer, creator, created):
        self.id = event_id
        self.ical_uid = event_id + "@google.com"
        self.organizer = organizer
        self.creator = creator
        self.created = created
        self.sequence = 0
        self.status = "confirmed"
        self.event_type = "default"
        self.fields = {}  # summary, description, location, attendees, recurrence, visibility, ...
        self.start = None  # When
        self.end = None  # When
        self.shared_props = {}
        self.recurring_event_id = None  # set on exceptions (modified/cancelled instances)
        self.original_start = None  # When of the instance an exception replaces
        self.exceptions = {}  # on a series: instance id -> Core

    @property
    def attendees(self):
        return self.fields.get("attendees") or []


class Entry:
    """One calendar's copy of an event: its own etag, updated, private properties, reminders."""

    def __init__(self, cal_id, core):
        self.cal_id = cal_id
        self.core = core
        self.private_props = {}
        self.reminders = None
        self.updated = None
        self.seq = 0
        self.etag = None
        self.removed = False  # an attendee's copy after the attendee was removed (or declined+deleted)

    @property
    def cancelled(self):
        return self.removed or self.core.status == "cancelled"


class Channel:
    def __init__(self, channel_id, resource_id, cal_id, address, token, expiration, resource_uri):
        self.id = channel_id
        self.resource_id = resource_id
        self.cal_id = cal_id
        self.address = address
        self.token = token
        self.expiration = expiration  # aware datetime on the emulated clock
        self.resource_uri = resource_uri
        self.message_number = 0
        self.stopped = False


class State:
    def __init__(self):
        self.users = {}
        self.calendars = {}
        self.service_accounts = {}
        self.delegations = {}  # client_id -> set(scopes)
        self.tokens = {}
        self.channels = {}
        self.faults = []
        self.clock_offset = 0.0
        self.change_counter = 0
        self.stats = Counter()
        self.statuses = Counter()
        self.emails_sent = 0
        self.notifications_sent = 0
        self.faults_triggered = 0
        self.ids = random.Random()  # event ids; seeded (POST /reset {"seed"}) for runs that repeat
        self.pending_delegations = []  # (effective at, (grant?, client_id, scopes)) - delegation changes under way
        self.quotas = {"per_user_per_minute": None, "per_project_per_minute": None}
        self.quota_hits = {}

    # -- clock -------------------------------------------------------------------------------
    def now(self):
        return dt.datetime.now(UTC) + dt.timedelta(seconds=self.clock_offset)

    def next_etag(self, moment):
        self.change_counter += 1
        return f'"{int(moment.timestamp() * 1000) * 1000 + self.change_counter % 1000}"'

    def touch(self, entry, moment=None, dirty=None):
        """Record a change of `entry` in its calendar's change sequence."""
        moment = moment or self.now()
        cal = self.calendars[entry.cal_id]
        cal.seq += 1
        entry.seq = cal.seq
        if entry.updated is None or moment > entry.updated:
            entry.updated = moment
        else:
            entry.updated = entry.updated + dt.timedelta(milliseconds=1)
        entry.etag = self.next_etag(entry.updated)
        cal.updated = entry.updated
        if dirty is not None:
            dirty.add(entry.cal_id)


class Store:
    """Holds the State, its lock, and optional SQLite persistence."""

    def __init__(self, path=None):
        self.lock = threading.RLock()
        self.path = path
        self.state = State()
        if path:
            self._load()

    def _connect(self):
        con = sqlite3.connect(self.path, timeout=10)
        con.execute("CREATE TABLE IF NOT EXISTS emulator_state (id INTEGER PRIMARY KEY, saved REAL, data BLOB)")
        return con

    def _load(self):
        con = self._connect()
        try:
            row = con.execute("SELECT data FROM emulator_state WHERE id = 1").fetchone()
        finally:
            con.close()
        if row:
            self.state = pickle.loads(row[0])
            self.state.faults = []
            if not hasattr(self.state, "ids"):  # saved before event ids had their own generator
                self.state.ids = random.Random()
            for name, value in (("pending_delegations", []), ("quota_hits", {}),
                                ("quotas", {"per_user_per_minute": None, "per_project_per_minute": None})):
                if not hasattr(self.state, name):  # saved before these existed
                    setattr(self.state, name, value)

    def save(self):
        if not self.path:
            return
        data = pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)
        con = self._connect()
        try:
            with con:
                con.execute("INSERT OR REPLACE INTO emulator_state (id, saved, data) VALUES (1, ?, ?)",
                            (time.time(), data))
        finally:
            con.close()

    def reset(self):
        with self.lock:
            self.state = State()
            self.save()
