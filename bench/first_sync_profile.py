"""What large cycles cost the portal: SQL statements, CPU and Google requests of a first sync, of the cycle
after it (our own writes listed back), and of a cycle with many changes.

    .venv/bin/python bench/first_sync_profile.py --sizes 500,1000,2000,5000 \
        [--database postgresql+psycopg://postgres@127.0.0.1:5432/test] [--changes 1000 --base 2000] [--profile]

For each size N: one user with N events in Google and N activities in the portal, half of them the same
items on both sides (matched, not copied). Printed per cycle: wall time; the cycle thread's CPU time
(`time.thread_time`: the emulator's work is not counted); "db", the time spent executing statements (from
SQLAlchemy's `before_cursor_execute` to `after_cursor_execute`: the database's answer and the driver's work,
part of which is also CPU); SQL statements; Google requests. The wall beyond cpu + db is, roughly, the time
Google (the emulator) took. `--changes K --base M`: on a synced M + M calendar, K/2 events changed in Google
and K/2 activities in the portal, then one cycle.
`--database`: a PostgreSQL server URL in TEST_DATABASE_URL style; each run gets a fresh database there.
`--profile`: cProfile's top entries of each first sync (and of the changes cycle): by own time, and the
portal's functions by cumulative time. `--emulator-process`: the emulator in a process of its own (it then
shares no interpreter lock with the cycle; its seeding goes over HTTP and takes longer). `--statements`: the
most frequent statements of each cycle.
"""

from __future__ import annotations

import argparse
import base64
import collections
import cProfile
import io
import pstats
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402
from sqlalchemy import create_engine, event, select, text  # noqa: E402

from portal import create_app  # noqa: E402
from portal.accounts import add_organization, add_user  # noqa: E402
from portal.activities import clean_activity, create_activity  # noqa: E402
from portal.emulator import calendar as emulated  # noqa: E402
from portal.emulator.server import EmulatorServer  # noqa: E402
from portal.extensions import db  # noqa: E402
from portal.integration import integration_for, save_account, set_enabled, upload_key  # noqa: E402
from portal.models import Activity, Organization, User  # noqa: E402
from portal.sync.engine import run_user_cycle  # noqa: E402
from portal.sync.google import GOOGLE_SCOPES  # noqa: E402
from portal.sync.models import CalendarSync, SyncLink  # noqa: E402

SA = "bench@bench-project.iam.gserviceaccount.com"
CLIENT_ID = "100000000000000000777"
EMAIL = "bench@bench.test"


class Counter:
    """Statements sent, and the time spent waiting for their answers (the database's share of the wall)."""

    def __init__(self):
        self.statements = 0
        self.waited = 0.0
        self._sent = 0.0
        self.shapes: collections.Counter | None = None

    def __call__(self, conn, cursor, statement, parameters, context, executemany):
        self.statements += 1
        self._sent = time.perf_counter()
        self._shape = " ".join(statement.split())[:90]
        if self.shapes is not None:
            self.shapes[self._shape] += 1

    def answered(self, *args):
        took = time.perf_counter() - self._sent
        self.waited += took
        if self.shapes is not None:
            self.times[self._shape] += took


@contextmanager
def fresh_database(url: str | None, folder: Path):
    if not url:
        yield f"sqlite:///{folder / ('bench-' + uuid.uuid4().hex[:6] + '.sqlite')}"
        return
    name = "portal_bench_" + uuid.uuid4().hex[:10]
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield re.sub(r"/[^/]*$", "/" + name, url)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class EmulatorProcess:
    """The emulator in a process of its own: its work then neither shares this process's interpreter lock
    with the cycle nor counts in the wall time as the cycle's (it stands for Google's side)."""

    def __init__(self):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.token_uri, self.api_endpoint = self.base_url + "/token", self.base_url
        self.batch_uri = self.base_url + "/batch/calendar/v3"
        self.session = requests.Session()

    def __enter__(self):
        self.process = subprocess.Popen([sys.executable, "-m", "portal.emulator", "--port", str(self.port),
                                         "--quiet"], stdout=subprocess.DEVNULL)
        for _ in range(100):
            try:
                self.session.get(self.base_url + "/emulator/v1/stats", timeout=1)
                return self
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("the emulator did not start")

    def __exit__(self, *exc):
        self.process.terminate()
        self.process.wait(timeout=10)

    def control(self, method, path, json=None):
        answer = self.session.request(method, f"{self.base_url}/emulator/v1{path}", json=json, timeout=30)
        answer.raise_for_status()
        return answer.json()

    def add_user(self, email, time_zone="UTC"):
        return self.control("POST", "/users", {"email": email, "time_zone": time_zone})

    def insert(self, email, body):
        return self.control("POST", f"/users/{email}/events", body)

    def patch(self, email, event_id, body):
        token = self.control("POST", "/tokens", {"user": email})["access_token"]
        answer = self.session.patch(f"{self.api_endpoint}/calendar/v3/calendars/primary/events/{event_id}",
                                    json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        answer.raise_for_status()


class EmulatorThread(EmulatorServer):
    """The emulator in threads of this process, seeded without HTTP (quicker to set up)."""

    def insert(self, email, body):
        ctx = emulated.Ctx(self.state, email, self.base_url, emulated.WRITE_SCOPES)
        return emulated.events_insert(ctx, "primary", {}, body)[1]

    def patch(self, email, event_id, body):
        ctx = emulated.Ctx(self.state, email, self.base_url, emulated.WRITE_SCOPES)
        emulated.events_modify(ctx, "primary", event_id, {}, body, {}, patch=True)


class World:
    """One organization, one user with sync on, the emulator holding their calendar."""

    def __init__(self, emulator: EmulatorServer, database_url: str):
        self.emulator = emulator
        self.app = create_app({"SECRET_KEY": "bench", "ENCRYPTION_KEY": "hYDDs2tKQ-6jSuX4rrNQNlQhX3DOXVkIOCMUDldOZFc=",
                               "SQLALCHEMY_DATABASE_URI": database_url, "GOOGLE_TOKEN_URI": emulator.token_uri,
                               "GOOGLE_API_ENDPOINT": emulator.api_endpoint, "GOOGLE_BATCH_URI": emulator.batch_uri,
                               "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000"})
        self.counter = Counter()
        emulator.add_user(EMAIL, time_zone="Europe/Amsterdam")
        account = emulator.control("POST", "/service-accounts", {"email": SA, "client_id": CLIENT_ID})
        emulator.control("POST", "/delegations", {"client_id": CLIENT_ID, "scopes": list(GOOGLE_SCOPES)})
        with self.app.app_context():
            db.create_all()
            event.listen(db.engine, "before_cursor_execute", self.counter)
            event.listen(db.engine, "after_cursor_execute", self.counter.answered)
            organization = add_organization("Bench")
            user = add_user(organization, EMAIL, "Bench", "admin", "bench-password")
            db.session.commit()
            row = integration_for(organization)
            save_account(row, user, SA, CLIENT_ID)
            upload_key(row, user, base64.b64decode(account["p12_base64"]), "notasecret")
            set_enabled(row, user, True, user.email)
            db.session.commit()
            self.user_id, self.organization_id = user.id, organization.id
        self.start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=1)
        self.event_ids: list[str] = []

    def fill(self, n: int) -> None:
        """N activities and N events; the first half of each are the same items (they match)."""
        with self.app.app_context():
            organization = db.session.get(Organization, self.organization_id)
            user = db.session.get(User, self.user_id)
            for k in range(n):
                moment = self.start + timedelta(hours=k)
                data = clean_activity({"subject": f"Item {k}", "time_zone": "UTC", "start": moment.isoformat(),
                                       "end": (moment + timedelta(minutes=30)).isoformat()},
                                      organization=organization, actor=user)
                create_activity(organization, data)
            CalendarSync.for_user(user).switch(True)
            db.session.commit()
        for k in range(n):
            matching = k < n // 2
            moment = self.start + timedelta(hours=k) if matching else self.start + timedelta(hours=k, minutes=40)
            length = timedelta(minutes=30) if matching else timedelta(minutes=15)
            body = self.emulator.insert(EMAIL, {
                "summary": f"Item {k}" if matching else f"Google item {k}",
                "start": {"dateTime": moment.isoformat(), "timeZone": "UTC"},
                "end": {"dateTime": (moment + length).isoformat(), "timeZone": "UTC"}})
            self.event_ids.append(body["id"])

    def cycle(self, label: str, *, profile: bool = False, top: int = 25, shapes: bool = False):
        with self.app.app_context():
            before, waited = self.counter.statements, self.counter.waited
            self.counter.shapes = collections.Counter() if shapes else None
            self.counter.times = collections.Counter()
            profiler = cProfile.Profile(time.thread_time) if profile else None  # CPU, not waits
            began, cpu = time.perf_counter(), time.thread_time()
            if profiler:
                profiler.enable()
            row = run_user_cycle(self.user_id, trigger="bench")
            if profiler:
                profiler.disable()
            elapsed, cpu = time.perf_counter() - began, time.thread_time() - cpu
            statements, waited = self.counter.statements - before, self.counter.waited - waited
            print(f"  {label:<34} {elapsed:7.2f} s wall {cpu:7.2f} s cpu {waited:6.2f} s db {statements:7d} statements "
                  f"{row.requests:5d} requests  {row.status} {row.summary()}", flush=True)
            if shapes:
                for shape, count in self.counter.shapes.most_common(20):
                    print(f"    {count:6d} {self.counter.times[shape]:6.2f} s  {shape}")
                print("    -- by time")
                for shape, took in self.counter.times.most_common(8):
                    print(f"    {self.counter.shapes[shape]:6d} {took:6.2f} s  {shape}")
            if profiler:
                for order, only in (("tottime", ""), ("cumulative", "portal/")):
                    out = io.StringIO()
                    pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(only, top)
                    print(f"    -- by {order} {only}")
                    print("\n".join("    " + line for line in out.getvalue().splitlines()[6:] if line.strip()),
                          flush=True)
            return {"wall": elapsed, "cpu": cpu, "db": waited, "statements": statements, "requests": row.requests}

    def change(self, count: int) -> None:
        """count/2 events changed in Google (not matched ones only), count/2 activities in the portal."""
        half = count // 2
        for event_id in self.event_ids[-half:]:
            self.emulator.patch(EMAIL, event_id, {"location": "Elsewhere"})
        with self.app.app_context():
            linked = select(SyncLink.activity_id).where(SyncLink.google_event_id.in_(self.event_ids[-half:]))
            for activity in db.session.scalars(select(Activity).where(Activity.id.not_in(linked))
                                               .order_by(Activity.id).limit(count - half)):
                activity.location = "Moved"
            db.session.commit()


def emulator_for(args):
    return EmulatorProcess() if args.emulator_process else EmulatorThread()


def run(args, folder: Path) -> None:
    sizes = [int(s) for s in args.sizes.split(",") if s]
    for n in sizes:
        print(f"N = {n} events + {n} activities ({n // 2} matching)", flush=True)
        with fresh_database(args.database, folder) as url, emulator_for(args) as emulator:
            world = World(emulator, url)
            world.fill(n)
            first = world.cycle("first sync", profile=args.profile, shapes=args.statements)
            echo = world.cycle("next cycle (own writes listed back)", shapes=args.statements)
            world.cycle("idle")
            items = n + n - n // 2  # the matched pairs are one item each
            print(f"  first sync per item ({items} items): {first['statements'] / items:.2f} statements, "
                  f"{first['cpu'] / items * 1000:.2f} ms cpu; per event: {first['statements'] / n:.2f} statements; "
                  f"echo: {echo['statements']} statements", flush=True)
            with world.app.app_context():
                db.engine.dispose()
    if args.changes:
        print(f"{args.changes} changes on a synced {args.base} + {args.base} calendar", flush=True)
        with fresh_database(args.database, folder) as url, emulator_for(args) as emulator:
            world = World(emulator, url)
            world.fill(args.base)
            world.cycle("first sync")
            world.cycle("next cycle (own writes listed back)")
            world.change(args.changes)
            world.cycle(f"{args.changes} changes", profile=args.profile, shapes=args.statements)
            world.cycle("idle")
            with world.app.app_context():
                db.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="500")
    parser.add_argument("--database", help="a PostgreSQL server URL; a fresh database is made there per run")
    parser.add_argument("--changes", type=int, default=0)
    parser.add_argument("--base", type=int, default=2000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--emulator-process", action="store_true",
                        help="run the emulator in a process of its own (seeding it then takes longer)")
    parser.add_argument("--statements", action="store_true", help="the most frequent statements of each cycle")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        run(args, Path(folder))


if __name__ == "__main__":
    main()
