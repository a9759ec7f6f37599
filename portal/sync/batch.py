"""Google writes in batch requests, with retries and backoff for what is worth retrying.

Each write is built against the calendar client of the user it acts as, so one batch can carry writes to
several calendars (google-api-python-client signs each inner request with its own credentials). A write
that Google rate-limits or fails with a 5xx is retried with exponential backoff and jitter, within a
bounded budget; whatever still fails is reported back and waits for the next cycle.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from portal.sync.google import CalendarClient, GoogleError, TransientError
from portal.sync.google_writes import EventWrite


@dataclass
class Backoff:
    attempts: int = 4
    base_seconds: float = 0.5
    cap_seconds: float = 8.0
    sleep: Callable[[float], None] = time.sleep

    def pause(self, attempt: int) -> None:
        delay = min(self.cap_seconds, self.base_seconds * (2**attempt))
        self.sleep(random.uniform(delay / 2, delay))  # jitter keeps many workers from retrying in step


def run_writes(writes: Iterable[EventWrite], client_for: Callable[[str], CalendarClient], *, batch_size: int = 50,
               backoff: Backoff | None = None) -> dict:
    """Execute writes, each as the user whose calendar it goes to (`client_for`); returns
    {key: response dict | GoogleError}. Never raises for Google's answers."""
    backoff = backoff or Backoff()
    pending = [(write, client_for(write.calendar)) for write in writes]
    results: dict = {}
    for attempt in range(backoff.attempts):
        retry: list[tuple[EventWrite, CalendarClient]] = []
        for start in range(0, len(pending), max(1, batch_size)):
            chunk = pending[start:start + batch_size]
            for (write, client), outcome in zip(chunk, _run_chunk(chunk), strict=True):
                if isinstance(outcome, TransientError) and attempt + 1 < backoff.attempts:
                    retry.append((write, client))
                else:
                    results[write.key] = outcome
        if not retry:
            break
        backoff.pause(attempt)
        pending = retry
    return results


def _run_chunk(chunk: list[tuple[EventWrite, CalendarClient]]) -> list:
    outcomes: list = [None] * len(chunk)
    built: list[tuple[int, CalendarClient, Any]] = []
    for index, (write, client) in enumerate(chunk):
        try:  # building needs the user's token: a user Google refuses fails alone, not the batch
            built.append((index, client, client.request_for(write)))
        except GoogleError as exc:
            outcomes[index] = exc
    if len(built) == 1:  # a batch of one costs the same request; send it plainly
        index, client, request = built[0]
        try:
            outcomes[index] = client.execute(request, item=True)
        except GoogleError as exc:
            outcomes[index] = exc
    elif built:
        def callback(request_id, response, exception):
            index = int(request_id)
            if exception is not None:
                outcomes[index] = chunk[index][1].classify_item_error(exception)
            else:
                outcomes[index] = response if response is not None else {}

        first = built[0][1]
        batch = first.new_batch(callback)
        for index, _client, request in built:
            batch.add(request, request_id=str(index))
        try:
            first.execute_batch(batch)
        except GoogleError as exc:  # the batch as a whole failed (network, dropped answer): all share that fate
            for index, _client, _request in built:
                outcomes[index] = exc
    return [o if o is not None else TransientError("no_answer", "Google gave no answer for this write.",
                                                   "It is retried in the next cycle.") for o in outcomes]
