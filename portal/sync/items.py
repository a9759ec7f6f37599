"""An item as the sync core sees it: the synced fields of one calendar item, as both sides map them, and
the inputs of a plan (the link between two sides, each side's changed item).

Plain values, no I/O; `portal.sync.core` plans on them and hands them on under its own name too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from portal.sync.recurrence import normalize_recurrence

K = TypeVar("K", bound=Hashable)


V = TypeVar("V")


PortalId = Hashable


GoogleId = Hashable


LinkId = Hashable


When = datetime | date


class Side(StrEnum):
    PORTAL = "portal"
    GOOGLE = "google"


class FrozenMap(Mapping[K, V]):
    """An immutable, hashable mapping, so states can be dataclass values."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[K, V] | Iterable[tuple[K, V]] = ()) -> None:
        self._data: dict[K, V] = dict(data)

    def __getitem__(self, key: K) -> V:
        return self._data[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"


def _utc(value: When | None, what: str) -> When | None:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{what} must be timezone-aware")
        return value.astimezone(UTC)
    return value


@lru_cache(maxsize=256)
def zone_info(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@dataclass(frozen=True, kw_only=True)
class ExceptionState:
    """One occurrence of a series that differs from the rule; ``None`` means "as the series"."""

    cancelled: bool = False
    subject: str | None = None
    description: str | None = None
    location: str | None = None
    start: When | None = None
    end: When | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _utc(self.start, "exception start"))
        object.__setattr__(self, "end", _utc(self.end, "exception end"))


@dataclass(frozen=True, kw_only=True)
class ItemState:
    """The synced fields of one calendar item, as both sides map them.

    Construction canonicalizes (UTC instants, normalized recurrence, lower-cased
    participants), so comparing two states compares content and nothing else.
    """

    subject: str
    description: str = ""
    location: str = ""
    all_day: bool = False
    start: When
    end: When
    time_zone: str = "UTC"
    recurrence: tuple[str, ...] = ()
    participants: frozenset[str] = frozenset()
    private: bool = False
    exceptions: Mapping[str, ExceptionState] = field(default_factory=FrozenMap)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.all_day:
            if isinstance(self.start, datetime) or isinstance(self.end, datetime):
                raise ValueError("an all-day item has dates, not datetimes")
        elif not (isinstance(self.start, datetime) and isinstance(self.end, datetime)):
            raise ValueError("a timed item has datetimes, not dates")
        set_(self, "start", _utc(self.start, "start"))
        set_(self, "end", _utc(self.end, "end"))
        if self.end < self.start:  # type: ignore[operator]
            raise ValueError("an item cannot end before it starts")
        zone_info(self.time_zone)  # fail at construction, not in the middle of a cycle
        tz_for_floating = None if self.all_day else self.time_zone
        set_(self, "recurrence", normalize_recurrence(self.recurrence, time_zone=tz_for_floating,
                                                      all_day=self.all_day))
        set_(self, "participants", frozenset(p.strip().lower() for p in self.participants))
        set_(self, "exceptions", FrozenMap((k.strip().upper(), v) for k, v in self.exceptions.items()))

    def content_hash(self) -> str:
        """sha256 of a canonical JSON of every field: equal states, equal hash."""
        payload = json.dumps(_canonical(self), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()


def _canonical(value: Any) -> Any:
    if isinstance(value, ItemState | ExceptionState):
        return {f.name: _canonical(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, datetime):
        return "dt:" + value.isoformat()
    if isinstance(value, date):
        return "d:" + value.isoformat()
    if isinstance(value, frozenset):
        return sorted(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    return value


SYNCED_FIELDS: tuple[str, ...] = (
    "subject", "description", "location", "all_day", "start", "end",
    "time_zone", "recurrence", "participants", "private",
)  # fmt: skip


@dataclass(frozen=True)
class Link:
    """A pair known to be the same item. ``base`` is the state both sides last agreed on.

    A half-open link (one id None) is a create that did not complete; its existing side
    is created on the other again. ``origin`` is the side the item was born on: an item
    that came from Google is never deleted from Google because of a portal-side rule;
    None for a pair a first sync matched (it was on both sides before).
    """

    portal_id: PortalId | None
    google_id: GoogleId | None
    base: ItemState | None
    origin: Side | None = Side.PORTAL
    # Whether someone with sync on took part when the pair last synced; None: as ``base`` says. (An engine
    # that settled a write of the portal's as the new base knows the pair was synced before that write.)
    synced: bool | None = None


@dataclass(frozen=True)
class PortalItem:
    """An activity that changed since the last cycle; ``state`` None means deleted. ``touched``: the
    fields its pending changes edited (even when edited back since)."""

    state: ItemState | None
    modified_at: datetime
    eligible_for_google: bool = True
    touched: frozenset[str] = frozenset()
    # Whether it would go to Google if a merge flipped its private flag: private is the portal's Personal
    # type, so taking Google's private in changes the activity's type (None: as now).
    eligible_if_private_flips: bool | None = None

    def eligible_after(self, merged: ItemState | None) -> bool:
        flipped = (merged is not None and self.state is not None and merged.private != self.state.private
                   and self.eligible_if_private_flips is not None)
        return self.eligible_if_private_flips if flipped else self.eligible_for_google


@dataclass(frozen=True)
class GoogleItem:
    """An event that changed since the last cycle; ``state`` None means cancelled."""

    state: ItemState | None
    modified_at: datetime
    etag: str | None = None


