"""What a scenario runs against: a fresh database, the emulator process, an organization connected to it,
users, and the portal's own processes (`flask --app portal worker`, `flask --app portal serve`).

Users are made in bulk (one INSERT per table), not one page visit at a time. A user "already first-synced"
is made the cheap way: one template user's first sync runs for real, its `calendar_syncs` row is copied to
the others, and each of them gets its own sync token from one list of its (empty) calendar. So whatever a
first sync records today or after a change, the copies record too.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
from sqlalchemy import create_engine, insert, select, text, update

from bench.emulator import RemoteEmulator
from bench.measure import sample_process

ROOT = Path(__file__).resolve().parent.parent
ENCRYPTION_KEY = "hYDDs2tKQ-6jSuX4rrNQNlQhX3DOXVkIOCMUDldOZFc="
SERVICE_ACCOUNT = "portal-sync@bench-project.iam.gserviceaccount.com"
CLIENT_ID = "104857600000000000888"
DOMAIN = "bench.example"
FAR_FUTURE = datetime(2999, 1, 1, tzinfo=UTC)


def fresh_database(base_url: str, workdir: Path) -> tuple[str, str | None]:
    """(URL of an empty database, its name to drop at the end): a new database on the PostgreSQL server
    at `base_url`, or an SQLite file in `workdir` for "sqlite"."""
    if base_url == "sqlite":
        return f"sqlite:///{workdir / 'portal.sqlite'}", None
    name = "portal_bench_" + uuid.uuid4().hex[:10]
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return re.sub(r"/[^/]*$", "/" + name, base_url), name


def drop_database(base_url: str, name: str | None) -> None:
    if name is None:
        return
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


class PortalProcess:
    """A `flask --app portal ...` process of the portal; for a worker, with the harness's counters."""

    def __init__(self, name: str, command: list[str], env: dict, workdir: Path, counts: Path | None = None):
        self.name = name
        self.counts_path = counts
        self.log_path = workdir / f"{name}.log"
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    @property
    def pid(self) -> int:
        return self.process.pid

    def counts(self) -> dict:
        """The worker's latest counts (statements, cpu, rss_mb, peak_rss_mb, at)."""
        for _ in range(40):
            try:
                return json.loads(self.counts_path.read_text())
            except (FileNotFoundError, ValueError):
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} wrote no counts; its log:\n{self.log()[-3000:]}")

    def sample(self):
        return sample_process(self.pid)

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class World:
    """A database, the emulator (its own process, `latency_ms` per round trip), one organization connected
    to it through a service account, and the portal's processes started on them."""

    def __init__(self, database: str, workdir: Path, *, latency_ms: float, config: dict | None = None):
        from portal import create_app

        self.base_url = database
        self.workdir = workdir
        self.latency_ms = latency_ms
        self.url, self.database_name = fresh_database(database, workdir)
        self.emulator = RemoteEmulator(latency_ms=0)  # the set-up runs at full speed; measure() adds latency
        self.config = {"SECRET_KEY": "bench", "ENCRYPTION_KEY": ENCRYPTION_KEY, "SQLALCHEMY_DATABASE_URI": self.url,
                       "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000", "SCHEDULER_ENABLED": False,
                       "GOOGLE_TOKEN_URI": self.emulator.token_uri,
                       "GOOGLE_API_ENDPOINT": self.emulator.api_endpoint,
                       "GOOGLE_BATCH_URI": self.emulator.batch_uri, **(config or {})}
        self.app = create_app(dict(self.config))
        self.processes: list[PortalProcess] = []
        self.organization_id: int | None = None
        self.admin_email = f"admin@{DOMAIN}"

    # -- set-up ----------------------------------------------------------------------------------------
    def setup(self) -> World:
        from flask_migrate import upgrade

        from portal.accounts import add_organization, add_user
        from portal.extensions import db
        from portal.integration import integration_for, save_account, set_enabled, upload_key
        from portal.sync.google import GOOGLE_SCOPES

        account = self.emulator.add_service_account(client_id=CLIENT_ID, email=SERVICE_ACCOUNT)
        self.emulator.delegate(CLIENT_ID, GOOGLE_SCOPES)
        self.emulator.add_user(self.admin_email)
        with self.app.app_context():
            logging.disable(logging.INFO)  # the migrations' progress lines
            try:
                upgrade()  # the migrations, as a deployment builds its schema
            finally:
                logging.disable(logging.NOTSET)
            organization = add_organization("Bench B.V.")
            admin = add_user(organization, self.admin_email, "Admin", "admin", "bench-password-1")
            db.session.commit()
            row = integration_for(organization)
            save_account(row, admin, SERVICE_ACCOUNT, CLIENT_ID)
            upload_key(row, admin, base64.b64decode(account["p12_base64"]), account["password"])
            assert set_enabled(row, admin, True, admin.email).ok, "the emulator refused the connection test"
            self.organization_id = organization.id
        return self

    def add_users(self, count: int, prefix: str, *, due_from: datetime | None = None,
                  spread_seconds: float = 0.0) -> dict[int, str]:
        """`count` logged-in users with sync on, not synced yet: {user id: e-mail}. Their first cycles fall
        due from `due_from` on, spread over `spread_seconds` (as users log in over time); without
        `due_from` they are not due until set_due()."""
        from portal.extensions import db
        from portal.models import User
        from portal.sync.models import CalendarSync

        now = datetime.now(UTC)
        emails = [f"{prefix}{n:05d}@{DOMAIN}" for n in range(count)]
        with self.app.app_context():
            db.session.execute(insert(User), [
                {"organization_id": self.organization_id, "email": email, "name": f"{prefix} {n}",
                 "password_hash": "-", "role": "user", "time_zone": "UTC", "active": True, "created_at": now}
                for n, email in enumerate(emails)])
            rows = db.session.execute(select(User.id, User.email).where(User.email.in_(emails))
                                      .order_by(User.id)).all()
            step = spread_seconds / max(1, len(rows))
            db.session.execute(insert(CalendarSync), [
                {"user_id": r.id, "organization_id": self.organization_id, "enabled": True, "enabled_at": now,
                 "full_sync_needed": True, "failures": 0, "last_seen_at": now,
                 "due_at": FAR_FUTURE if due_from is None else due_from + timedelta(seconds=n * step)}
                for n, r in enumerate(rows)])
            db.session.commit()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(self.emulator.add_user, emails))
        return {r.id: r.email for r in rows}

    def first_sync_empty(self, users: dict[int, str]) -> None:
        """Make `users` (empty calendars, not yet synced) first-synced: the first one for real, the others
        as copies of its record with a sync token of their own."""
        from portal.extensions import db
        from portal.sync.engine import run_user_cycle
        from portal.sync.models import CalendarSync

        template_id, *others = users
        with self.app.app_context():
            cycle = run_user_cycle(template_id, trigger="bench")
            assert cycle is not None and cycle.status == "ok", f"the template's first sync: {cycle and cycle.summary()}"
            template = db.session.get(CalendarSync, template_id)
            kept = {"user_id", "organization_id", "sync_token", "due_at", "last_seen_at"}
            copied = {c.key: getattr(template, c.key) for c in CalendarSync.__table__.columns if c.key not in kept}
            db.session.commit()
        tokens = self.sync_tokens([users[u] for u in others])
        with self.app.app_context():
            for chunk in range(0, len(others), 1000):
                part = others[chunk:chunk + 1000]
                db.session.execute(update(CalendarSync), [
                    {"user_id": u, "sync_token": tokens[users[u]], **copied} for u in part])
            db.session.commit()

    def sync_tokens(self, emails: list[str]) -> dict[str, str]:
        """Each calendar's sync token, from one list of it as its owner (empty calendars: one page)."""
        def token_of(email: str) -> tuple[str, str]:
            access = self.emulator.control("POST", "/tokens", {"user": email})["access_token"]
            answer = requests.get(f"{self.emulator.base_url}/calendar/v3/calendars/primary/events",
                                  params={"showDeleted": "true", "singleEvents": "false", "maxResults": 2500},
                                  headers={"Authorization": f"Bearer {access}"}, timeout=30)
            answer.raise_for_status()
            return email, answer.json()["nextSyncToken"]

        with ThreadPoolExecutor(8) as pool:
            return dict(pool.map(token_of, emails))

    def set_due(self, user_ids, *, start: datetime, spread_seconds: float) -> None:
        """Make the users due from `start` on, spread evenly over `spread_seconds`."""
        from portal.extensions import db
        from portal.sync.models import CalendarSync

        ids = list(user_ids)
        step = spread_seconds / max(1, len(ids))
        with self.app.app_context():
            for chunk in range(0, len(ids), 1000):
                db.session.execute(update(CalendarSync), [
                    {"user_id": u, "due_at": start + timedelta(seconds=(chunk + n) * step)}
                    for n, u in enumerate(ids[chunk:chunk + 1000])])
            db.session.commit()

    # -- the portal's processes ------------------------------------------------------------------------
    def environment(self, overrides: dict | None = None) -> dict:
        """The environment a portal process reads its config from (PORTAL_*), as a deployment sets it."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        for key, value in {**self.config, **(overrides or {})}.items():
            if value is None:
                continue
            env[f"PORTAL_{key}"] = value if isinstance(value, str) else json.dumps(value)
        env["PORTAL_SCHEDULER_ENABLED"] = "false"
        return env

    def start_worker(self, name: str, config: dict | None = None, *, profile: Path | None = None) -> PortalProcess:
        counts = self.workdir / f"{name}.counts.json"
        command = [sys.executable, "-m", "bench.worker", "--counts", str(counts)]
        if profile is not None:
            command += ["--profile", str(profile)]
        command += ["--", "--id", name]
        process = PortalProcess(name, command, self.environment(config), self.workdir, counts)
        self.processes.append(process)
        process.counts()  # it is up once it counts
        return process

    def start_web(self, port: int, config: dict | None = None) -> PortalProcess:
        command = [sys.executable, "-m", "flask", "--app", "portal", "serve", "--host", "127.0.0.1",
                   "--port", str(port)]
        process = PortalProcess("web", command, self.environment(config), self.workdir)
        self.processes.append(process)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                requests.get(f"http://127.0.0.1:{port}/login", timeout=2)
                return process
            except requests.ConnectionError:
                if not process.alive():
                    break
                time.sleep(0.2)
        raise RuntimeError(f"the portal did not start:\n{process.log()[-3000:]}")

    def stop_processes(self) -> None:
        for process in self.processes:
            process.stop()
        self.processes = []

    def close(self) -> None:
        from portal.extensions import db

        self.stop_processes()
        with self.app.app_context():
            db.session.remove()
            db.engine.dispose()
        self.emulator.stop()
        drop_database(self.base_url, self.database_name)
