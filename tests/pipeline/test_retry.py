"""retry.py: the answer table, backoff with full jitter, and Retry-After."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import aiohttp
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from custom_components.ha_ingestor.pipeline.retry import (
    BackoffPolicy,
    Outcome,
    classify_exception,
    classify_status,
    parse_retry_after,
)

PROPERTY = settings(max_examples=300, deadline=None, derandomize=True, database=None)
NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)


# -- classification --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.SUCCESS),
        (201, Outcome.SUCCESS),
        (202, Outcome.SUCCESS),
        (207, Outcome.SUCCESS),
        (299, Outcome.SUCCESS),
        (408, Outcome.RETRYABLE),
        (429, Outcome.RATE_LIMITED),
        (500, Outcome.RETRYABLE),
        (502, Outcome.RETRYABLE),
        (503, Outcome.RETRYABLE),
        (504, Outcome.RETRYABLE),
        (599, Outcome.RETRYABLE),
        (401, Outcome.AUTH),
        (403, Outcome.AUTH),
        (413, Outcome.TOO_LARGE),
        (400, Outcome.PERMANENT),
        (404, Outcome.PERMANENT),
        (405, Outcome.PERMANENT),
        (409, Outcome.PERMANENT),
        (422, Outcome.PERMANENT),
        (499, Outcome.PERMANENT),
        # Not answers a receiver of ours gives: try again later.
        (100, Outcome.RETRYABLE),
        (301, Outcome.RETRYABLE),
        (304, Outcome.RETRYABLE),
    ],
)
def test_classify_status(status: int, outcome: Outcome) -> None:
    assert classify_status(status) is outcome


@given(st.integers(min_value=100, max_value=599))
@PROPERTY
def test_every_status_has_exactly_one_outcome(status: int) -> None:
    outcome = classify_status(status)
    assert isinstance(outcome, Outcome)
    assert (outcome is Outcome.SUCCESS) == (200 <= status < 300)


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (TimeoutError(), Outcome.RETRYABLE),
        (aiohttp.ConnectionTimeoutError(), Outcome.RETRYABLE),
        (aiohttp.ClientConnectionError("refused"), Outcome.RETRYABLE),
        (aiohttp.ServerTimeoutError(), Outcome.RETRYABLE),
        (aiohttp.ServerDisconnectedError(), Outcome.RETRYABLE),
        (aiohttp.ClientPayloadError("cut"), Outcome.RETRYABLE),
        (ConnectionRefusedError(), Outcome.RETRYABLE),
        (ConnectionResetError(), Outcome.RETRYABLE),
        (OSError("no route"), Outcome.RETRYABLE),
        (ValueError("bug"), Outcome.PERMANENT),
        (KeyError("bug"), Outcome.PERMANENT),
    ],
)
def test_classify_exception(error: BaseException, outcome: Outcome) -> None:
    assert classify_exception(error) is outcome


def test_outcome_values_are_stable() -> None:
    # Stored in dead letters and shown in diagnostics: renaming one is a breaking change.
    assert [o.value for o in Outcome] == [
        "success",
        "retryable",
        "rate_limited",
        "auth",
        "too_large",
        "permanent",
    ]


# -- backoff ---------------------------------------------------------------------------


def test_backoff_ceilings() -> None:
    policy = BackoffPolicy(base=0.5, cap=10.0, multiplier=2.0)
    assert [policy.ceiling(n) for n in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert policy.ceiling(-3) == 0.5  # negative attempts count as the first
    assert policy.ceiling(10**9) == 10.0  # no overflow for huge attempt numbers


def test_backoff_is_full_jitter() -> None:
    policy = BackoffPolicy(base=1.0, cap=60.0)
    assert policy.delay(3, lambda: 0.0) == 0.0
    assert policy.delay(3, lambda: 0.5) == 4.0
    assert policy.delay(3, lambda: 0.999) == pytest.approx(7.992)
    # Defaults are the documented ones.
    assert BackoffPolicy() == BackoffPolicy(base=0.5, cap=60.0, multiplier=2.0)


def test_backoff_multiplier_one_is_constant() -> None:
    policy = BackoffPolicy(base=3.0, cap=3.0, multiplier=1.0)
    assert {policy.ceiling(n) for n in range(50)} == {3.0}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base": 0.0},
        {"base": -1.0},
        {"base": 2.0, "cap": 1.0},
        {"multiplier": 0.5},
        {"multiplier": 0.0},
    ],
)
def test_backoff_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="backoff"):
        BackoffPolicy(**kwargs)


@given(
    base=st.floats(min_value=0.001, max_value=10.0),
    extra=st.floats(min_value=0.0, max_value=600.0),
    multiplier=st.floats(min_value=1.0, max_value=10.0),
    attempt=st.integers(min_value=-5, max_value=10**6),
    draw=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
@PROPERTY
def test_backoff_delay_within_bounds(
    base: float, extra: float, multiplier: float, attempt: int, draw: float
) -> None:
    policy = BackoffPolicy(base=base, cap=base + extra, multiplier=multiplier)
    ceiling = policy.ceiling(attempt)
    assert base <= ceiling <= policy.cap
    assert 0.0 <= policy.delay(attempt, lambda: draw) <= ceiling
    # Ceilings never shrink as attempts grow.
    assert policy.ceiling(attempt + 1) >= ceiling


def test_backoff_uses_the_random_module_by_default() -> None:
    policy = BackoffPolicy(base=1.0, cap=8.0)
    delays = {policy.delay(3) for _ in range(50)}
    assert all(0.0 <= d < 8.0 for d in delays)
    assert len(delays) > 1


def test_backoff_ceiling_never_overflows_for_large_multipliers() -> None:
    assert BackoffPolicy(base=1.0, cap=60.0, multiplier=1e6).ceiling(100) == 60.0


# -- Retry-After -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("0", 0.0),
        ("7", 7.0),
        (" 12 ", 12.0),
        ("007", 7.0),
        ("3600", 60.0),  # clamped to the cap
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past: no wait
        ("Sun, 01 Jun 2025 12:00:30 GMT", 30.0),
        ("Sun, 01 Jun 2025 12:00:30 +0000", 30.0),
        ("Sun, 01 Jun 2025 14:00:30 +0200", 30.0),
        ("Sun, 01 Jun 2025 12:00:30 -0000", 30.0),  # RFC 2822 "unknown zone": read as GMT
        ("Sun, 01 Jun 2025 13:00:00 GMT", 60.0),  # clamped
        # RFC 9110 asks recipients to read the two obsolete forms too.
        ("Sunday, 01-Jun-25 12:00:10 GMT", 10.0),
        ("Sun Jun  1 12:00:10 2025", 10.0),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, cap=60.0, now=lambda: NOW) == expected


def test_parse_retry_after_uses_the_real_clock_by_default() -> None:
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    seconds = parse_retry_after(soon, cap=60.0)
    assert seconds is not None
    assert 28.0 <= seconds <= 30.0


@given(value=st.integers(min_value=0, max_value=10**30), cap=st.floats(0.0, 3600.0))
@PROPERTY
def test_integer_retry_after_is_clamped(value: int, cap: float) -> None:
    assert parse_retry_after(str(value), cap=cap) == min(float(value), cap)


@given(
    when=st.datetimes(
        min_value=datetime(1970, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.just(UTC),
    ),
    now=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)),
    cap=st.floats(0.0, 86400.0),
)
@PROPERTY
def test_http_date_retry_after_is_within_zero_and_cap(
    when: datetime, now: datetime, cap: float
) -> None:
    aware_now = now.replace(tzinfo=UTC)
    seconds = parse_retry_after(format_datetime(when, usegmt=True), cap=cap, now=lambda: aware_now)
    assert seconds is not None
    assert 0.0 <= seconds <= cap
    expected = (when.replace(microsecond=0) - aware_now).total_seconds()
    assert seconds == min(max(expected, 0.0), cap)


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40))
@example("Mon, 99 Foo 2025 25:61:61 GMT")
@example("Mon, 01 Jan 99999 00:00:00 GMT")
@example("Mon, 01 Jan 0000 00:00:00 GMT")
@example("1e9")
@PROPERTY
def test_ascii_garbage_never_raises(value: str) -> None:
    seconds = parse_retry_after(value, cap=60.0, now=lambda: NOW)
    assert seconds is None or 0.0 <= seconds <= 60.0


@given(st.text(max_size=20))
@example("²")
@PROPERTY
def test_unicode_garbage_never_raises(value: str) -> None:
    seconds = parse_retry_after(value, cap=60.0, now=lambda: NOW)
    assert seconds is None or 0.0 <= seconds <= 60.0


@pytest.mark.parametrize(
    "bad", [{"base": float("nan")}, {"cap": float("nan")}, {"multiplier": 0.5}]
)
def test_backoff_refuses_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="backoff"):
        BackoffPolicy(**bad)
