"""circuit_breaker.py: every transition, with a fake clock."""

from __future__ import annotations

import logging

import pytest

from custom_components.ha_ingestor.pipeline.circuit_breaker import (
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
)
from tests.pipeline.fakes import FakeClock

BREAKER_LOGGER = "custom_components.ha_ingestor.pipeline.circuit_breaker"
Transition = tuple[str, BreakerState, BreakerState]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(500.0)


def make(clock: FakeClock, **config: float) -> tuple[CircuitBreaker, list[Transition]]:
    defaults: dict[str, float] = {
        "failure_threshold": 3,
        "failure_rate": 0.5,
        "window": 60.0,
        "min_calls": 10,
        "open_interval": 5.0,
        "max_open_interval": 40.0,
        "interval_multiplier": 2.0,
    }
    defaults.update(config)
    breaker = CircuitBreaker("storage@test", BreakerConfig(**defaults), clock)  # type: ignore[arg-type]
    transitions: list[Transition] = []
    breaker.add_listener(lambda b, old, new: transitions.append((b.name, old, new)))
    return breaker, transitions


def trip(breaker: CircuitBreaker) -> None:
    while breaker.state is BreakerState.CLOSED:
        assert breaker.allow_request()
        breaker.record_failure()


def test_defaults() -> None:
    config = BreakerConfig()
    assert (config.failure_threshold, config.open_interval, config.max_open_interval) == (
        5,
        5.0,
        300.0,
    )
    breaker = CircuitBreaker("x")
    assert breaker.state is BreakerState.CLOSED
    assert breaker.config == config
    assert breaker.allow_request()
    assert breaker.retry_in() == 0.0


def test_closed_lets_everything_through(clock: FakeClock) -> None:
    breaker, transitions = make(clock)
    for _ in range(100):
        assert breaker.allow_request()
        breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert transitions == []


def test_consecutive_failures_open_it(clock: FakeClock) -> None:
    breaker, transitions = make(clock)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # a success in between starts the count over
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert transitions == [("storage@test", BreakerState.CLOSED, BreakerState.OPEN)]
    assert breaker.opened_count == 1


def test_open_fast_fails_until_the_interval_passes(clock: FakeClock) -> None:
    breaker, transitions = make(clock)
    trip(breaker)
    assert not breaker.allow_request()
    assert breaker.retry_in() == 5.0
    clock.advance(3.0)
    assert breaker.retry_in() == 2.0
    assert not breaker.allow_request()
    assert breaker.state is BreakerState.OPEN
    clock.advance(2.0)
    assert breaker.retry_in() == 0.0
    assert breaker.state is BreakerState.OPEN  # retry_in() changes nothing
    assert breaker.allow_request()
    assert breaker.state is BreakerState.HALF_OPEN
    assert transitions[-1] == ("storage@test", BreakerState.OPEN, BreakerState.HALF_OPEN)


def test_half_open_lets_exactly_one_probe_through(clock: FakeClock) -> None:
    breaker, _ = make(clock)
    trip(breaker)
    clock.advance(5.0)
    assert breaker.allow_request()
    assert not breaker.allow_request()
    assert not breaker.allow_request()
    assert breaker.retry_in() == 5.0  # a probe is out: at least its interval
    clock.advance(100.0)
    assert not breaker.allow_request()  # still one probe until it reports


def test_probe_success_closes_and_resets(clock: FakeClock) -> None:
    breaker, transitions = make(clock)
    trip(breaker)
    clock.advance(5.0)
    assert breaker.allow_request()
    breaker.record_failure()  # probe fails: interval 10
    clock.advance(10.0)
    assert breaker.allow_request()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.failure_ratio() == 0.0  # the window starts over
    assert breaker.snapshot()["open_interval"] == 5.0
    assert breaker.snapshot()["consecutive_failures"] == 0
    assert [new for _, _, new in transitions] == [
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.CLOSED,
    ]
    # The next outage starts again from the first interval.
    trip(breaker)
    assert breaker.retry_in() == 5.0


def test_failed_probes_grow_the_interval_up_to_the_cap(clock: FakeClock) -> None:
    breaker, _ = make(clock)
    trip(breaker)
    intervals = []
    for _ in range(6):
        clock.advance(breaker.retry_in())
        assert breaker.allow_request()
        breaker.record_failure()
        assert breaker.state is BreakerState.OPEN
        intervals.append(breaker.retry_in())
    assert intervals == [10.0, 20.0, 40.0, 40.0, 40.0, 40.0]
    assert breaker.opened_count == 7


def test_failure_rate_trips_once_the_window_has_min_calls(clock: FakeClock) -> None:
    breaker, _ = make(clock, failure_threshold=100, min_calls=10, failure_rate=0.5)
    for _ in range(9):
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED  # 100% failures, but only 9 calls
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN


def test_failure_rate_with_mixed_results(clock: FakeClock) -> None:
    breaker, _ = make(clock, failure_threshold=100, min_calls=10, failure_rate=0.5)
    for _ in range(6):
        breaker.record_success()
    for _ in range(5):
        breaker.record_failure()
    # 5 of 11 failed: under the rate.
    assert breaker.state is BreakerState.CLOSED
    assert breaker.failure_ratio() == pytest.approx(5 / 11)
    breaker.record_failure()  # 6 of 12
    assert breaker.state is BreakerState.OPEN


def test_window_expiry(clock: FakeClock) -> None:
    breaker, _ = make(clock, failure_threshold=100, min_calls=10, window=60.0)
    for _ in range(9):
        breaker.record_failure()
        clock.advance(1.0)
    assert breaker.failure_ratio() == 1.0
    clock.advance(60.0)  # every one of them is older than the window now
    assert breaker.failure_ratio() == 0.0
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED  # one call in the window, not ten
    assert breaker.snapshot()["failure_ratio"] == 1.0


def test_window_keeps_results_exactly_window_old(clock: FakeClock) -> None:
    breaker, _ = make(clock, failure_threshold=100, min_calls=2, failure_rate=1.0)
    breaker.record_failure()
    clock.advance(60.0)
    breaker.record_failure()  # the first is exactly 60 s old: still in the window
    assert breaker.state is BreakerState.OPEN


def test_window_slides(clock: FakeClock) -> None:
    breaker, _ = make(clock, failure_threshold=100, min_calls=4, failure_rate=0.75, window=10.0)
    breaker.record_failure()
    clock.advance(6.0)
    breaker.record_success()
    breaker.record_failure()
    clock.advance(5.0)  # the first failure leaves the window
    breaker.record_failure()
    assert breaker.failure_ratio() == pytest.approx(2 / 3)
    breaker.record_failure()  # 3 of 4
    assert breaker.state is BreakerState.OPEN


def test_release_probe_lets_another_probe_go(clock: FakeClock) -> None:
    breaker, transitions = make(clock)
    trip(breaker)
    clock.advance(5.0)
    assert breaker.allow_request()
    assert not breaker.allow_request()
    breaker.release_probe()  # e.g. the probe got a 429, or was cancelled
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.retry_in() == 0.0
    assert breaker.allow_request()
    assert not breaker.allow_request()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert len(transitions) == 3


def test_release_probe_outside_half_open_changes_nothing(clock: FakeClock) -> None:
    breaker, transitions = make(clock)
    breaker.release_probe()
    assert breaker.state is BreakerState.CLOSED
    trip(breaker)
    breaker.release_probe()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow_request()
    assert len(transitions) == 1


def test_listener_errors_are_logged_not_raised(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    breaker, transitions = make(clock)

    def broken(*_: object) -> None:
        raise RuntimeError("listener bug")

    breaker.add_listener(broken)
    heard: list[BreakerState] = []
    remove = breaker.add_listener(lambda _b, _old, new: heard.append(new))
    trip(breaker)  # does not raise
    assert breaker.state is BreakerState.OPEN
    assert heard == [BreakerState.OPEN]  # listeners after the broken one still hear
    assert len(transitions) == 1
    errors = [r for r in caplog.records if r.name == BREAKER_LOGGER]
    assert len(errors) == 1
    assert errors[0].levelno == logging.ERROR
    assert "storage@test" in errors[0].getMessage()
    assert errors[0].exc_info is not None
    remove()
    clock.advance(5.0)
    breaker.allow_request()
    assert heard == [BreakerState.OPEN]


def test_snapshot(clock: FakeClock) -> None:
    breaker, _ = make(clock)
    assert breaker.snapshot() == {
        "state": "closed",
        "consecutive_failures": 0,
        "failure_ratio": 0.0,
        "open_interval": 5.0,
        "retry_in": 0.0,
        "opened_count": 0,
    }
    trip(breaker)
    clock.advance(1.5)
    assert breaker.snapshot() == {
        "state": "open",
        "consecutive_failures": 3,
        "failure_ratio": 1.0,
        "open_interval": 5.0,
        "retry_in": 3.5,
        "opened_count": 1,
    }
