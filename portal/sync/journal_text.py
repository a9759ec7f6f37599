"""What the sync did, in the words people use: one journal entry as a sentence ("Moved ‘Weekly sync’ to Thu
3 Dec 10:00 CET — changed in Google"), a cycle's counts ("2 from Google, 1 to Google"), and the fix the
error catalogue gives for an item's problem.

Pure: no database and no Flask, so every wording is tested on its own. `side` in the journal is the side
that was written (for a conflict: the side whose value lost), so side "google" means the change came from
the portal and side "portal" means it came from Google.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from functools import cache
from zoneinfo import ZoneInfo

# Field names as people say them.
FIELD_NAMES = {
    "subject": "title",
    "description": "description",
    "location": "place",
    "all_day": "all-day setting",
    "start": "start",
    "end": "end",
    "time_zone": "time zone",
    "recurrence": "repeat rule",
    "participants": "participants",
    "private": "privacy",
    "exceptions": "single occurrences",
}
SIDE_NAMES = {"google": "Google", "portal": "the portal"}
ANSWERS = {"accepted": "Yes", "declined": "No", "tentative": "Maybe", "needsAction": "No answer yet"}
GENERIC_FIX = ("The portal tries again in the next cycles. If the problem stays, open the item, correct what "
               "the message names and save it again, or ask your admin.")


def item_name(entry, activity) -> str:
    """The item's title in quotes: the activity's as it is now, else the one the entry recorded."""
    subject = getattr(activity, "subject", None)
    if not subject:
        for state in (entry.after, entry.before):
            if isinstance(state, dict) and state.get("subject"):
                subject = state["subject"]
                break
    return f"‘{subject}’" if subject else "an item"


def show_when(value, zone: ZoneInfo) -> str:
    """A journal's stored start ({"dateTime": ...} or {"date": ...}, or the value itself) as people read
    it: "Thu 3 Dec 10:00 CET" in `zone`, a day without a time for all-day items."""
    if isinstance(value, dict):
        value = value.get("dateTime") or value.get("date")
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value) if "T" in value else date.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        local = value.astimezone(zone) if value.tzinfo else value.replace(tzinfo=ZoneInfo("UTC")).astimezone(zone)
        return f"{local:%a} {local.day} {local:%b %H:%M} {local.tzname()}"
    if isinstance(value, date):
        return f"{value:%a} {value.day} {value:%b %Y}"
    return str(value) if value is not None else "nothing"


def show_value(field: str | None, value, zone: ZoneInfo) -> str:
    """One field's value in words (a conflict's losing or kept value)."""
    if field in ("start", "end"):
        return show_when(value, zone)
    if value is None or value == "" or value == []:
        return "empty"
    if isinstance(value, bool):
        return {"all_day": ("all day" if value else "with times"),
                "private": ("private" if value else "public")}.get(field, "yes" if value else "no")
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return "a different version"
    text = str(value)
    return f"“{text[:80]}…”" if len(text) > 80 else f"“{text}”"


def _changes(before, after) -> list[str]:
    """The fields an update changed, in the order people care about."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        return []
    return [name for name in FIELD_NAMES if name in after and before.get(name) != after.get(name)]


def _update_words(entry, activity, zone: ZoneInfo) -> str:
    name = item_name(entry, activity)
    changed = _changes(entry.before, entry.after)
    if not changed:
        return f"Updated {name}"
    if "subject" in changed and entry.before.get("subject"):
        name = f"‘{entry.before['subject']}’"  # the name it had when the change was made: "renamed it" follows
    parts = []
    if "start" in changed or "end" in changed:
        what = "start" if "start" in changed else "end"
        verb = "Moved" if what == "start" else "Changed the end of"
        parts.append(f"{verb} {name} to {show_when(entry.after.get(what), zone)}")
    if "subject" in changed:
        old = entry.before.get("subject")
        new = entry.after.get("subject")
        parts.append(f"Renamed ‘{old}’ to ‘{new}’" if not parts else f"renamed it ‘{new}’")
    others = [FIELD_NAMES[f] for f in changed if f not in ("start", "end", "subject")]
    if others:
        listed = " and ".join(others) if len(others) < 3 else ", ".join(others[:-1]) + " and " + others[-1]
        parts.append(f"Changed the {listed} of {name}" if not parts else f"changed its {listed}")
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def describe_entry(entry, activity, zone: ZoneInfo) -> str:
    """One journal entry as a sentence. `activity` is the entry's activity (None when it has none or it is
    gone); `zone` is the reader's."""
    kind, side = entry.kind, entry.side
    name = item_name(entry, activity)
    origin = " — changed in Google" if side == "portal" else " — sent to Google" if side == "google" else ""
    if kind == "created":
        if side == "portal":
            return f"Added {name} to the portal — created in Google"
        return f"Created {name} in Google"
    if kind == "updated":
        return _update_words(entry, activity, zone) + origin
    if kind == "deleted":
        if side == "portal":
            text = f"Moved {name} to the trash — deleted in Google"
        else:
            text = f"Deleted {name} in Google"
        return text + (f". {entry.message}" if entry.message else "")
    if kind == "restored":
        return f"Brought {name} back from the trash — changed in Google after it was deleted"
    if kind == "linked":
        return f"Linked {name} with the same event in Google (found on both sides, not copied)"
    if kind == "conflict":
        field = FIELD_NAMES.get(entry.field or "", entry.field or "a field")
        loser = SIDE_NAMES.get(side or "", "one side")
        return (f"Both sides changed the {field} of {name}: kept {show_value(entry.field, entry.after, zone)}, "
                f"the value from {loser} was {show_value(entry.field, entry.before, zone)}")
    if kind == "error":
        return f"Could not sync {name}: {entry.message or 'Google refused the change.'}"
    if kind == "answered":
        # The journal does not say whose answer it was in a field of its own: the words stay neutral.
        answer = ANSWERS.get(entry.after if isinstance(entry.after, str) else "")
        return f"Sent the answer “{answer}” to {name} to Google" if answer else f"Sent an answer to {name} to Google"
    if kind == "resync":
        return "Google asked for the whole calendar to be read again; it was"
    return entry.message or f"The sync noted a change to {name}"


# ------------------------------------------------------------------------------------------------ cycles

def plural(count: int, one: str, many: str | None = None) -> str:
    """"1 conflict", "2 conflicts", "1,200 idle cycles"."""
    return f"{count:,} {one if count == 1 else (many or one + 's')}"


def cycle_counts(from_google: int, to_google: int, conflicts: int = 0, errors: int = 0) -> str:
    """A cycle's counts in words: "2 from Google, 1 to Google, 1 conflict"; "nothing changed" when idle."""
    parts = []
    if from_google:
        parts.append(f"{from_google} from Google")
    if to_google:
        parts.append(f"{to_google} to Google")
    if conflicts:
        parts.append(plural(conflicts, "conflict"))
    if errors:
        parts.append(plural(errors, "item not synced", "items not synced"))
    return ", ".join(parts) or "nothing changed"


CYCLE_RESULTS = {"ok": "Done", "partial": "Done, some items not synced", "failed": "Failed",
                 "skipped": "Skipped", "running": "Running"}


def cycle_result(status: str | None) -> str:
    return CYCLE_RESULTS.get(status or "", "Done")


# ------------------------------------------------------------------------------------------------ fixes

@cache
def _catalogue() -> list[tuple[re.Pattern, str]]:
    from portal.sync.google import ERRORS  # the texts people already see for these errors

    patterns = []
    for _cls, cause, fix in ERRORS.values():
        pattern = ".+?".join(re.escape(part) for part in re.split(r"\{\w+\}", cause))
        patterns.append((re.compile(pattern + "$", re.S), fix))
    return patterns


def fix_for(message: str | None) -> str:
    """The catalogue's fix for an item's problem as the sync recorded it (its cause), else a general one."""
    if message:
        for pattern, fix in _catalogue():
            if pattern.search(message) and "{" not in fix:
                return fix
    return GENERIC_FIX
