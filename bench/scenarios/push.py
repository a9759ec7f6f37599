"""Push against polling: what an idle user costs in Google requests per hour, with and without watch
channels, and how fast an edit crosses over with them.

A deployment as it runs for many users: `flask --app portal serve` (the web hook; no scheduler in it) and one
`flask --app portal worker`, U idle users (200) already first-synced, plus one user who edits.

- Without a public address (PUBLIC_BASE_URL unset), the worker polls every user.
- With it, the worker opens a channel per user and the emulator notifies the portal's web hook. Once every
  user's channel is open, the harness watches for one safety-poll period (SYNC_SAFETY_POLL_SECONDS, 15 min
  by default; push_window overrides it).

Requests per user-hour: per idle user, every Google Calendar request of theirs (lists, watches, channel
stops) in the watch, over its length, averaged over the users. Polling, the watch runs until every user was
polled twice and counts between their first and last poll; with channels it lasts exactly one safety-poll
period, which holds one poll per user whatever the phase (a shorter one could miss the polls altogether).
Token requests are left out of both counts and one per user-hour is added: an access token lives an hour,
longer than the watch (the tokens scenario measures that figure on its own).

Latency, with channels open: a Google edit (an event the person adds in Google) until the activity is in the
portal's database; a portal edit (an activity made through the portal's API) until the event is in the
person's Google calendar (the after-commit push). push_probes (20) of each, one after the other.
"""

from __future__ import annotations

import socket
import statistics
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import requests
from sqlalchemy import select

from bench.report import Row
from bench.scenarios import Options, world

LIST_SUFFIX = "/events"
TOKEN_PATH = "/token"
TOKENS_PER_HOUR = 1.0  # an access token lives an hour: one per user-hour, shared by the workers
PROBE_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def hourly_cost(log, emails, begin: float, end: float) -> tuple[float, int]:
    """Mean Google requests per user-hour over `emails` from the request log of [begin, end], and how many
    users were polled fewer than twice (their figure is bounded by the window)."""
    polls, all_requests = defaultdict(list), defaultdict(list)
    for at, user, method, path in log:
        if user in emails and begin <= at <= end and path != TOKEN_PATH:
            all_requests[user].append(at)
            if method == "GET" and path.endswith(LIST_SUFFIX):
                polls[user].append(at)
    rates, bounded = [], 0
    for user in emails:
        times = sorted(polls[user])
        if len(times) >= 2:
            first, last = times[0], times[-1]
            count = sum(1 for at in all_requests[user] if first < at <= last)
            rates.append(count / (last - first) * 3600)
        else:
            bounded += 1
            rates.append(len(all_requests[user]) / (end - begin) * 3600)
    return statistics.mean(rates) + TOKENS_PER_HOUR, bounded


def window_cost(log, emails, begin: float, end: float) -> float:
    """Mean Google requests per user-hour over `emails`: all of theirs in [begin, end] over its length."""
    counts = defaultdict(int)
    for at, user, _method, path in log:
        if user in emails and begin <= at <= end and path != TOKEN_PATH:
            counts[user] += 1
    return statistics.mean(counts[user] for user in emails) / (end - begin) * 3600 + TOKENS_PER_HOUR


def watch(w, emails, *, window: float, interval: float) -> tuple[list, float, float]:
    """Watch the idle users from now until each was polled twice or `window` seconds passed."""
    mark = w.emulator.mark()
    begin = time.time()
    deadline = begin + window
    log = []
    while time.time() < deadline:
        time.sleep(min(5.0, interval))
        log += w.emulator.requests(mark + len(log))
        polled = defaultdict(int)
        for _, user, method, path in log:
            if user in emails and method == "GET" and path.endswith(LIST_SUFFIX):
                polled[user] += 1
        if all(polled[user] >= 2 for user in emails):
            break
    return log, begin, time.time()


def google_to_portal(w, email: str, subject: str, start: datetime) -> float:
    from portal.extensions import db
    from portal.models import Activity

    began = time.perf_counter()
    w.emulator.control("POST", f"/users/{email}/events", {
        "summary": subject, "start": {"dateTime": start.isoformat()},
        "end": {"dateTime": (start + timedelta(minutes=30)).isoformat()}})
    with w.app.app_context():
        while time.perf_counter() - began < PROBE_TIMEOUT:
            found = db.session.scalar(select(Activity.id).where(Activity.subject == subject))
            db.session.commit()
            if found is not None:
                return time.perf_counter() - began
            time.sleep(0.01)
    return PROBE_TIMEOUT


def portal_to_google(w, api, base: str, email: str, subject: str, start: datetime) -> float:
    began = time.perf_counter()
    api.post(f"{base}/api/v1/activities", json={
        "subject": subject, "start": start.isoformat(), "end": (start + timedelta(minutes=30)).isoformat(),
        "time_zone": "UTC"}, timeout=30).raise_for_status()
    while time.perf_counter() - began < PROBE_TIMEOUT:
        events = w.emulator.control("GET", f"/users/{email}/events")["items"]
        if any(e.get("summary") == subject for e in events):
            return time.perf_counter() - began
        time.sleep(0.01)
    return PROBE_TIMEOUT


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(fraction * len(ordered)) - 1))]


def api_session(w, user_id: int) -> requests.Session:
    from portal.extensions import db
    from portal.models import User
    from portal.signin_models import ApiToken

    with w.app.app_context():
        row, secret = ApiToken.issue(db.session.get(User, user_id), name="bench")
        db.session.add(row)
        db.session.commit()
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {secret}"
    return session


def run(options: Options, results) -> None:
    users = options.size("push_users", 200, 5)
    interval = float(options.size("interval", 30.0, 1.0))
    from portal import DEFAULTS

    safety = float(options.worker_config.get("SYNC_SAFETY_POLL_SECONDS", DEFAULTS["SYNC_SAFETY_POLL_SECONDS"]))
    window = float(options.size("push_window", safety, 3.0))
    probes = int(options.size("push_probes", 20, 1))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = {"SYNC_INTERVAL_SECONDS": interval, **options.worker_config}
    with world(options) as w:
        ids = w.add_users(users + 1, "push")
        w.first_sync_empty(ids)
        probe_id, probe_email = next(iter(ids.items()))
        emails = set(ids.values()) - {probe_email}
        w.emulator.set_latency(options.latency_ms)

        # Polling: no public address, no channels.
        worker = w.start_worker("poll-worker", config)
        mark = w.emulator.mark()
        w.set_due(ids, start=datetime.now(UTC), spread_seconds=interval)
        w.emulator.first_request_after(mark)
        time.sleep(interval)
        log, begin, end = watch(w, emails, window=max(4 * interval, 2.0), interval=interval)
        polling, _ = hourly_cost(log, emails, begin, end)
        worker.stop()

        # Push: the web hook reachable, a channel per user.
        pushed = {**config, "PUBLIC_BASE_URL": base}
        w.start_web(port, pushed)
        worker = w.start_worker("push-worker", pushed)
        w.set_due(ids, start=datetime.now(UTC), spread_seconds=interval)
        deadline = time.monotonic() + 3 * interval + 60
        while len(w.emulator.open_channels()) < len(ids) and time.monotonic() < deadline:
            time.sleep(0.2)
        channels = len(w.emulator.open_channels())
        api = api_session(w, probe_id)
        day = (datetime.now(UTC) + timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
        inbound, outbound = [], []
        watch_log, watch_begin = [], time.time()
        mark = w.emulator.mark()
        for n in range(probes):
            inbound.append(google_to_portal(w, probe_email, f"Google probe {n}", day + timedelta(hours=2 * n)))
            outbound.append(portal_to_google(w, api, base, probe_email, f"Portal probe {n}",
                                             day + timedelta(hours=2 * n + 1)))
        time.sleep(max(0.0, window - (time.time() - watch_begin)))
        watch_log = w.emulator.requests(mark)
        watch_end = time.time()
        pushing = window_cost(watch_log, emails, watch_begin, watch_end)
        w.stop_processes()
    results.details["push"] = {
        "users": users, "interval_s": interval, "channels_open": channels, "watched_s": round(watch_end - watch_begin),
        "requests_per_user_hour": {"polling": round(polling, 1),
                                                                            "push": round(pushing, 1)},
        "google_to_portal_s": [round(v, 3) for v in inbound], "portal_to_google_s": [round(v, 3) for v in outbound]}
    note = f"watched {watch_end - watch_begin:.0f} s, one safety-poll period; +1 token per user-hour"
    results.add(
        Row("push", "Google requests per idle user-hour, polling (no public address)", polling, ""),
        Row("push", f"Google requests per idle user-hour, push ({channels} channels open)", pushing, "", "<=", 6,
            note=note),
        Row("push", "Google edit -> portal, p95 (push)", percentile(inbound, 0.95), "s", "<", 2,
            note=f"median {statistics.median(inbound):.2f} s"),
        Row("push", "portal edit -> Google, p95 (after-commit push)", percentile(outbound, 0.95), "s",
            note=f"median {statistics.median(outbound):.2f} s"),
    )
