"""The pure sync core: from (last agreed state, portal state, Google state) to actions.

Nothing here does I/O. Adapters turn activities and Google events into ``ItemState``,
call ``plan_cycle`` and carry out the actions it returns, in order. The design follows
vdirsyncer's sync: a small decision table, actions as plain values, and the last state
both sides agreed on (the link's ``base``) as the only memory between cycles.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Collection, Hashable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, time, timedelta
from typing import Any

from portal.sync.items import (
    SYNCED_FIELDS,
    ExceptionState,
    FrozenMap,
    GoogleId,
    GoogleItem,
    ItemState,
    Link,
    LinkId,
    PortalId,
    PortalItem,
    Side,
    zone_info,
)
from portal.sync.occurrences import has_occurrence_after, is_occurrence

__all__ = [
    "MERGE_GROUPS",
    "NOBODY_SYNCING",
    "NOT_SYNCED_TYPE",
    "SYNCED_FIELDS",
    "Action",
    "Conflict",
    "CreateActivity",
    "CreateEvent",
    "DeleteEvent",
    "ExceptionState",
    "FirstSyncPlan",
    "FrozenMap",
    "GoogleItem",
    "ItemError",
    "ItemState",
    "Link",
    "LinkItems",
    "PortalItem",
    "RecordConflict",
    "RecreateEvent",
    "Resolution",
    "RestoreActivity",
    "SetBase",
    "Side",
    "TrashActivity",
    "Unlink",
    "UpdateActivity",
    "UpdateEvent",
    "event_id_for",
    "in_first_sync_window",
    "match_first_sync",
    "match_key",
    "plan_cycle",
    "reconcile",
    "takes_part",
]


















_SYNCED = frozenset(SYNCED_FIELDS)

# The units the merge decides on. Start, end, all-day and zone move together: taking the
# start from one side and the end from the other would build a time slot nobody chose
# (or an invalid one), so "when" is a single choice. Conflicts are still recorded per field.
MERGE_GROUPS: tuple[tuple[str, ...], ...] = (
    ("subject",),
    ("description",),
    ("location",),
    ("all_day", "start", "end", "time_zone"),
    ("recurrence",),
    ("participants",),
    ("private",),
)


# ---------------------------------------------------------------- reconcile


@dataclass(frozen=True)
class Conflict:
    """A field both sides changed differently; ``lost_value`` is what the journal keeps."""

    field: str  # a SYNCED_FIELDS name, or "exceptions[<key>]"
    winner: Side
    kept_value: Any
    lost_value: Any


@dataclass(frozen=True, kw_only=True)
class Resolution:
    """What to do with one linked pair.

    ``write_*``: that side must end up equal to ``merged`` (an update, or with
    ``recreate_*`` a restore/re-insert of an item deleted there). ``unlink``: the pair
    is over (both gone, or one deleted and the delete carried to the other side).
    """

    merged: ItemState | None
    write_portal: bool = False
    write_google: bool = False
    delete_portal: bool = False
    delete_google: bool = False
    recreate_portal: bool = False
    recreate_google: bool = False
    unlink: bool = False
    conflicts: tuple[Conflict, ...] = ()


_MISSING = object()


def reconcile(
    base: ItemState | None,
    portal: ItemState | None,
    google: ItemState | None,
    *,
    portal_modified_at: datetime,
    google_modified_at: datetime,
    portal_touched: frozenset[str] = frozenset(),
) -> Resolution:
    """Three-way merge of one pair. ``None`` on a side means deleted there.

    "Changed" is decided by content against ``base``, never by timestamps, which is what
    suppresses echoes: a side the engine itself just wrote equals ``base``. Timestamps
    only break ties when both sides changed the same field. On an exact tie the portal
    wins, so the outcome never depends on the order of arguments.

    ``portal_touched``: fields the portal's outbox says were edited since the last cycle.
    A field edited and edited back to its agreed value is then still an edit (a conflict
    with a change in Google), not "no change". Google tells no such thing: a field changed
    there and changed back before the next cycle is no change at all.
    """
    later = Side.GOOGLE if google_modified_at > portal_modified_at else Side.PORTAL
    touched = portal_touched & _SYNCED
    if portal is None and google is None:
        return Resolution(merged=None, unlink=True)
    if portal is None or google is None:
        alive = portal if google is None else google
        assert alive is not None
        dead = Side.GOOGLE if google is None else Side.PORTAL
        if base is None:
            return _write(dead, alive)
        edited_back = dead is Side.GOOGLE and bool(touched)
        if (alive == base or _only_cancellations(base, alive)) and not edited_back:
            # Untouched on the living side (or only occurrences cancelled there, which goes the same way as
            # the delete): the delete wins and travels over.
            return _delete(Side.PORTAL if dead is Side.GOOGLE else Side.GOOGLE)
        # Edited on one side, deleted on the other: the edit is worth more than the delete.
        return _write(dead, alive, recreate=True)
    if base is not None:
        portal_changed, google_changed = portal != base or bool(touched), google != base
        if not portal_changed and not google_changed:
            return Resolution(merged=base)
        if not google_changed:
            return _write(Side.GOOGLE, portal)
        if not portal_changed:
            return _write(Side.PORTAL, google)
    merged, conflicts = _merge(base, portal, google, later, touched)
    return Resolution(
        merged=merged,
        write_portal=merged != portal,
        write_google=merged != google,
        conflicts=tuple(conflicts),
    )


def _only_cancellations(base: ItemState, alive: ItemState) -> bool:
    """Whether `alive` differs from `base` only by occurrences it cancelled."""
    if replace(alive, exceptions=base.exceptions) != base:
        return False
    changed = {k for k in set(base.exceptions) | set(alive.exceptions)
               if base.exceptions.get(k) != alive.exceptions.get(k)}
    return bool(changed) and all(k in alive.exceptions and alive.exceptions[k].cancelled for k in changed)


def _write(target: Side, state: ItemState, *, recreate: bool = False) -> Resolution:
    if target is Side.PORTAL:
        return Resolution(merged=state, write_portal=True, recreate_portal=recreate)
    return Resolution(merged=state, write_google=True, recreate_google=recreate)


def _delete(target: Side) -> Resolution:
    if target is Side.PORTAL:
        return Resolution(merged=None, delete_portal=True, unlink=True)
    return Resolution(merged=None, delete_google=True, unlink=True)


def _pick(base: Any, portal: Any, google: Any, later: Side, portal_touched: bool = False) -> tuple[Side | None, bool]:
    """Which side's value a unit takes, and whether that was a conflict.

    ``base`` is _MISSING when the pair was never synced: every difference is then a
    conflict, decided by the later modification.
    """
    if portal == google:
        return None, False
    if base is not _MISSING:
        if portal == base and not portal_touched:
            return Side.GOOGLE, False
        if google == base:
            return Side.PORTAL, False
    return later, True


def _merge(
    base: ItemState | None, portal: ItemState, google: ItemState, later: Side, touched: frozenset[str] = frozenset()
) -> tuple[ItemState, list[Conflict]]:
    values: dict[str, Any] = {}
    conflicts: list[Conflict] = []
    series_source: Side | None = None
    for group in MERGE_GROUPS:
        p_val = tuple(getattr(portal, f) for f in group)
        g_val = tuple(getattr(google, f) for f in group)
        b_val = tuple(getattr(base, f) for f in group) if base is not None else _MISSING
        source, conflicted = _pick(b_val, p_val, g_val, later, any(f in touched for f in group))
        chosen = g_val if source is Side.GOOGLE else p_val
        values.update(zip(group, chosen, strict=True))
        if source is not None and group[0] in ("all_day", "recurrence"):
            series_source = series_source or source
        if conflicted:
            for name, p, g in zip(group, p_val, g_val, strict=True):
                if p != g:
                    kept, lost = (g, p) if source is Side.GOOGLE else (p, g)
                    conflicts.append(Conflict(name, source, kept, lost))  # type: ignore[arg-type]

    exceptions: dict[str, ExceptionState] = {}
    base_exc = base.exceptions if base is not None else None
    for key in sorted(set(portal.exceptions) | set(google.exceptions) | set(base_exc or ())):
        p_exc, g_exc = portal.exceptions.get(key), google.exceptions.get(key)
        b_exc = base_exc.get(key) if base_exc is not None else _MISSING
        source, conflicted = _pick(b_exc, p_exc, g_exc, later)
        chosen = g_exc if source is Side.GOOGLE else p_exc
        if conflicted:
            kept, lost = (g_exc, p_exc) if source is Side.GOOGLE else (p_exc, g_exc)
            conflicts.append(Conflict(f"exceptions[{key}]", source, kept, lost))  # type: ignore[arg-type]
        if chosen is not None:
            exceptions[key] = chosen

    merged = replace(portal, **values, exceptions=FrozenMap(exceptions))
    return _drop_orphan_exceptions(merged, series_source or later, conflicts)


def _drop_orphan_exceptions(
    merged: ItemState, series_source: Side, conflicts: list[Conflict]
) -> tuple[ItemState, list[Conflict]]:
    """Drop exceptions of occurrences the merged series no longer has.

    A series moved on one side and an occurrence edited on the other can leave an
    exception keyed by a start that no longer exists. Google drops such exceptions when
    a series' time changes; we do the same, but journal each one as a lost value.
    """
    if not merged.recurrence or not merged.exceptions:
        return merged, conflicts
    kept: dict[str, ExceptionState] = {}
    for key, exc in merged.exceptions.items():
        if is_occurrence(merged.start, merged.end, merged.time_zone, merged.recurrence, key, all_day=merged.all_day):
            kept[key] = exc
        else:
            conflicts.append(Conflict(f"exceptions[{key}]", series_source, None, exc))
    if len(kept) == len(merged.exceptions):
        return merged, conflicts
    return replace(merged, exceptions=FrozenMap(kept)), conflicts


# ---------------------------------------------------------------- first sync


def match_key(state: ItemState) -> tuple[Any, ...]:
    """What the first sync matches on: subject, start and end, recurrence pattern.

    A timed item's start and end are compared as moments, not as wall-clock times: an event written in
    another zone (UTC from a phone, the calendar's own zone from the web) is the same meeting when it starts
    at the same moment. All-day items compare their dates. The pattern is the rule lines only: one side
    may list a cancelled occurrence as EXDATE where the other has a cancelled instance, and both are the
    same series.
    """
    pattern = tuple(line for line in state.recurrence if line.startswith(("RRULE:", "EXRULE:")))
    return (state.subject.strip().casefold(), state.start, state.end, state.all_day, pattern)


@dataclass
class FirstSyncPlan:
    links: list[tuple[PortalId, GoogleId]]
    portal_only: list[PortalId]
    google_only: list[GoogleId]


def _id_order(item_id: Hashable) -> tuple[int, Any]:
    # Ids may be ints (activities) or strings (events); order them without comparing across types.
    return (0, item_id) if isinstance(item_id, int) else (1, str(item_id))


def match_first_sync(
    portal_items: Mapping[PortalId, ItemState], google_items: Mapping[GoogleId, ItemState]
) -> FirstSyncPlan:
    """Pair items with equal match keys one-to-one, in id order on both sides."""
    waiting: dict[tuple[Any, ...], list[GoogleId]] = {}
    for gid in sorted(google_items, key=_id_order):
        waiting.setdefault(match_key(google_items[gid]), []).append(gid)
    links: list[tuple[PortalId, GoogleId]] = []
    portal_only: list[PortalId] = []
    for pid in sorted(portal_items, key=_id_order):
        queue = waiting.get(match_key(portal_items[pid]))
        if queue:
            links.append((pid, queue.pop(0)))
        else:
            portal_only.append(pid)
    google_only = sorted((gid for queue in waiting.values() for gid in queue), key=_id_order)
    return FirstSyncPlan(links, portal_only, google_only)


def in_first_sync_window(state: ItemState, now: datetime, days: int = 30) -> bool:
    """Whether the item (for a series: any occurrence) ends after ``now - days``."""
    threshold = now - timedelta(days=days)
    if state.recurrence:
        return has_occurrence_after(
            state.start, state.end, state.time_zone, state.recurrence, threshold, all_day=state.all_day
        )
    if state.all_day:
        end = datetime.combine(state.end, time(), tzinfo=zone_info(state.time_zone))  # type: ignore[arg-type]
    else:
        end = state.end  # type: ignore[assignment]
    return end > threshold


def event_id_for(activity_id: int, *, namespace: str, generation: int = 0) -> str:
    """The Google event id the portal chooses for an activity.

    Deterministic, so a retried insert meets 409 duplicate instead of creating a second
    event. Google never lets a deleted id be reused, hence ``generation`` for re-creates.
    Google allows base32hex (a-v, 0-9), 5 to 1024 characters.
    """
    if generation < 0:
        raise ValueError("generation cannot be negative")
    digest = hashlib.sha256(f"{namespace}\x1f{activity_id}\x1f{generation}".encode()).digest()
    return "psa" + base64.b32hexencode(digest).decode("ascii").rstrip("=").lower()


# ---------------------------------------------------------------- the cycle planner








@dataclass(frozen=True)
class CreateEvent:
    """Insert an event for an activity (id: event_id_for(portal_id)), then link with ``state`` as base."""

    portal_id: PortalId
    state: ItemState
    link_id: LinkId | None = None  # set when completing a half-open link


@dataclass(frozen=True)
class RecreateEvent:
    """Insert the event again after a Google-side delete lost to a portal edit (next id generation)."""

    link_id: LinkId
    portal_id: PortalId
    old_google_id: GoogleId
    state: ItemState


@dataclass(frozen=True)
class UpdateEvent:
    google_id: GoogleId
    state: ItemState
    etag: str | None = None  # If-Match; None when the event was not read this cycle


# Why an item leaves one side while it stays on the other (journaled with the action).
NOT_SYNCED_TYPE = "not_synced_type"  # its type does not go to Google, or it is a project task
NOBODY_SYNCING = "nobody_syncing"  # nobody with calendar sync on takes part in it any more


@dataclass(frozen=True)
class DeleteEvent:
    google_id: GoogleId
    etag: str | None = None
    reason: str = ""  # empty: deleted in the portal; else why the event leaves Google


@dataclass(frozen=True)
class CreateActivity:
    """Create an activity for an event, then link with ``state`` as base."""

    google_id: GoogleId
    state: ItemState
    link_id: LinkId | None = None


@dataclass(frozen=True)
class UpdateActivity:
    portal_id: PortalId
    state: ItemState


@dataclass(frozen=True)
class TrashActivity:
    portal_id: PortalId
    reason: str = ""  # empty: deleted in Google; else why the activity leaves the portal


@dataclass(frozen=True)
class RestoreActivity:
    """Bring a trashed activity back with ``state`` (an edit in Google beat the delete)."""

    portal_id: PortalId
    state: ItemState


@dataclass(frozen=True)
class LinkItems:
    """Record a first-sync match, with ``state`` as base."""

    portal_id: PortalId
    google_id: GoogleId
    state: ItemState


@dataclass(frozen=True)
class SetBase:
    """Store ``state`` as the link's agreed state; comes after the writes of its link."""

    link_id: LinkId
    state: ItemState


@dataclass(frozen=True)
class Unlink:
    link_id: LinkId


@dataclass(frozen=True)
class RecordConflict:
    link_id: LinkId | None
    portal_id: PortalId | None
    google_id: GoogleId | None
    conflict: Conflict


@dataclass(frozen=True)
class ItemError:
    """One item could not be planned; the rest of the cycle goes on."""

    side: Side
    item_id: Hashable
    message: str
    link_id: LinkId | None = None


Action = (
    CreateEvent | RecreateEvent | UpdateEvent | DeleteEvent | CreateActivity | UpdateActivity
    | TrashActivity | RestoreActivity | LinkItems | SetBase | Unlink | RecordConflict | ItemError
)  # fmt: skip

_NEVER = datetime.min.replace(tzinfo=UTC)


def plan_cycle(
    links: Mapping[LinkId, Link],
    portal: Mapping[PortalId, PortalItem],
    google: Mapping[GoogleId, GoogleItem],
    *,
    first_sync: bool = False,
    now: datetime | None = None,
    window_days: int = 30,
    syncing: Collection[str] | None = None,
    left_alone: list[tuple[Side, Hashable]] | None = None,
) -> list[Action]:
    """The actions of one cycle, in the order they must be applied.

    ``portal`` and ``google`` hold only what changed since the last cycle; a linked side
    missing from them is taken as unchanged (equal to the link's base). The actions of
    one link are contiguous and end with its SetBase/Unlink, so an executor that stops a
    link at a failed write leaves the base untouched and the next cycle retries.

    ``syncing``: the e-mails of the users with calendar sync on. An item syncs only while one
    of them takes part in it (owner, organizer or participant); None means everyone syncs.

    ``left_alone``: when given, a first sync adds the new items it leaves alone as older than its
    window, as (side, id), so a preview can say which ones without judging the window a second time.
    """
    syncing = frozenset(e.lower() for e in syncing) if syncing is not None else None
    if first_sync and now is None:
        raise ValueError("a first sync needs `now` for its 30-day window")
    actions: list[Action] = []
    linked_portal: dict[PortalId, LinkId] = {}
    linked_google: dict[GoogleId, LinkId] = {}
    for link_id, link in links.items():
        duplicate = _duplicate_link(link_id, link, linked_portal, linked_google)
        if duplicate is not None:
            actions.append(duplicate)
            continue
        try:
            actions.extend(_plan_link(link_id, link, portal, google, syncing))
        except Exception as err:  # noqa: BLE001 - one bad item must never stop the cycle
            actions.append(_error_for(link, link_id, err))

    new_portal = _unlinked(portal, linked_portal, eligible_only=True, syncing=syncing)
    new_google = _unlinked(google, linked_google, eligible_only=False)
    if first_sync:
        assert now is not None
        new_portal = _windowed(new_portal, now, window_days, Side.PORTAL, actions, left_alone)
        new_google = _windowed(new_google, now, window_days, Side.GOOGLE, actions, left_alone)
        plan = match_first_sync(new_portal, new_google)
        for pid, gid in plan.links:
            try:
                actions.extend(_link_match(pid, gid, portal[pid], google[gid]))
            except Exception as err:  # noqa: BLE001 - one bad item must never stop the cycle
                actions.append(ItemError(Side.PORTAL, pid, f"{type(err).__name__}: {err}"))
        actions.extend(CreateEvent(pid, new_portal[pid]) for pid in plan.portal_only)
        actions.extend(CreateActivity(gid, new_google[gid]) for gid in plan.google_only)
    else:
        actions.extend(CreateEvent(pid, state) for pid, state in new_portal.items())
        actions.extend(CreateActivity(gid, state) for gid, state in new_google.items())
    return actions


def _duplicate_link(
    link_id: LinkId, link: Link, linked_portal: dict[PortalId, LinkId], linked_google: dict[GoogleId, LinkId]
) -> ItemError | None:
    # A second link to the same item would mean a duplicate on the other side; refuse to act on it.
    error = None
    if link.portal_id is not None and link.portal_id in linked_portal:
        error = ItemError(Side.PORTAL, link.portal_id, "Activity is linked to more than one event", link_id)
    elif link.google_id is not None and link.google_id in linked_google:
        error = ItemError(Side.GOOGLE, link.google_id, "Event is linked to more than one activity", link_id)
    # Even a refused link marks its items as known, or they would be "new" and copied again.
    if link.portal_id is not None:
        linked_portal.setdefault(link.portal_id, link_id)
    if link.google_id is not None:
        linked_google.setdefault(link.google_id, link_id)
    return error


def _error_for(link: Link, link_id: LinkId, err: Exception) -> ItemError:
    side, item_id = (Side.PORTAL, link.portal_id) if link.portal_id is not None else (Side.GOOGLE, link.google_id)
    return ItemError(side, item_id, f"{type(err).__name__}: {err}", link_id)


def takes_part(state: ItemState | None, syncing: frozenset[str] | None) -> bool:
    """Whether someone with calendar sync on takes part in the item (as its owner, organizer or guest)."""
    return syncing is None or state is None or bool(state.participants & syncing)


def _plan_link(
    link_id: LinkId,
    link: Link,
    portal: Mapping[PortalId, PortalItem],
    google: Mapping[GoogleId, GoogleItem],
    syncing: frozenset[str] | None = None,
) -> list[Action]:
    if link.portal_id is None or link.google_id is None:
        return _plan_half_link(link_id, link, portal, google, syncing)
    p_item, g_item = portal.get(link.portal_id), google.get(link.google_id)
    if p_item is None and g_item is None:
        return []
    if link.base is None and (p_item is None or g_item is None):
        raise ValueError("a link without an agreed state needs both sides in the cycle")
    p_state = p_item.state if p_item is not None else link.base
    g_state = g_item.state if g_item is not None else link.base
    etag = g_item.etag if g_item is not None else None
    resolution = reconcile(
        link.base,
        p_state,
        g_state,
        portal_modified_at=p_item.modified_at if p_item is not None else _NEVER,
        google_modified_at=g_item.modified_at if g_item is not None else _NEVER,
        portal_touched=p_item.touched if p_item is not None else frozenset(),
    )
    merged = resolution.merged

    # Who syncs decides whether the pair is synced at all. Nobody with sync on took part at the last
    # agreement nor does now (a user switched sync off, say): nothing moves, the link waits until
    # someone takes part again, and then both sides merge against the old agreement.
    before = link.base if link.base is not None else (p_state if p_state is not None else g_state)
    synced_before = takes_part(before, syncing) if link.synced is None else link.synced
    synced_now = takes_part(merged, syncing) if merged is not None else synced_before
    if not synced_before and not synced_now:
        return [Unlink(link_id)] if p_state is None and g_state is None else []

    conflicts: list[Action] = [
        RecordConflict(link_id, link.portal_id, link.google_id, c) for c in resolution.conflicts
    ]
    type_leaving = (p_item is not None and p_state is not None and not p_item.eligible_after(merged)
                    and link.origin is not Side.GOOGLE)
    if type_leaving or (merged is not None and not synced_now):
        # The pair stops syncing: the side the item was born on takes in the other side's changes and
        # keeps it; the other side's copy, there only because of the sync, goes. A pair matched on a first
        # sync was born on both sides: each keeps its copy, with the last changes of the other.
        reason = NOT_SYNCED_TYPE if type_leaving else NOBODY_SYNCING
        if link.origin is None:
            return conflicts + _leave_both(link_id, link, resolution, etag)
        if link.origin is Side.GOOGLE and not type_leaving:
            return conflicts + _leave_portal(link_id, link, resolution, p_state, g_state, etag)
        return conflicts + _leave_google(link_id, link, resolution, p_state, g_state, etag, reason)

    actions = conflicts
    if resolution.delete_portal:
        actions.append(TrashActivity(link.portal_id))
    if resolution.delete_google:
        actions.append(DeleteEvent(link.google_id, etag))
    if merged is not None:
        if resolution.recreate_portal:
            actions.append(RestoreActivity(link.portal_id, merged))
        elif resolution.write_portal:
            actions.append(UpdateActivity(link.portal_id, merged))
        if resolution.recreate_google:
            actions.append(RecreateEvent(link_id, link.portal_id, link.google_id, merged))
        elif resolution.write_google:
            actions.append(UpdateEvent(link.google_id, merged, etag))
    if resolution.unlink:
        actions.append(Unlink(link_id))
    elif merged is not None and (merged != link.base or (p_item is not None and p_item.touched)):
        # Also when nothing moved although the portal edited (and edited back): the engine then knows the
        # portal's changes are agreed on.
        actions.append(SetBase(link_id, merged))
    return actions


def _leave_both(link_id: LinkId, link: Link, resolution: Resolution, etag: str | None) -> list[Action]:
    """A pair that existed on both sides before the sync linked it stops syncing: both copies stay, each
    with the other's last changes."""
    merged = resolution.merged
    actions: list[Action] = []
    if merged is not None:
        if resolution.recreate_portal:
            actions.append(RestoreActivity(link.portal_id, merged))
        elif resolution.write_portal:
            actions.append(UpdateActivity(link.portal_id, merged))
        if resolution.write_google and not resolution.recreate_google:
            actions.append(UpdateEvent(link.google_id, merged, etag))
    return [*actions, Unlink(link_id)]


def _leave_google(link_id: LinkId, link: Link, resolution: Resolution, p_state: ItemState | None,
                  g_state: ItemState | None, etag: str | None, reason: str) -> list[Action]:
    """The activity stays, with what Google changed meanwhile; the event leaves Google."""
    merged = resolution.merged
    if merged is None:
        return [Unlink(link_id)]  # gone from Google already
    actions: list[Action] = []
    if p_state is None:
        actions.append(RestoreActivity(link.portal_id, merged))  # changed in Google after the portal's delete
    elif merged != p_state:
        actions.append(UpdateActivity(link.portal_id, merged))
    if g_state is not None:
        actions.append(DeleteEvent(link.google_id, etag, reason))
    return [*actions, Unlink(link_id)]


def _leave_portal(link_id: LinkId, link: Link, resolution: Resolution, p_state: ItemState | None,
                  g_state: ItemState | None, etag: str | None) -> list[Action]:
    """The event stays, with what the portal changed meanwhile; the activity leaves the portal."""
    merged = resolution.merged
    assert merged is not None
    actions: list[Action] = []
    if g_state is None:
        actions.append(RecreateEvent(link_id, link.portal_id, link.google_id, merged))
    elif merged != g_state:
        actions.append(UpdateEvent(link.google_id, merged, etag))
    if p_state is not None:
        if merged != p_state:  # what goes to the trash is the item as it last was, should it be restored
            actions.append(UpdateActivity(link.portal_id, merged))
        actions.append(TrashActivity(link.portal_id, NOBODY_SYNCING))
    return [*actions, Unlink(link_id)]


def _plan_half_link(
    link_id: LinkId, link: Link, portal: Mapping[PortalId, PortalItem], google: Mapping[GoogleId, GoogleItem],
    syncing: frozenset[str] | None = None,
) -> list[Action]:
    if link.portal_id is not None:
        p_item = portal.get(link.portal_id)
        if p_item is None:
            return []
        if p_item.state is None or not p_item.eligible_for_google or not takes_part(p_item.state, syncing):
            return [Unlink(link_id)]
        return [CreateEvent(link.portal_id, p_item.state, link_id)]
    if link.google_id is not None:
        g_item = google.get(link.google_id)
        if g_item is None:
            return []
        if g_item.state is None:
            return [Unlink(link_id)]
        return [CreateActivity(link.google_id, g_item.state, link_id)]
    return [Unlink(link_id)]


def _unlinked(
    items: Mapping[Hashable, PortalItem] | Mapping[Hashable, GoogleItem],
    linked: Mapping[Hashable, LinkId],
    *,
    eligible_only: bool,
    syncing: frozenset[str] | None = None,
) -> dict[Hashable, ItemState]:
    out: dict[Hashable, ItemState] = {}
    for item_id in sorted(items, key=_id_order):
        item = items[item_id]
        if item_id in linked or item.state is None:
            continue  # deleted before it was ever synced: nothing exists on the other side
        if eligible_only and not (getattr(item, "eligible_for_google", True) and takes_part(item.state, syncing)):
            continue
        out[item_id] = item.state
    return out


def _windowed(
    states: dict[Hashable, ItemState], now: datetime, days: int, side: Side, actions: list[Action],
    left_alone: list[tuple[Side, Hashable]] | None = None,
) -> dict[Hashable, ItemState]:
    out: dict[Hashable, ItemState] = {}
    for item_id, state in states.items():
        try:
            if in_first_sync_window(state, now, days):
                out[item_id] = state
            elif left_alone is not None:
                left_alone.append((side, item_id))
        except Exception as err:  # noqa: BLE001 - one bad item must never stop the cycle
            actions.append(ItemError(side, item_id, f"{type(err).__name__}: {err}"))
    return out


def _link_match(pid: PortalId, gid: GoogleId, p_item: PortalItem, g_item: GoogleItem) -> list[Action]:
    """A first-sync match is linked, not copied; fields that differ merge by the later change."""
    assert p_item.state is not None and g_item.state is not None
    resolution = reconcile(
        None,
        p_item.state,
        g_item.state,
        portal_modified_at=p_item.modified_at,
        google_modified_at=g_item.modified_at,
    )
    merged = resolution.merged
    assert merged is not None
    actions: list[Action] = [RecordConflict(None, pid, gid, c) for c in resolution.conflicts]
    if resolution.write_portal:
        actions.append(UpdateActivity(pid, merged))
    if resolution.write_google:
        actions.append(UpdateEvent(gid, merged, g_item.etag))
    actions.append(LinkItems(pid, gid, merged))
    return actions
