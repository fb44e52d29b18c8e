"""Tests for the metrics: latency percentiles, rates and the forwarder's figures."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from custom_components.ha_ingestor.pipeline.metrics import (
    LatencyWindow,
    PipelineMetrics,
    RateMeter,
)
from tests.pipeline.fakes import FakeClock

PROPERTY = settings(max_examples=300, deadline=None, derandomize=True, database=None)


def nearest_rank(values: list[float], q: float) -> float:
    """Reference nearest-rank percentile, computed exactly on the decimal quantile."""
    ordered = sorted(values)
    rank = math.ceil(Fraction(str(q)) * len(ordered) / 100)
    return ordered[max(rank, 1) - 1]


# ---------------------------------------------------------------------------- LatencyWindow


def test_empty_window_has_no_percentiles() -> None:
    window = LatencyWindow(clock=FakeClock())
    assert window.percentiles(50, 95, 99) == [None, None, None]
    assert window.percentile(50) is None
    assert window.percentiles() == []
    assert len(window) == 0


def test_single_sample_is_every_percentile() -> None:
    window = LatencyWindow(clock=FakeClock())
    window.record(12.5)
    assert window.percentiles(0, 1, 50, 99, 100) == [12.5] * 5
    assert len(window) == 1


def test_nearest_rank_on_one_to_hundred() -> None:
    window = LatencyWindow(clock=FakeClock())
    values = [float(v) for v in range(100, 0, -1)]  # recorded out of order
    for value in values:
        window.record(value)
    assert window.percentiles(1, 7, 50, 95, 99, 100) == [1.0, 7.0, 50.0, 95.0, 99.0, 100.0]
    assert window.percentile(99.5) == 100.0
    assert window.percentile(0.5) == 1.0
    assert window.percentile(0) == 1.0  # the minimum


def test_nearest_rank_textbook_example() -> None:
    """The classic example: 15, 20, 35, 40, 50."""
    window = LatencyWindow(clock=FakeClock())
    window.record_many([50, 40, 35, 20, 15])
    assert window.percentiles(5, 30, 40, 50, 100) == [15, 20, 20, 35, 50]


def test_decimal_quantiles_do_not_slip_a_rank() -> None:
    """0.07 * 100 is 7.000000000000001 in floats; the 7th percentile of 1..100 is still 7."""
    window = LatencyWindow(clock=FakeClock())
    window.record_many(float(v) for v in range(1, 101))
    for q in range(1, 101):
        assert window.percentile(q) == float(q)
    window = LatencyWindow(clock=FakeClock())
    window.record_many(float(v) for v in range(1, 1001))
    assert window.percentile(99.9) == 999.0
    assert window.percentile(0.1) == 1.0
    assert window.percentile(12.3) == 123.0


@pytest.mark.parametrize("q", [-1, -0.001, 100.001, 101, 1000, math.nan])
def test_quantile_out_of_range_is_rejected(q: float) -> None:
    window = LatencyWindow(clock=FakeClock())
    with pytest.raises(ValueError, match="outside"):
        window.percentile(q)
    window.record(1.0)
    with pytest.raises(ValueError, match="outside"):
        window.percentiles(50, q)


# Sample counts where q * n / 100 is often a whole rank: where float noise would slip.
SAMPLE_COUNTS = st.sampled_from([10, 20, 25, 40, 50, 100, 200, 250]) | st.integers(1, 300)
LATENCIES = st.floats(min_value=0, max_value=1e6, allow_nan=False) | st.integers(0, 10**6)


@settings(PROPERTY, max_examples=200)
@given(
    values=SAMPLE_COUNTS.flatmap(lambda n: st.lists(LATENCIES, min_size=n, max_size=n)),
    quantiles=st.lists(
        st.integers(1, 100)
        | st.decimals(min_value="0.1", max_value="100", places=1).map(float)
        | st.decimals(min_value="0.01", max_value="100", places=2).map(float),
        min_size=1,
        max_size=12,
    ),
)
def test_percentiles_match_a_sorted_reference(values: list[float], quantiles: list[float]) -> None:
    window = LatencyWindow(clock=FakeClock())
    for value in values:
        window.record(value)
    got = window.percentiles(*quantiles)
    assert got == [nearest_rank(values, q) for q in quantiles]
    # A percentile is always one of the samples, and they never go down with q.
    assert all(value in values for value in got)
    ordered = sorted(quantiles)
    by_q = window.percentiles(*ordered)
    assert by_q == sorted(by_q)  # type: ignore[type-var]


def test_window_expiry_with_a_fake_clock() -> None:
    clock = FakeClock(0.0)
    window = LatencyWindow(window=300.0, clock=clock)
    window.record(1000.0)  # t=0
    clock.advance(100)
    window.record(10.0)  # t=100
    clock.advance(200)  # t=300: the first sample is exactly one window old, still in
    assert len(window) == 2
    assert window.percentile(100) == 1000.0
    clock.advance(0.001)  # t=300.001: the first one has left
    assert len(window) == 1
    assert window.percentiles(50, 100) == [10.0, 10.0]
    clock.advance(100)  # t=400.001: all gone
    assert len(window) == 0
    assert window.percentile(50) is None
    window.record(5.0)  # new samples still count
    assert window.percentile(50) == 5.0


def test_window_expiry_is_by_record_time() -> None:
    clock = FakeClock(0.0)
    window = LatencyWindow(window=10.0, clock=clock)
    for second in range(20):
        window.record(float(second))  # the value is the second it was recorded in
        clock.advance(1)
    # now t=20: samples from t=10..19 remain.
    assert len(window) == 10
    assert window.percentiles(1, 100) == [10.0, 19.0]


def test_record_many_shares_one_timestamp() -> None:
    clock = FakeClock(0.0)
    window = LatencyWindow(window=5.0, clock=clock)
    window.record_many([1.0, 2.0, 3.0])
    clock.advance(3)
    window.record_many(iter([4.0]))  # any iterable
    clock.advance(2.5)  # t=5.5: the first three expire together
    assert len(window) == 1
    assert window.percentile(50) == 4.0


def test_max_samples_bounds_the_window() -> None:
    window = LatencyWindow(max_samples=3, clock=FakeClock())
    for value in [100.0, 1.0, 2.0, 3.0, 4.0]:
        window.record(value)
    assert len(window) == 3
    assert window.percentiles(1, 100) == [2.0, 4.0]  # the oldest were dropped
    window.record_many([50.0, 60.0])
    assert len(window) == 3
    assert window.percentiles(1, 50, 100) == [4.0, 50.0, 60.0]


def test_default_bounds() -> None:
    window = LatencyWindow(clock=FakeClock())
    assert window.window == 300.0
    window.record_many(float(v) for v in range(10_500))
    assert len(window) == 10_000  # 500.0 .. 10499.0 remain
    assert window.percentile(0) == 500.0
    assert window.percentile(1) == 599.0  # rank 100
    assert window.percentile(100) == 10_499.0


# -------------------------------------------------------------------------------- RateMeter


def test_empty_rate_meter() -> None:
    meter = RateMeter(clock=FakeClock())
    assert meter.total() == 0
    assert meter.per_minute() == 0.0
    assert meter.per_second() == 0.0


def test_marks_in_one_second_share_a_bucket() -> None:
    clock = FakeClock(100.0)
    meter = RateMeter(window=60, clock=clock)
    meter.mark()
    clock.advance(0.5)
    meter.mark(4)
    clock.advance(0.49)  # t=100.99, still second 100
    meter.mark()
    assert meter.total() == 6
    assert len(meter._buckets) == 1
    clock.advance(0.01)  # t=101.0: a new second
    meter.mark(2)
    assert len(meter._buckets) == 2
    assert meter.total() == 8


def test_per_minute_and_per_second() -> None:
    clock = FakeClock(0.0)
    meter = RateMeter(window=60, clock=clock)
    for _ in range(60):
        meter.mark(2)  # 2 events a second for a minute
        clock.advance(1)
    clock.now = 59.5  # read within the minute
    assert meter.total() == 120
    assert meter.per_minute() == 120.0
    assert meter.per_second() == 2.0


def test_rates_scale_with_the_window() -> None:
    clock = FakeClock(0.0)
    meter = RateMeter(window=10, clock=clock)
    meter.mark(30)
    assert meter.total() == 30
    assert meter.per_second() == 3.0
    assert meter.per_minute() == 180.0


def test_buckets_expire_a_window_later() -> None:
    clock = FakeClock(0.9)  # second 0
    meter = RateMeter(window=60, clock=clock)
    meter.mark(5)
    clock.now = 30.2
    meter.mark(3)  # second 30
    clock.now = 59.999  # second 59: second 0 is still inside the last 60 seconds
    assert meter.total() == 8
    clock.now = 60.0  # second 60: second 0 has left
    assert meter.total() == 3
    assert meter.per_minute() == 3.0
    clock.now = 89.99
    assert meter.total() == 3
    clock.now = 90.0
    assert meter.total() == 0
    assert meter.per_second() == 0.0


def test_a_mark_after_a_gap_prunes_old_buckets() -> None:
    clock = FakeClock(0.0)
    meter = RateMeter(window=5, clock=clock)
    for _ in range(5):
        meter.mark()
        clock.advance(1)
    clock.advance(100)
    meter.mark(7)
    assert len(meter._buckets) == 1
    assert meter.total() == 7


def test_buckets_stay_bounded_under_steady_load() -> None:
    clock = FakeClock(0.0)
    meter = RateMeter(window=60, clock=clock)
    for _ in range(10_000):
        meter.mark()
        clock.advance(0.25)
    assert len(meter._buckets) <= 61
    clock.now = 2499.9  # within the second of the last mark (t=2499.75)
    assert meter.total() == 240  # 4 a second in seconds 2440..2499
    clock.now = 2500.0  # second 2440 leaves
    assert meter.total() == 236


@PROPERTY
@given(
    window=st.integers(1, 90),
    steps=st.lists(
        st.tuples(st.floats(min_value=0, max_value=40, allow_nan=False), st.integers(0, 50)),
        max_size=60,
    ),
    read_after=st.floats(min_value=0, max_value=120, allow_nan=False),
)
def test_rate_meter_matches_a_reference(
    window: int, steps: list[tuple[float, int]], read_after: float
) -> None:
    clock = FakeClock(1000.0)
    meter = RateMeter(window=window, clock=clock)
    marks: list[tuple[int, int]] = []
    for advance, count in steps:
        clock.advance(advance)
        meter.mark(count)
        marks.append((int(clock.now), count))
    clock.advance(read_after)
    now_second = int(clock.now)
    expected = sum(count for second, count in marks if second > now_second - window)
    assert meter.total() == expected
    assert meter.per_second() == expected / window
    assert meter.per_minute() == expected * 60.0 / window


# -------------------------------------------------------------------------- PipelineMetrics


def test_counters_and_gauges() -> None:
    metrics = PipelineMetrics(clock=FakeClock(), wall_clock=FakeClock(1.7e9))
    assert metrics.get("anything") == 0
    metrics.inc("batches_split")
    metrics.inc("batches_split")
    metrics.inc("dead_lettered", 5)
    metrics.inc("zero", 0)
    assert metrics.get("batches_split") == 2
    assert metrics.get("dead_lettered") == 5
    assert metrics.counters == {"batches_split": 2, "dead_lettered": 5, "zero": 0}
    metrics.set_gauge("queue_depth", 42)
    metrics.set_gauge("queue_depth", 17.5)
    assert metrics.gauges == {"queue_depth": 17.5}


def test_success_rate() -> None:
    metrics = PipelineMetrics(clock=FakeClock(), wall_clock=FakeClock())
    assert metrics.success_rate() is None  # before any attempt
    metrics.inc("batches_ok", 3)
    assert metrics.success_rate() == 100.0
    metrics.inc("batches_failed")
    assert metrics.success_rate() == 75.0
    metrics = PipelineMetrics(clock=FakeClock(), wall_clock=FakeClock())
    metrics.inc("batches_failed", 2)
    assert metrics.success_rate() == 0.0
    metrics.inc("batches_ok")
    assert metrics.success_rate() == 33.33  # rounded to two places


def test_success_rate_counts_batches_not_events_or_errors() -> None:
    """record_delivery / record_error do not touch the batch counters the rate reads."""
    metrics = PipelineMetrics(clock=FakeClock(), wall_clock=FakeClock())
    metrics.record_delivery(10, [1.0] * 10)
    metrics.record_error("boom")
    assert metrics.success_rate() is None


def test_record_delivery() -> None:
    clock = FakeClock(0.0)
    wall = FakeClock(1_700_000_000.0)
    metrics = PipelineMetrics(clock=clock, wall_clock=wall)
    assert metrics.last_delivery is None
    metrics.record_delivery(3, [5.0, 15.0, 10.0])
    assert metrics.get("delivered") == 3
    assert metrics.last_delivery == 1_700_000_000.0
    assert metrics.latency.percentiles(50, 100) == [10.0, 15.0]
    assert metrics.delivered_rate.total() == 3
    clock.advance(1)
    wall.advance(1)
    metrics.record_delivery(2, iter([20.0, 30.0]))
    assert metrics.get("delivered") == 5
    assert metrics.last_delivery == 1_700_000_001.0
    assert len(metrics.latency) == 5
    assert metrics.delivered_rate.per_minute() == 5.0
    metrics.record_delivery(0, [])
    assert metrics.get("delivered") == 5
    assert metrics.last_error is None


def test_record_error() -> None:
    wall = FakeClock(1_700_000_000.0)
    metrics = PipelineMetrics(clock=FakeClock(), wall_clock=wall)
    assert (metrics.last_error, metrics.last_error_at) == (None, None)
    metrics.record_error("storage: HTTP 503")
    wall.advance(5)
    metrics.record_error("storage: timeout")
    assert metrics.get("errors") == 2
    assert metrics.last_error == "storage: timeout"
    assert metrics.last_error_at == 1_700_000_005.0
    assert metrics.last_delivery is None
    assert metrics.get("delivered") == 0


def test_wall_clock_defaults_to_time_time() -> None:
    import time

    metrics = PipelineMetrics()
    before = time.time()
    metrics.record_delivery(1, [1.0])
    metrics.record_error("x")
    after = time.time()
    assert metrics.last_delivery is not None
    assert metrics.last_error_at is not None
    assert before <= metrics.last_delivery <= after
    assert before <= metrics.last_error_at <= after


def test_snapshot_before_anything() -> None:
    metrics = PipelineMetrics(clock=FakeClock(), wall_clock=FakeClock())
    assert metrics.snapshot() == {
        "counters": {},
        "gauges": {},
        "latency_ms": {"p50": None, "p95": None, "p99": None},
        "events_per_minute": 0.0,
        "success_rate": None,
        "last_delivery": None,
        "last_error": None,
        "last_error_at": None,
    }


def test_snapshot_after_traffic() -> None:
    clock = FakeClock(0.0)
    wall = FakeClock(1_700_000_000.0)
    metrics = PipelineMetrics(clock=clock, wall_clock=wall)
    metrics.record_delivery(100, [float(v) for v in range(1, 101)])
    metrics.inc("batches_ok", 4)
    metrics.inc("batches_failed")
    metrics.set_gauge("queue_depth", 7)
    wall.advance(2)
    metrics.record_error("enrichment: HTTP 500")
    snapshot = metrics.snapshot()
    assert snapshot == {
        "counters": {"delivered": 100, "batches_ok": 4, "batches_failed": 1, "errors": 1},
        "gauges": {"queue_depth": 7},
        "latency_ms": {"p50": 50.0, "p95": 95.0, "p99": 99.0},
        "events_per_minute": 100.0,
        "success_rate": 80.0,
        "last_delivery": 1_700_000_000.0,
        "last_error": "enrichment: HTTP 500",
        "last_error_at": 1_700_000_002.0,
    }
    # A copy: changing the snapshot leaves the metrics alone.
    snapshot["counters"]["delivered"] = 0
    snapshot["gauges"].clear()
    assert metrics.get("delivered") == 100
    assert metrics.gauges == {"queue_depth": 7}
    # Latency and rate age out with the monotonic clock; counters do not.
    clock.advance(301)
    later = metrics.snapshot()
    assert later["latency_ms"] == {"p50": None, "p95": None, "p99": None}
    assert later["events_per_minute"] == 0.0
    assert later["counters"]["delivered"] == 100
