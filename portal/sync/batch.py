"""Google writes in batch requests, with retries and backoff for what is worth retrying.

Each write is built against the calendar client of the user it acts as, so one batch can carry writes to
several calendars (google-api-python-client signs each inner request with its own credentials). A write
that Google rate-limits or fails with a 5xx is retried with exponential backoff and jitter, within a
bounded budget; whatever still fails is reported back and waits for the next cycle.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

from portal.sync.google import CalendarClient, GoogleError, TransientError


@dataclass
class Write:
    key: Hashable
    client: CalendarClient
    build: Callable[[Any], Any]  # service -> HttpRequest


@dataclass
class Backoff:
    attempts: int = 4
    base_seconds: float = 0.5
    cap_seconds: float = 8.0
    sleep: Callable[[float], None] = time.sleep

    def pause(self, attempt: int) -> None:
        delay = min(self.cap_seconds, self.base_seconds * (2**attempt))
        self.sleep(random.uniform(delay / 2, delay))  # jitter keeps many workers from retrying in step


def run_writes(writes: Iterable[Write], *, batch_size: int = 50, backoff: Backoff | None = None) -> dict:
    """Execute writes; returns {key: response dict | GoogleError}. Never raises for Google's answers."""
    backoff = backoff or Backoff()
    pending = list(writes)
    results: dict = {}
    for attempt in range(backoff.attempts):
        retry: list[Write] = []
        for start in range(0, len(pending), max(1, batch_size)):
            chunk = pending[start:start + batch_size]
            for write, outcome in zip(chunk, _run_chunk(chunk), strict=True):
                if isinstance(outcome, TransientError) and attempt + 1 < backoff.attempts:
                    retry.append(write)
                else:
                    results[write.key] = outcome
        if not retry:
            break
        backoff.pause(attempt)
        pending = retry
    return results


def _run_chunk(chunk: list[Write]) -> list:
    outcomes: list = [None] * len(chunk)
    built: list[tuple[int, Write, Any]] = []
    for index, write in enumerate(chunk):
        try:  # building needs the user's token: a user Google refuses fails alone, not the batch
            built.append((index, write, write.build(write.client.service)))
        except GoogleError as exc:
            outcomes[index] = exc
    if len(built) == 1:  # a batch of one costs the same request; send it plainly
        index, write, request = built[0]
        try:
            outcomes[index] = write.client.execute(request, item=True)
        except GoogleError as exc:
            outcomes[index] = exc
    elif built:
        def callback(request_id, response, exception):
            index = int(request_id)
            if exception is not None:
                outcomes[index] = chunk[index].client.classify_item_error(exception)
            else:
                outcomes[index] = response if response is not None else {}

        first = built[0][1].client
        batch = first.new_batch(callback)
        for index, _write, request in built:
            batch.add(request, request_id=str(index))
        try:
            first.execute_batch(batch)
        except GoogleError as exc:  # the batch as a whole failed (network, dropped answer): all share that fate
            for index, _write, _request in built:
                outcomes[index] = exc
    return [o if o is not None else TransientError("no_answer", "Google gave no answer for this write.",
                                                   "It is retried in the next cycle.") for o in outcomes]
