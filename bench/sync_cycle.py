"""How long a sync cycle takes and how many Google requests it costs, against the emulator.

    .venv/bin/python bench/sync_cycle.py [--events 500] [--activities 500]

One user with EVENTS events in Google and ACTIVITIES activities in the portal: the first sync (which
matches, links and creates both ways), then an idle cycle, then a cycle after 20 edits on each side.
Targets (from the product's promise of ~30 s cycles): first sync of 500 + 500 items under 30 s, an idle
cycle in 1 request and under 0.5 s.
"""

from __future__ import annotations

import argparse
import base64
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from google.oauth2.credentials import Credentials  # noqa: E402
from googleapiclient.discovery import build  # noqa: E402

from portal import create_app  # noqa: E402
from portal.accounts import add_organization, add_user  # noqa: E402
from portal.activities import clean_activity, create_activity  # noqa: E402
from portal.emulator.server import EmulatorServer  # noqa: E402
from portal.extensions import db  # noqa: E402
from portal.integration import integration_for, save_account, set_enabled, upload_key  # noqa: E402
from portal.models import Activity  # noqa: E402
from portal.sync.engine import run_user_cycle  # noqa: E402
from portal.sync.google import GOOGLE_SCOPES  # noqa: E402
from portal.sync.models import CalendarSync  # noqa: E402

SA = "bench@bench-project.iam.gserviceaccount.com"
CLIENT_ID = "100000000000000000777"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--activities", type=int, default=500)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    with EmulatorServer() as emulator:
        app = create_app({"SECRET_KEY": "bench", "ENCRYPTION_KEY": "hYDDs2tKQ-6jSuX4rrNQNlQhX3DOXVkIOCMUDldOZFc=",
                          "SQLALCHEMY_DATABASE_URI": f"sqlite:///{folder / 'bench.sqlite'}",
                          "GOOGLE_TOKEN_URI": emulator.token_uri, "GOOGLE_API_ENDPOINT": emulator.api_endpoint,
                          "GOOGLE_BATCH_URI": emulator.batch_uri, "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000"})
        emulator.add_user("bench@bench.test", time_zone="Europe/Amsterdam")
        account = emulator.control("POST", "/service-accounts", {"email": SA, "client_id": CLIENT_ID})
        emulator.control("POST", "/delegations", {"client_id": CLIENT_ID, "scopes": list(GOOGLE_SCOPES)})
        start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=1)
        with app.app_context():
            db.create_all()
            organization = add_organization("Bench")
            user = add_user(organization, "bench@bench.test", "Bench", "admin", "bench-password")
            db.session.commit()
            row = integration_for(organization)
            save_account(row, user, SA, CLIENT_ID)
            upload_key(row, user, base64.b64decode(account["p12_base64"]), "notasecret")
            set_enabled(row, user, True, user.email)
            for n in range(args.activities):
                moment = start + timedelta(hours=n)
                data = clean_activity({"subject": f"Portal item {n}", "start": moment.isoformat(),
                                       "end": (moment + timedelta(minutes=30)).isoformat()},
                                      organization=organization, actor=user)
                create_activity(organization, data)
            CalendarSync.for_user(user).switch(True)
            db.session.commit()
            user_id = user.id

        token = emulator.control("POST", "/tokens", {"user": "bench@bench.test"})["access_token"]
        google = build("calendar", "v3", credentials=Credentials(token), static_discovery=True,
                       client_options={"api_endpoint": emulator.api_endpoint})
        ids = []
        for n in range(args.events):
            moment = start + timedelta(hours=n, minutes=30)
            ids.append(google.events().insert(calendarId="primary", body={
                "summary": f"Google item {n}", "start": {"dateTime": moment.isoformat(), "timeZone": "UTC"},
                "end": {"dateTime": (moment + timedelta(minutes=20)).isoformat(), "timeZone": "UTC"}}).execute()["id"])

        def cycle(label):
            with app.app_context():
                began = time.perf_counter()
                row = run_user_cycle(user_id, trigger="bench")
                elapsed = time.perf_counter() - began
                print(f"{label:<28} {elapsed:7.2f} s  {row.requests:5d} requests  {row.summary()}")
                return row

        cycle("first sync")
        cycle("idle")
        for event_id in ids[:20]:
            google.events().patch(calendarId="primary", eventId=event_id, body={"location": "Elsewhere"}).execute()
        with app.app_context():
            for activity in db.session.query(Activity).limit(20):
                activity.location = "Moved"
            db.session.commit()
        cycle("20 + 20 edits")
        cycle("idle")


if __name__ == "__main__":
    main()
