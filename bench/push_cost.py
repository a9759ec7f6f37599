"""What an idle user costs in Google requests per hour, polled or with a trusted push channel, and how many
token requests several worker processes make per user with and without the shared token store.

    .venv/bin/python bench/push_cost.py [--users 5] [--database URL]

Counts, not timings: the emulator's request statistics. The hour is simulated: the scheduler's clock is a
fake one moved in 5-second steps, each step claiming the due users and running their cycles as a worker
does (`claim_due_users` + `run_claim`). The portal serves its webhook on a real socket, so the emulator
delivers the channels' "sync" messages as Google does. Access tokens live an hour in real time, so the
simulated hour needs one token per user, as a real one does.
"""

from __future__ import annotations

import argparse
import base64
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import event, update  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from portal import create_app  # noqa: E402
from portal.accounts import add_organization, add_user  # noqa: E402
from portal.emulator.server import EmulatorServer  # noqa: E402
from portal.extensions import db  # noqa: E402

KEY = "hYDDs2tKQ-6jSuX4rrNQNlQhX3DOXVkIOCMUDldOZFc="


class FakeClock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def build(emulator, database: str | None, users: int):
    from portal.integration import integration_for, save_account, set_enabled, upload_key
    from portal.sync.google import GOOGLE_SCOPES
    from portal.sync.models import CalendarSync

    workdir = Path(tempfile.mkdtemp())
    app = create_app({"SECRET_KEY": "bench", "ENCRYPTION_KEY": KEY,
                      "SQLALCHEMY_DATABASE_URI": database or f"sqlite:///{workdir / 'portal.sqlite'}",
                      "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
                      "GOOGLE_TOKEN_URI": emulator.token_uri, "GOOGLE_API_ENDPOINT": emulator.api_endpoint,
                      "GOOGLE_BATCH_URI": emulator.batch_uri})
    account = emulator.add_service_account()
    emulator.delegate(account["client_id"], GOOGLE_SCOPES)
    emails = [f"person{n}@bench.example" for n in range(users)]
    with app.app_context():
        db.drop_all()
        db.create_all()
        organization = add_organization("Bench")
        people = []
        for email in emails:
            emulator.add_user(email, time_zone="UTC")
            people.append(add_user(organization, email, email.split("@")[0], "member", "password-123"))
        db.session.commit()
        row = integration_for(organization)
        save_account(row, None, account["email"], account["client_id"])
        upload_key(row, None, base64.b64decode(account["p12_base64"]), account["password"])
        assert set_enabled(row, None, True, emails[0]).ok
        for person in people:
            CalendarSync.for_user(person).switch(True)
        db.session.commit()
    return app, emails


def simulated_hour(app, emulator, *, public: bool) -> tuple[Counter, int, int, int]:
    """Run one idle hour for every user; returns the Google requests by kind, the number of users, the
    cycles run and the SQL statements `run_claim` took for them (the claims not included)."""
    from portal.sync.models import CalendarSync
    from portal.sync.runtime import scheduling
    from portal.sync.scheduler import claim_due_users, run_claim

    server = None
    if public:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        app.config["PUBLIC_BASE_URL"] = f"http://127.0.0.1:{server.server_port}"
    else:
        app.config["PUBLIC_BASE_URL"] = None
    clock = FakeClock(datetime.now(UTC))
    scheduling(app).clock = clock
    with app.app_context():
        db.session.execute(update(CalendarSync).values(last_seen_at=clock(), due_at=clock()))
        users = db.session.query(CalendarSync).count()
        db.session.commit()

    tally = {"cycles": 0, "statements": 0, "counting": False, "measuring": False}

    def count(*args):
        if tally["counting"]:
            tally["statements"] += 1

    def step():
        with app.app_context():
            for claim in claim_due_users(1000, now=clock()):
                tally["counting"] = tally["measuring"]
                run_claim(claim, owner="bench", clock=clock)
                tally["counting"] = False
                tally["cycles"] += tally["measuring"]

    # The first cycles (the first sync, the channel's opening) are set-up, not the idle hour.
    step()
    for _ in range(12):
        time.sleep(0.05)
        clock.now += timedelta(seconds=5)
        step()
    time.sleep(0.5)  # the channels' "sync" messages
    before = Counter(emulator.stats()["requests"])
    start = clock.now
    with app.app_context():
        event.listen(db.engine, "before_cursor_execute", count)
    tally["measuring"] = True
    while clock.now < start + timedelta(hours=1):
        clock.now += timedelta(seconds=5)
        step()
    tally["measuring"] = False
    with app.app_context():
        event.remove(db.engine, "before_cursor_execute", count)
    counts = Counter(emulator.stats()["requests"])
    counts.subtract(before)
    if server is not None:
        server.shutdown()
    return +counts, users, tally["cycles"], tally["statements"]


def token_requests(app, emulator, emails, processes: int) -> tuple[int, int]:
    """Token requests for every user by `processes` token caches: (without a shared store, with it)."""
    from portal.integration import endpoints, integration_for, signing_key
    from portal.models import Organization
    from portal.sync.google import CalendarClient, TokenCache
    from portal.sync.token_store import STORE

    results = []
    with app.app_context():
        key = signing_key(integration_for(db.session.scalars(db.select(Organization)).first()))
        for store in (None, STORE):
            STORE.forget()
            db.session.commit()
            caches = [TokenCache(store=store) for _ in range(processes)]
            before = emulator.stats()["requests"].get("oauth2.token", 0)
            for cache in caches:
                for email in emails:
                    CalendarClient(key, email, endpoints(), tokens=cache).authorize()
            results.append(emulator.stats()["requests"].get("oauth2.token", 0) - before)
    return results[0], results[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=5)
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--database", help="a SQLAlchemy URL (default: a new SQLite file)")
    args = parser.parse_args(argv)

    with EmulatorServer(allow_http_webhooks=True) as emulator:
        app, emails = build(emulator, args.database, args.users)
        ttl = float(app.config["SYNC_CHANNEL_TTL_SECONDS"]) - float(app.config["SYNC_CHANNEL_RENEW_BEFORE_SECONDS"])
        renewals = 2 / (ttl / 3600)  # a watch and a stop per channel lifetime
        print(f"Idle Google requests per user-hour ({args.users} users, simulated hour, "
              f"SYNC_INTERVAL_SECONDS={app.config['SYNC_INTERVAL_SECONDS']}, "
              f"SYNC_SAFETY_POLL_SECONDS={app.config['SYNC_SAFETY_POLL_SECONDS']}):")
        for public in (False, True):
            counts, users, cycles, statements = simulated_hour(app, emulator, public=public)
            total = sum(counts.values()) / users
            kinds = ", ".join(f"{kind} {n / users:g}" for kind, n in sorted(counts.items()))
            # The set-up's tokens last the simulated hour; a real hour takes one per user (shown below).
            extra = f" + 1 token + channel renewals {renewals:.3f} = {total + 1 + renewals:.2f}" if public \
                else f" + 1 token = {total + 1:g}"
            print(f"  {'push channel trusted' if public else 'no public address (polling)'}: "
                  f"{total:g}{extra}  ({kinds}); {cycles / users:g} cycles per user-hour, "
                  f"{statements / max(cycles, 1):.1f} SQL statements per cycle (run_claim: the cycle, its end, the channel)")
        without, with_store = token_requests(app, emulator, emails, args.processes)
        print(f"Token requests for {args.users} users by {args.processes} processes: "
              f"{without} without the shared store ({without / args.users:g} per user), "
              f"{with_store} with it ({with_store / args.users:g} per user)")
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
