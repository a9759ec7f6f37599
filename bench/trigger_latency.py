"""How fast a change reaches the other side when triggers do the work, not the 30-second clock.

    .venv/bin/python bench/trigger_latency.py [--rounds 20]

One process, as `make run`: SQLite, the scheduler in the portal, the emulator as Google delivering push
notifications to the portal's webhook. Portal -> Google: an activity created through the API until the
event is in the owner's Google calendar (the after-commit push). Google -> portal: an event created by the
person in Google until the activity exists (notification -> user due -> cycle). The interval is set to an
hour, so nothing here is the poll's doing.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import select  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from portal import create_app  # noqa: E402
from portal.accounts import add_organization, add_user  # noqa: E402
from portal.emulator.server import EmulatorServer  # noqa: E402
from portal.extensions import db  # noqa: E402
from portal.models import Activity  # noqa: E402
from portal.signin_models import ApiToken


def wait(predicate, timeout=30.0):
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if predicate():
            return time.perf_counter() - start
        time.sleep(0.005)
    raise TimeoutError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)

    from portal.integration import integration_for, save_account, set_enabled, upload_key
    from portal.sync.google import GOOGLE_SCOPES
    from portal.sync.models import CalendarSync
    from portal.sync.runtime import scheduling
    from tests.conftest import GoogleUser

    workdir = Path(tempfile.mkdtemp())
    emulator = EmulatorServer(allow_http_webhooks=True).start()  # the portal listens on http:// here
    app = create_app({"SECRET_KEY": "bench", "ENCRYPTION_KEY": "hYDDs2tKQ-6jSuX4rrNQNlQhX3DOXVkIOCMUDldOZFc=",
                      "SQLALCHEMY_DATABASE_URI": f"sqlite:///{workdir / 'portal.sqlite'}",
                      "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000", "SYNC_INTERVAL_SECONDS": 3600,
                      # Two notifications a round, rounds back to back: past 30 a minute the flood guard
                      # would rightly hold them to the minute's end, which is not what is measured here.
                      "WEBHOOK_NOTIFICATIONS_PER_MINUTE": 100_000,
                      "GOOGLE_TOKEN_URI": emulator.token_uri, "GOOGLE_API_ENDPOINT": emulator.api_endpoint,
                      "GOOGLE_BATCH_URI": emulator.batch_uri})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    app.config["PUBLIC_BASE_URL"] = base
    email = "anna@bench.example"
    emulator.add_user(email, time_zone="UTC")
    account = emulator.add_service_account()
    emulator.delegate(account["client_id"], GOOGLE_SCOPES)
    with app.app_context():
        db.create_all()
        organization = add_organization("Bench")
        user = add_user(organization, email, "Anna", "admin", "password-123")
        db.session.commit()
        row = integration_for(organization)
        save_account(row, None, account["email"], account["client_id"])
        upload_key(row, None, base64.b64decode(account["p12_base64"]), account["password"])
        assert set_enabled(row, None, True, email).ok
        CalendarSync.for_user(user).switch(True)
        token_row, token = ApiToken.issue(user)
        db.session.add(token_row)
        db.session.commit()
    scheduling(app).start(worker_id="bench")

    import requests

    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {token}"
    http.get(f"{base}/api/v1/activities")  # logged in: the first cycle runs and opens the push channel
    wait(lambda: any(not c["stopped"] for c in emulator.control("GET", "/channels")["channels"]))

    def trusted():
        with app.app_context():
            found = db.session.scalar(select(CalendarSync.push_expires_at))
            db.session.commit()
            return found is not None

    wait(trusted)  # Google confirmed the channel: the user is polled every SYNC_SAFETY_POLL_SECONDS now
    person = GoogleUser(emulator, email)
    to_google, to_portal = [], []
    day = datetime.now(UTC).replace(microsecond=0, second=0, minute=0) + timedelta(days=2)
    try:
        for n in range(args.rounds):
            start = day + timedelta(hours=n)
            subject = f"Portal {n}"
            began = time.perf_counter()
            http.post(f"{base}/api/v1/activities", json={
                "subject": subject, "start": start.isoformat(), "end": (start + timedelta(minutes=30)).isoformat(),
                "time_zone": "UTC", "activity_type": "Meeting"}).raise_for_status()
            wait(lambda s=subject: any(e.get("summary") == s for e in
                                       emulator.control("GET", f"/users/{email}/events")["items"]))
            to_google.append(time.perf_counter() - began)

            subject = f"Google {n}"
            began = time.perf_counter()
            person.insert(summary=subject, start={"dateTime": (start + timedelta(minutes=30)).isoformat()},
                          end={"dateTime": (start + timedelta(minutes=60)).isoformat()})

            def arrived(s=subject):
                with app.app_context():
                    found = db.session.scalar(select(Activity.id).where(Activity.subject == s))
                    db.session.commit()
                    return found is not None

            wait(arrived)
            to_portal.append(time.perf_counter() - began)
            time.sleep(app.config["SYNC_DEBOUNCE_SECONDS"] / 100)
    finally:
        scheduling(app).stop()
        server.shutdown()
        emulator.stop()
    for name, values in (("portal -> Google (after-commit push)", to_google),
                         ("Google -> portal (push notification)", to_portal)):
        values.sort()
        print(f"{name}: median {statistics.median(values) * 1000:.0f} ms, "
              f"p95 {values[int(len(values) * 0.95) - 1] * 1000:.0f} ms, max {values[-1] * 1000:.0f} ms "
              f"({len(values)} rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
