"""Running the emulator standalone: the CLI, SQLite persistence, the demo UI, reset, the clock."""

import datetime as dt
import os
import socket
import subprocess
import sys
import time

import requests
from google.oauth2 import service_account
from googleapiclient.discovery import build

from portal.emulator import create_emulator_app
from portal.emulator.server import EmulatorServer

CALENDAR = "https://www.googleapis.com/auth/calendar"


def _setup(emu):
    emu.add_user("ann@demo.example", "Europe/Amsterdam")
    sa = emu.add_service_account()
    emu.delegate(sa["client_id"], [CALENDAR])
    return sa


def _service(emu, sa, subject):
    creds = service_account.Credentials.from_service_account_info(
        dict(sa["json_key"], token_uri=emu.token_uri), scopes=[CALENDAR]).with_subject(subject)
    return build("calendar", "v3", credentials=creds, static_discovery=True,
                 client_options={"api_endpoint": emu.base_url})


def test_state_survives_a_restart(tmp_path):
    path = str(tmp_path / "emulator.sqlite")
    with EmulatorServer(state_path=path) as emu:
        sa = _setup(emu)
        ev = _service(emu, sa, "ann@demo.example").events().insert(calendarId="primary", body={
            "summary": "kept", "start": {"dateTime": "2024-09-01T10:00:00Z"},
            "end": {"dateTime": "2024-09-01T11:00:00Z"}}).execute()
    with EmulatorServer(app=create_emulator_app(path)) as emu:
        got = _service(emu, sa, "ann@demo.example").events().get(calendarId="primary", eventId=ev["id"]).execute()
        assert got["summary"] == "kept" and got["etag"] == ev["etag"]


def test_command_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.Popen([sys.executable, "-m", "portal.emulator", "--host", "127.0.0.1", "--port", str(port),
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 20
        while True:
            try:
                resp = requests.post(f"http://127.0.0.1:{port}/emulator/v1/users", json={"email": "c@d.example"},
                                     timeout=2)
                break
            except requests.ConnectionError:
                assert time.time() < deadline, proc.stdout.read1().decode() if proc.poll() is not None else "timeout"
                time.sleep(0.1)
        assert resp.json()["email"] == "c@d.example"
        token = requests.post(f"http://127.0.0.1:{port}/token", data={"grant_type": "password"}, timeout=2)
        assert token.status_code == 400 and token.json()["error"] == "unsupported_grant_type"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_demo_ui(emulator):
    emulator.add_user("ui@demo.example", "Europe/Amsterdam")
    base = f"{emulator.base_url}/emulator/ui/ui@demo.example"
    page = requests.get(base, timeout=5)
    assert page.status_code == 200 and "Emulated Google Calendar" in page.text
    now = dt.datetime.fromisoformat(emulator.control("GET", "/clock")["now"].replace("Z", "+00:00"))
    day = (now + dt.timedelta(days=1)).strftime("%Y-%m-%d")
    created = requests.post(base + "/create", data={"summary": "Dentist", "date": day, "start": "14:00",
                                                    "end": "15:00"}, timeout=5)
    assert created.status_code == 200 and "Dentist" in created.text
    raw = emulator.control("GET", "/users/ui@demo.example/events")["items"]
    assert raw[0]["start"]["dateTime"].startswith(f"{day}T14:00:00+0")
    assert raw[0]["start"]["timeZone"] == "Europe/Amsterdam"
    event_id = raw[0]["id"]
    requests.post(f"{base}/update/{event_id}", data={"summary": "Dentist (moved)", "date": day, "start": "16:00",
                                                     "end": "17:00"}, timeout=5)
    assert "Dentist (moved)" in requests.get(base, timeout=5).text
    bad = requests.post(base + "/create", data={"summary": "x", "date": "soon", "start": "1", "end": "2"},
                        timeout=5)
    assert bad.status_code == 400
    requests.post(f"{base}/delete/{event_id}", timeout=5)
    assert emulator.control("GET", "/users/ui@demo.example/events")["items"][0]["status"] == "cancelled"


def test_clock_and_reset_endpoints():
    with EmulatorServer() as emu:
        before = emu.control("GET", "/clock")
        after = emu.advance_clock(86400)
        assert after["offset_seconds"] == before["offset_seconds"] + 86400
        emu.add_user("z@demo.example")
        emu.control("POST", "/reset")
        assert emu.control("GET", "/users")["users"] == []
        assert emu.control("GET", "/clock")["offset_seconds"] == 0


def test_googles_service_path_and_mount_prefix(emulator):
    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    from werkzeug.wrappers import Response

    # Google's own layout: api_endpoint ending in calendar/v3/.
    sa = _setup(emulator)
    creds = service_account.Credentials.from_service_account_info(
        dict(sa["json_key"], token_uri=emulator.token_uri), scopes=[CALENDAR]).with_subject("ann@demo.example")
    svc = build("calendar", "v3", credentials=creds, static_discovery=True,
                client_options={"api_endpoint": emulator.base_url + "/calendar/v3/"})
    assert svc.calendars().get(calendarId="primary").execute()["id"] == "ann@demo.example"

    # Mounted under a prefix inside another WSGI app, the key's token_uri carries the prefix.
    mounted = DispatcherMiddleware(Response("portal"), {"/google": create_emulator_app()})
    with EmulatorServer(app=mounted) as outer:
        requests.post(outer.base_url + "/google/emulator/v1/users", json={"email": "m@demo.example"}, timeout=5)
        key = requests.post(outer.base_url + "/google/emulator/v1/service-accounts", json={}, timeout=5).json()
        assert key["json_key"]["token_uri"] == outer.base_url + "/google/token"
        requests.post(outer.base_url + "/google/emulator/v1/delegations",
                      json={"client_id": key["client_id"], "scopes": [CALENDAR]}, timeout=5)
        creds = service_account.Credentials.from_service_account_info(
            key["json_key"], scopes=[CALENDAR]).with_subject("m@demo.example")
        svc = build("calendar", "v3", credentials=creds, static_discovery=True,
                    client_options={"api_endpoint": outer.base_url + "/google"})
        assert svc.events().list(calendarId="primary").execute()["items"] == []
