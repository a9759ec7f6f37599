"""A tiny HTML page per user (/emulator/ui/<email>) to play the person editing their Google calendar
in a demo: the coming week's events with create/edit/delete forms. Plain forms, no JavaScript."""

from __future__ import annotations

import datetime as dt
import html
import re
import urllib.parse

from portal.emulator import calendar
from portal.emulator.errors import ApiError
from portal.emulator.result import Result
from portal.emulator.timeutil import UTC, parse_rfc3339, zone

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Emulated Google Calendar - {user}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 60em; }}
.banner {{ background: #fde68a; border: 1px solid #d97706; padding: .5em 1em; font-weight: bold; }}
table {{ border-collapse: collapse; width: 100%; margin: 1em 0; }}
td, th {{ border-bottom: 1px solid #ddd; padding: .3em; text-align: left; vertical-align: top; }}
input[type=text] {{ width: 14em; }} .error {{ color: #b91c1c; }}
</style></head><body>
<p class="banner">Emulated Google Calendar &mdash; not Google. Changes here behave like a person editing
their own Google calendar (the portal's sync picks them up).</p>
<h1>{user}</h1>
<p>Time zone: {tz}. Showing {first} to {last}.</p>
{error}
<table><tr><th>When</th><th>Event</th><th></th></tr>
{rows}
</table>
<h2>New event</h2>
<form method="post" action="{base}/create">
{fields}
<button type="submit">Create</button>
</form>
</body></html>
"""


def _fields(summary="", date="", start="09:00", end="10:00"):
    return (
        f'<input type="text" name="summary" value="{html.escape(summary)}" placeholder="Title" required> '
        f'<input type="date" name="date" value="{html.escape(date)}" required> '
        f'<input type="time" name="start" value="{html.escape(start)}" required> - '
        f'<input type="time" name="end" value="{html.escape(end)}" required> '
    )


def _body(form, tz):
    date = form.get("date", "")
    start, end = form.get("start", ""), form.get("end", "")
    if not re.match(r"^\d{4}-\d{2}-\d{2}$", date) or not re.match(r"^\d{2}:\d{2}$", start) \
            or not re.match(r"^\d{2}:\d{2}$", end):
        raise ApiError(400, "invalid", "Enter a date and start and end times.")
    return {
        "summary": form.get("summary", ""),
        "start": {"dateTime": f"{date}T{start}:00", "timeZone": tz},
        "end": {"dateTime": f"{date}T{end}:00", "timeZone": tz},
    }


def _redirect(location):
    return Result(303, raw=b"", headers=[("Location", location)], content_type="text/plain")


def handle(app, method, path, args, body, form):
    m = re.match(r"^/emulator/ui/([^/]+)(?:/(create|update|delete)(?:/([^/]+))?)?$", path)
    if not m or m.group(1).lower() not in app.state.users:
        return Result(404, raw=b"Unknown user", content_type="text/plain; charset=utf-8")
    email = m.group(1).lower()
    base = "/emulator/ui/" + urllib.parse.quote(email)
    user = app.state.users[email]
    error = ""
    if method == "POST":
        form = dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace")))
        action, event_id = m.group(2), m.group(3)
        try:
            if action == "create":
                app.as_user(email, lambda ctx: calendar.events_insert(ctx, "primary", {}, _body(form, user.time_zone)))
            elif action == "update" and event_id:
                app.as_user(email, lambda ctx: calendar.events_modify(
                    ctx, "primary", event_id, {}, _body(form, user.time_zone), {}, patch=True))
            elif action == "delete" and event_id:
                app.as_user(email, lambda ctx: calendar.events_delete(ctx, "primary", event_id, {}, {}))
            return _redirect(base)
        except ApiError as err:
            error = f'<p class="error">{html.escape(err.message)}</p>'
    tz = zone(user.time_zone) or UTC
    now = app.state.now().astimezone(tz)
    first = now.replace(hour=0, minute=0, second=0, microsecond=0)
    last = first + dt.timedelta(days=7)
    params = _Params({"singleEvents": "true", "orderBy": "startTime", "timeMin": first.isoformat(),
                      "timeMax": last.isoformat(), "maxResults": "2500"})
    _, listing = app.as_user(email, lambda ctx: calendar.events_list(ctx, "primary", params), write=False)
    rows = []
    for item in listing["items"]:
        start = item["start"]
        if "dateTime" in start:
            local = parse_rfc3339(start["dateTime"]).astimezone(tz)
            end_local = parse_rfc3339(item["end"]["dateTime"]).astimezone(tz)
            when = f"{local:%a %Y-%m-%d %H:%M}&ndash;{end_local:%H:%M}"
            fields = _fields(item.get("summary", ""), f"{local:%Y-%m-%d}", f"{local:%H:%M}", f"{end_local:%H:%M}")
        else:
            when = f"{start['date']} (all day)"
            fields = ""
        eid = urllib.parse.quote(item["id"])
        organizer = item.get("organizer", {}).get("email", "")
        note = "" if organizer == email else f"<br><small>organized by {html.escape(organizer)}</small>"
        edit = (f'<form method="post" action="{base}/update/{eid}">{fields}<button>Save</button></form>'
                if fields else "")
        rows.append(
            f"<tr><td>{when}</td><td>{html.escape(item.get('summary', '(no title)'))}{note}</td><td>{edit}"
            f'<form method="post" action="{base}/delete/{eid}"><button>Delete</button></form></td></tr>'
        )
    page = PAGE.format(user=html.escape(email), tz=html.escape(user.time_zone), first=f"{first:%Y-%m-%d}",
                       last=f"{last - dt.timedelta(days=1):%Y-%m-%d}", rows="\n".join(rows) or
                       "<tr><td colspan=3>No events this week.</td></tr>", base=base,
                       fields=_fields(date=f"{now:%Y-%m-%d}"), error=error)
    return Result(200 if not error else 400, raw=page.encode(), content_type="text/html; charset=utf-8")


class _Params(dict):
    def getlist(self, key):
        return [self[key]] if key in self else []
