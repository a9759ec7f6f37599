"""The calendar form: turns what the browser posts into API-shaped values, and an activity back into fields.

The form speaks the user's language (an inclusive end date for all-day items, a recurrence picker);
validation itself happens once, in `portal.activities.clean_activity`.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from portal.models import ACTIVITY_TEXTS, Activity, User

WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
WEEKDAY_LABELS = dict(zip(WEEKDAYS, ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"), strict=True))
# The repeats the editor offers; a rule it cannot show ("CUSTOM") is kept as it is and said in words.
FREQUENCIES = (("", "Does not repeat"), ("DAILY", "Daily"), ("WEEKLY", "Weekly"), ("MONTHLY", "Monthly"),
               ("YEARLY", "Yearly"))
REPEATING = ("DAILY", "WEEKLY", "MONTHLY", "YEARLY")
PERIODS = {"DAILY": "day(s)", "WEEKLY": "week(s)", "MONTHLY": "month(s)", "YEARLY": "year(s)"}
ENDS = (("never", "never"), ("until", "on a date"), ("count", "after a number of times"))
# What a change made from one occurrence of a series applies to, as Google Calendar asks it (and, as there,
# "this" one is what an opened occurrence starts with).
SCOPES = (("this", "This occurrence"), ("following", "This and following occurrences"),
          ("all", "All occurrences"))
_SIMPLE_RULE = re.compile(r"^RRULE:(?P<parts>[A-Z0-9=;,+\-]+)$")


class PickerError(ValueError):
    pass


def form_to_values(form, *, kept_rule: list[str] | None = None) -> tuple[dict, dict[str, str]]:
    """API-shaped values from the posted form, plus errors only the form can detect (picker fields).

    `kept_rule` is the item's current rule: the form posts "CUSTOM" without lines for a rule it cannot show,
    meaning "leave it as it is"."""
    errors: dict[str, str] = {}
    all_day = form.get("all_day") in ("on", "true", "1")
    start_date, end_date = form.get("start_date", "").strip(), form.get("end_date", "").strip()
    if all_day:
        start = start_date
        end = _day_after(end_date or start_date, errors)
    else:
        start = _join(start_date, form.get("start_time", "").strip())
        end = _join(end_date or start_date, form.get("end_time", "").strip())
    values = {
        **{name: form.get(name, "") for name in ACTIVITY_TEXTS},
        "all_day": all_day,
        "time_zone": form.get("time_zone", "").strip(),
        "start": start,
        "end": end,
        "activity_type": _int_or_text(form.get("activity_type", "")),
        "participants": [email for email in form.getlist("participants") if email.strip()],
        "project_task": form.get("project_task", "") or None,
    }
    if form.get("owner"):
        values["owner"] = form.get("owner")
    try:
        values["recurrence"] = recurrence_from_picker(form, all_day=all_day, start_date=start_date,
                                                      time_zone=values["time_zone"], kept_rule=kept_rule)
    except PickerError as exc:
        errors["recurrence"] = str(exc)
    return values, errors


def _join(day: str, clock: str) -> str:
    if not day or not clock:
        return day  # clean_activity says a time is missing
    return f"{day}T{clock}"


def _day_after(day: str, errors: dict) -> str:
    try:
        return (date.fromisoformat(day) + timedelta(days=1)).isoformat()
    except (ValueError, OverflowError):
        return day  # clean_activity reports the bad date


def _int_or_text(value: str):
    return int(value) if value.isdigit() else value


def recurrence_from_picker(form, *, all_day: bool, start_date: str, time_zone: str,
                           kept_rule: list[str] | None = None) -> list[str]:
    """The rule the picker describes. Only the fields the chosen repeat uses are read: the others stay in the
    form (hidden) and may hold anything."""
    freq = form.get("freq", "")
    if freq == "":
        return []
    if freq == "CUSTOM":
        if "recurrence_lines" not in form and kept_rule:
            return list(kept_rule)
        return [line.strip() for line in form.get("recurrence_lines", "").splitlines() if line.strip()]
    if freq not in ("DAILY", "WEEKLY", "MONTHLY", "YEARLY"):
        raise PickerError("Choose how often it repeats.")
    parts = [f"FREQ={freq}"]
    interval = form.get("interval", "1").strip() or "1"
    if not interval.isdigit() or not 1 <= int(interval) <= 999:
        raise PickerError("Repeat every 1 to 999 periods.")
    if interval != "1":
        parts.append(f"INTERVAL={int(interval)}")
    if freq == "WEEKLY":
        days = [d for d in WEEKDAYS if d in form.getlist("byday")]
        if days:
            parts.append("BYDAY=" + ",".join(days))
    if freq == "MONTHLY" and form.get("monthly_mode") == "weekday":
        parts.append("BYDAY=" + nth_weekday(start_date))
    ends = form.get("ends", "never")
    if ends == "count":
        count = form.get("count", "").strip()
        if not count.isdigit() or not 1 <= int(count) <= 999:
            raise PickerError("End after 1 to 999 occurrences.")
        parts.append(f"COUNT={int(count)}")
    elif ends == "until":
        until = form.get("until", "").strip()
        try:
            until_day = date.fromisoformat(until)
        except ValueError:
            raise PickerError("Give the last day of the series as a date.") from None
        parts.append("UNTIL=" + until_value(until_day, all_day=all_day, time_zone=time_zone))
    return ["RRULE:" + ";".join(parts)]


def nth_weekday(start_date: str) -> str:
    """`2TU` for the second Tuesday, `-1FR` when the day is the last such weekday of its month."""
    try:
        day = date.fromisoformat(start_date)
    except ValueError:
        raise PickerError("Give a start date first.") from None
    weekday = WEEKDAYS[day.weekday()]
    if (day + timedelta(days=7)).month != day.month:
        return f"-1{weekday}"
    return f"{(day.day - 1) // 7 + 1}{weekday}"


def until_value(day: date, *, all_day: bool, time_zone: str) -> str:
    """UNTIL covering the whole chosen day in the item's zone (RFC 5545: UTC for timed series)."""
    if all_day:
        return day.strftime("%Y%m%d")
    try:
        zone = ZoneInfo(time_zone or "UTC")
    except (ValueError, KeyError):
        zone = ZoneInfo("UTC")
    end_of_day = datetime.combine(day, time(23, 59, 59), tzinfo=zone)
    return end_of_day.astimezone(ZoneInfo("UTC")).strftime("%Y%m%dT%H%M%SZ")


def picker_from_recurrence(lines: list[str]) -> dict:
    """Picker fields for existing lines; anything the picker cannot express is shown as custom lines."""
    fields = {"freq": "", "interval": "1", "byday": [], "monthly_mode": "day", "ends": "never",
              "count": "", "until": "", "recurrence_lines": "\n".join(lines)}
    if not lines:
        return fields
    match = _SIMPLE_RULE.match(lines[0]) if len(lines) == 1 else None
    if not match:
        fields["freq"] = "CUSTOM"
        return fields
    parts = dict(p.split("=", 1) for p in match["parts"].split(";") if "=" in p)
    freq = parts.pop("FREQ", "")
    simple = freq in ("DAILY", "WEEKLY", "MONTHLY", "YEARLY")
    fields["freq"] = freq
    fields["interval"] = parts.pop("INTERVAL", "1")
    parts.pop("WKST", None)
    if "BYDAY" in parts:
        byday = parts.pop("BYDAY").split(",")
        if freq == "WEEKLY" and all(d in WEEKDAYS for d in byday):
            fields["byday"] = byday
        elif freq == "MONTHLY" and len(byday) == 1 and re.fullmatch(r"-?[1-5](MO|TU|WE|TH|FR|SA|SU)", byday[0]):
            fields["monthly_mode"] = "weekday"
        else:
            simple = False
    if "COUNT" in parts:
        fields["ends"], fields["count"] = "count", parts.pop("COUNT")
    elif "UNTIL" in parts:
        until = parts.pop("UNTIL")
        try:
            fields["until"] = _until_day(until)
            fields["ends"] = "until"
        except ValueError:
            simple = False
    if parts or not simple:
        fields["freq"] = "CUSTOM"
    return fields


def _until_day(until: str) -> str:
    if len(until) == 8:
        return datetime.strptime(until, "%Y%m%d").date().isoformat()
    return datetime.strptime(until.rstrip("Z"), "%Y%m%dT%H%M%S").date().isoformat()


def activity_to_form(activity: Activity | None, viewer: User, *, start=None, end=None) -> dict:
    """Field values to show for an activity (or a new one starting at `start`), in the viewer's zone."""
    if activity is None:
        return {
            **dict.fromkeys(ACTIVITY_TEXTS, ""), "all_day": False,
            "time_zone": viewer.time_zone,
            "start_date": start.date().isoformat(), "start_time": start.strftime("%H:%M"),
            "end_date": end.date().isoformat(), "end_time": end.strftime("%H:%M"),
            "activity_type": "", "owner": viewer.email, "participants": [], "project_task": "",
            **picker_from_recurrence([]),
        }
    fields = {
        **{name: getattr(activity, name) for name in ACTIVITY_TEXTS},
        "all_day": activity.all_day, "time_zone": activity.time_zone,
        "activity_type": activity.activity_type_id, "owner": activity.owner.email,
        "participants": [u.email for u in activity.participants],
        "project_task": activity.project_task_id or "",
        **picker_from_recurrence(activity.recurrence),
    }
    if activity.all_day:
        last_day = activity.end_date - timedelta(days=1)
        fields.update(start_date=activity.start_date.isoformat(), start_time="",
                      end_date=last_day.isoformat(), end_time="")
    else:
        # Edited in the activity's own zone, so a series keeps its wall-clock time across DST.
        start_local, end_local = activity.local_start(), activity.local_end()
        fields.update(start_date=start_local.date().isoformat(), start_time=start_local.strftime("%H:%M"),
                      end_date=end_local.date().isoformat(), end_time=end_local.strftime("%H:%M"))
    return fields


def occurrence_to_form(activity: Activity, occurrence, viewer: User) -> dict:
    """Field values for one occurrence of a series: its own times and texts, the series' everything else."""
    fields = activity_to_form(activity, viewer)
    exception = activity.exception_for(occurrence.key)
    fields.update(subject=occurrence.subject, location=occurrence.location,
                  description=exception.description if exception is not None and exception.description is not None
                  else activity.description, occurrence=occurrence.key, scope="this")
    if activity.all_day:
        fields.update(start_date=occurrence.start.isoformat(),
                      end_date=(occurrence.end - timedelta(days=1)).isoformat())
    else:
        zone = activity.zone
        start_local, end_local = occurrence.start.astimezone(zone), occurrence.end.astimezone(zone)
        fields.update(start_date=start_local.date().isoformat(), start_time=start_local.strftime("%H:%M"),
                      end_date=end_local.date().isoformat(), end_time=end_local.strftime("%H:%M"))
    return fields


def form_with_posted(form) -> dict:
    """Redisplay what the user posted after a validation error."""
    fields = {key: form.get(key, "") for key in (
        *ACTIVITY_TEXTS, "time_zone", "start_date", "start_time", "end_date",
        "end_time", "activity_type", "owner", "project_task", "freq", "interval", "monthly_mode", "ends",
        "count", "until", "recurrence_lines", "occurrence", "scope")}
    fields["all_day"] = form.get("all_day") in ("on", "true", "1")
    fields["participants"] = form.getlist("participants")
    fields["byday"] = form.getlist("byday")
    if fields["activity_type"].isdigit():
        fields["activity_type"] = int(fields["activity_type"])
    if str(fields["project_task"]).isdigit():
        fields["project_task"] = int(fields["project_task"])
    return fields
