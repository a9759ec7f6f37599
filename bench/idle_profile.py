"""What an idle cycle costs: SQL statements, CPU and Google requests per cycle, and where the CPU goes.

    PYTHONPATH=. TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \
        .venv/bin/python bench/idle_profile.py [--users 50] [--cycles 200] [--profile]
    ... bench/idle_profile.py --throughput --users 1000 --interval 30 --latency-ms 100 --seconds 60

U users with sync on, first-synced against the Google emulator (empty calendars, nothing in the portal), on
a fresh PostgreSQL database (SQLite when TEST_DATABASE_URL is unset). The emulator runs in a separate
process, so the CPU counted here (time.process_time) is the portal's alone.

Default mode: K idle cycles through the scheduler's own path (`claim_due_users` + `run_claim`), one at a
time, counting SQL statements (the `before_cursor_execute` event), CPU and emulator requests per cycle, then
a cProfile top 20 of the same cycles (`--profile`).

`--throughput`: the scheduler (`SyncScheduler`) in this process for `--seconds`, with `--latency-ms` added
by the emulator to every Calendar request: cycles run, SQL and CPU per user-cycle, and how late users were
claimed (overdue: claimed_at - due_at), the worst and the 99th percentile, and the process's peak memory.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import io
import os
import pstats
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, event, insert, select, text, update  # noqa: E402

from portal import create_app  # noqa: E402
from portal.emulator.server import EmulatorServer  # noqa: E402
from portal.extensions import db  # noqa: E402

ENCRYPTION_KEY = "hYDDs2tKQ-6jSuX4rrNQNlQhX3DOXVkIOCMUDldOZFc="
SERVICE_ACCOUNT = "portal-sync@idle-project.iam.gserviceaccount.com"
CLIENT_ID = "104857600000000000888"
DOMAIN = "idle.example"


class RemoteEmulator(EmulatorServer):
    """The emulator in its own process (its CPU is not the portal's), driven through the control API."""

    def __init__(self):
        super().__init__()
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process = subprocess.Popen([sys.executable, "-m", "portal.emulator", "--port", str(self.port),
                                         "--quiet"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import requests

        for _ in range(200):
            try:
                requests.get(self.base_url, timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.05)

    def start(self):
        return self

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)


class Counter:
    def __init__(self):
        self.statements = 0
        self.texts: list[str] = []
        self.keep = False
        self.lock = threading.Lock()

    def __call__(self, conn, cursor, statement, parameters, context, executemany):
        with self.lock:
            self.statements += 1
            if self.keep:
                self.texts.append(statement.split(" WHERE ")[0][:110])


def build(args):
    from tests.conftest import _postgres_database

    base_url = os.environ.get("TEST_DATABASE_URL")
    database = None
    if base_url:
        url, database = _postgres_database(base_url)
    else:
        url = f"sqlite:///{tempfile.mkdtemp()}/idle.sqlite"
    emulator = RemoteEmulator()
    config = {"SECRET_KEY": "idle", "ENCRYPTION_KEY": ENCRYPTION_KEY, "SQLALCHEMY_DATABASE_URI": url,
              "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000", "GOOGLE_TOKEN_URI": emulator.token_uri,
              "GOOGLE_API_ENDPOINT": emulator.api_endpoint, "GOOGLE_BATCH_URI": emulator.batch_uri,
              "SYNC_INTERVAL_SECONDS": args.interval, "SCHEDULER_ENABLED": False}
    if args.threads:
        config["SYNC_WORKER_THREADS"] = args.threads
    if args.no_pre_ping:
        config["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_pre_ping": False}
    app = create_app(config)
    return app, emulator, base_url, database


def setup(app, emulator, users: int, interval: float) -> list[int]:
    from portal.accounts import add_organization
    from portal.integration import integration_for, save_account, set_enabled, upload_key
    from portal.models import User
    from portal.sync.google import GOOGLE_SCOPES
    from portal.sync.models import CalendarSync

    account = emulator.add_service_account(client_id=CLIENT_ID, email=SERVICE_ACCOUNT)
    emulator.delegate(CLIENT_ID, GOOGLE_SCOPES)
    with app.app_context():
        db.create_all()
        organization = add_organization("Idle B.V.")
        db.session.flush()
        now = datetime.now(UTC)
        db.session.execute(insert(User), [
            {"organization_id": organization.id, "email": f"u{n:05d}@{DOMAIN}", "name": f"User {n}",
             "password_hash": "-", "role": "admin" if n == 0 else "user", "time_zone": "UTC", "active": True,
             "created_at": now} for n in range(users)])
        rows = db.session.execute(select(User.id, User.email).order_by(User.id)).all()
        db.session.execute(insert(CalendarSync), [
            {"user_id": r.id, "organization_id": organization.id, "enabled": True, "enabled_at": now,
             "full_sync_needed": True, "failures": 0, "due_at": now, "last_seen_at": now + timedelta(days=1)}
            for r in rows])
        db.session.commit()
        for r in rows:
            emulator.add_user(r.email, time_zone="UTC")
        row = integration_for(organization)
        save_account(row, None, SERVICE_ACCOUNT, CLIENT_ID)
        upload_key(row, None, base64.b64decode(account["p12_base64"]), "notasecret")
        assert set_enabled(row, None, True, rows[0].email).ok
        db.session.commit()
        return [r.id for r in rows]


def first_sync_threaded(app, user_ids):
    """First syncs through the scheduler's thread pool (a large set-up takes minutes otherwise)."""
    from portal.sync.models import CalendarSync
    from portal.sync.scheduler import SyncScheduler

    sched = SyncScheduler(app, worker_id="setup").start()
    try:
        while True:
            time.sleep(1)
            with app.app_context():
                done = db.session.scalar(select(db.func.count()).where(CalendarSync.first_synced_at.is_not(None)))
                db.session.commit()
            if done >= len(user_ids):
                return
    finally:
        sched.shutdown(wait=True)


def first_sync(app, user_ids):
    from portal.sync.scheduler import claim_due_users, run_claim

    with app.app_context():
        done = 0
        while done < len(user_ids):
            claims = claim_due_users(50)
            if not claims:
                break
            for claim in claims:
                run_claim(claim, owner="bench")
                done += 1


def make_all_due(app, spread: float = 0.0):
    from portal.sync.models import CalendarSync

    with app.app_context():
        now = datetime.now(UTC)
        if not spread:
            db.session.execute(update(CalendarSync).values(due_at=now - timedelta(seconds=1)))
        else:
            ids = db.session.scalars(select(CalendarSync.user_id).order_by(CalendarSync.user_id)).all()
            step = spread / max(1, len(ids))
            for n, user_id in enumerate(ids):
                db.session.execute(update(CalendarSync).where(CalendarSync.user_id == user_id)
                                   .values(due_at=now + timedelta(seconds=n * step)))
        db.session.commit()


def idle_cycles(app, emulator, counter: Counter, cycles: int, batch: int = 50):
    """Run `cycles` idle cycles through claim + run_claim; returns (statements, cpu seconds, requests, rows)."""
    from portal.sync.models import SyncCycle
    from portal.sync.scheduler import claim_due_users, run_claim

    with app.app_context():
        before_rows = db.session.scalar(select(db.func.count(SyncCycle.id)))
        db.session.commit()
    emulator.control("DELETE", "/stats")
    ran = 0
    counter.statements = 0
    cpu0 = time.process_time()
    with app.app_context():
        while ran < cycles:
            claims = claim_due_users(min(batch, cycles - ran))
            if not claims:
                make_all_due(app)
                continue
            for claim in claims:
                run_claim(claim, owner="bench")
                ran += 1
    cpu = time.process_time() - cpu0
    statements = counter.statements
    requests = emulator.stats()["requests_total"]
    with app.app_context():
        after_rows = db.session.scalar(select(db.func.count(SyncCycle.id)))
        db.session.commit()
    return statements, cpu, requests, after_rows - before_rows


def one_cycle_statements(app, counter: Counter) -> list[str]:
    from portal.sync.scheduler import claim_due_users, run_claim

    make_all_due(app)
    with app.app_context():
        claims = claim_due_users(1)
        counter.texts, counter.keep = [], True
        run_claim(claims[0], owner="bench")
        counter.keep = False
    return counter.texts


def throughput(app, emulator, counter: Counter, args, user_ids):
    from portal.sync.models import CalendarSync
    from portal.sync.scheduler import SyncScheduler

    emulator.add_fault(kind="latency", latency_ms=args.latency_ms, path_regex=r"/calendars/")
    make_all_due(app, spread=args.interval)
    lateness: list[float] = []
    lock = threading.Lock()
    from portal.sync import scheduler as scheduler_module

    original = scheduler_module.run_claim

    def timed(claim, **kw):
        if claim.due_at is not None:
            with lock:
                lateness.append((claim.claimed_at - claim.due_at).total_seconds())
        return original(claim, **kw)

    scheduler_module.run_claim = timed
    emulator.control("DELETE", "/stats")
    counter.statements = 0
    counter.texts, counter.keep = [], args.statements
    cpu0, wall0 = time.process_time(), time.monotonic()
    sched = SyncScheduler(app, worker_id="bench").start()
    try:
        time.sleep(args.seconds)
    finally:
        sched.shutdown(wait=True)
        scheduler_module.run_claim = original
        counter.keep = False
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    cycles = len(lateness)
    with app.app_context():
        now = datetime.now(UTC)
        overdue_now = db.session.scalars(select(CalendarSync.due_at).where(CalendarSync.due_at < now)).all()
        db.session.commit()
    waiting = max(((now - d.replace(tzinfo=d.tzinfo or UTC)).total_seconds() for d in overdue_now), default=0.0)
    lateness.sort()
    p99 = lateness[int(0.99 * (len(lateness) - 1))] if lateness else 0.0
    requests = emulator.stats()["requests_total"]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"throughput: {len(user_ids)} users, interval {args.interval}s, {args.latency_ms} ms per Calendar request, "
          f"threads {sched.threads}, {wall:.0f}s")
    print(f"  cycles {cycles} ({cycles / wall:.1f}/s; needed {len(user_ids) / args.interval:.1f}/s), "
          f"requests {requests}")
    if cycles:
        print(f"  per user-cycle: {counter.statements / cycles:.2f} SQL statements, "
              f"{1000 * cpu / cycles:.2f} ms CPU; process CPU {100 * cpu / wall:.0f}% of a core")
    print(f"  overdue when claimed: worst {lateness[-1] if lateness else 0:.2f}s, p99 {p99:.2f}s; "
          f"still waiting at the end: {len(overdue_now)} (worst {waiting:.1f}s)")
    print(f"  peak memory (ru_maxrss): {peak_mb:.0f} MB")
    if args.statements and cycles:
        kinds: dict[str, int] = {}
        for text in counter.texts:
            kinds[text] = kinds.get(text, 0) + 1
        print("  statements per user-cycle, by kind:")
        for text, count in sorted(kinds.items(), key=lambda kv: -kv[1])[:15]:
            print(f"    {count / cycles:6.3f}  {text}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--statements", action="store_true", help="print one idle cycle's statements (with --throughput: the kinds, per user-cycle)")
    parser.add_argument("--throughput", action="store_true")
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument("--latency-ms", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--no-pre-ping", action="store_true", help="connections not pinged at checkout")
    args = parser.parse_args()

    app, emulator, base_url, database = build(args)
    counter = Counter()
    try:
        user_ids = setup(app, emulator, args.users, args.interval)
        with app.app_context():
            event.listen(db.engine, "before_cursor_execute", counter)
        began = time.monotonic()
        if args.throughput:
            first_sync_threaded(app, user_ids)
        else:
            first_sync(app, user_ids)
        print(f"{args.users} users first-synced in {time.monotonic() - began:.1f}s "
              f"({app.config['SQLALCHEMY_DATABASE_URI'].split(':')[0]})")
        if args.throughput:
            throughput(app, emulator, counter, args, user_ids)
            return
        make_all_due(app)
        idle_cycles(app, emulator, counter, min(20, args.cycles))  # warm-up: tokens, caches
        make_all_due(app)
        statements, cpu, requests, rows = idle_cycles(app, emulator, counter, args.cycles)
        n = args.cycles
        print(f"idle cycles: {n}; per cycle {statements / n:.2f} SQL statements, {1000 * cpu / n:.2f} ms CPU, "
              f"{requests / n:.2f} Google requests, {rows / n:.2f} cycle rows written")
        if args.statements:
            for line in one_cycle_statements(app, counter):
                print("   ", re.sub(r"\s+", " ", line))
        if args.profile:
            make_all_due(app)
            profiler = cProfile.Profile()
            profiler.enable()
            idle_cycles(app, emulator, counter, args.cycles)
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(20)
            print(out.getvalue())
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(30)
            print(out.getvalue())
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
        emulator.stop()
        if database:
            admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
            admin.dispose()


if __name__ == "__main__":
    main()
