"""When to try again: backoff with full jitter, Retry-After, and what an answer means.

The classification is the contract's answer table (docs/ARCHITECTURE.md, "Contracts"):
every HTTP status or transport failure maps to one `Outcome`, and the forwarder and the
client act on the outcome alone.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum

import aiohttp


class Outcome(StrEnum):
    """What an answer (or its absence) means for the events it carried."""

    SUCCESS = "success"  # 2xx: ack by per-event result
    RETRYABLE = "retryable"  # 408, 5xx, timeout, refused, reset: back off, count for the breaker
    RATE_LIMITED = "rate_limited"  # 429: pause as told, without tripping the breaker
    AUTH = "auth"  # 401, 403: stop sending to that service, keep the events, reauth
    TOO_LARGE = "too_large"  # 413: split the batch and resend
    PERMANENT = "permanent"  # other 4xx: dead letters (bisect to find the bad event)


def classify_status(status: int) -> Outcome:
    """Map an HTTP status code to its outcome."""
    if 200 <= status < 300:
        return Outcome.SUCCESS
    if status == 429:
        return Outcome.RATE_LIMITED
    if status in (401, 403):
        return Outcome.AUTH
    if status == 413:
        return Outcome.TOO_LARGE
    if status == 408 or status >= 500:
        return Outcome.RETRYABLE
    if 400 <= status < 500:
        return Outcome.PERMANENT
    # 1xx/3xx are not answers a receiver of ours gives; try again later.
    return Outcome.RETRYABLE


def classify_exception(err: BaseException) -> Outcome:
    """Transport failures are all worth another try; anything else is a bug upstream."""
    if isinstance(err, (TimeoutError, asyncio.TimeoutError, aiohttp.ClientError, OSError)):
        return Outcome.RETRYABLE
    return Outcome.PERMANENT


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """Exponential backoff with full jitter: delay = random(0, min(cap, base * m**attempt))."""

    base: float = 0.5
    cap: float = 60.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        # Written so that NaN fails every comparison and is refused too.
        if not (0 < self.base <= self.cap and self.multiplier >= 1):
            raise ValueError("backoff needs 0 < base <= cap and multiplier >= 1")

    def ceiling(self, attempt: int) -> float:
        """The largest delay for the given 0-based attempt."""
        try:
            return min(self.cap, self.base * self.multiplier ** max(attempt, 0))
        except OverflowError:  # huge attempt counts: long past the cap anyway
            return self.cap

    def delay(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """A jittered delay for the 0-based attempt; ``rng`` returns a float in [0, 1)."""
        return rng() * self.ceiling(attempt)


def parse_retry_after(
    value: str | None,
    *,
    cap: float,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date).

    None when absent or unreadable; never negative; clamped to ``cap`` so a server
    cannot park us for a day.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():  # isdigit alone accepts "²" and other scripts
        return min(float(text), cap)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        when = when.replace(tzinfo=UTC)
    seconds = (when - now()).total_seconds()
    return min(max(seconds, 0.0), cap)
