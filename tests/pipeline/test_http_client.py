"""ServiceHTTPClient against real aiohttp servers on 127.0.0.1 (tests/pipeline/fault_server.py):
the answer table, interactive retries, headers and body, construction and snapshot."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from custom_components.ha_ingestor.pipeline.circuit_breaker import BreakerState
from custom_components.ha_ingestor.pipeline.envelope import batch_body
from custom_components.ha_ingestor.pipeline.http_client import (
    CircuitOpenError,
    ServiceCallError,
    ServiceHTTPClient,
    ServiceResponse,
    Timeouts,
)
from custom_components.ha_ingestor.pipeline.retry import BackoffPolicy, Outcome
from tests.pipeline.clients import ServerFactory, batch, event
from tests.pipeline.fakes import Sleeper
from tests.pipeline.fault_server import (
    BATCH_PATH,
    EVENT_PATH,
    HEALTH_PATH,
    REJECT_MARKER,
    Fault,
    FaultServer,
)

if TYPE_CHECKING:
    pass


# -- the answer table -----------------------------------------------------------------


async def test_success_returns_per_event_results(
    fault_server: FaultServer, make_client: Callable[..., ServiceHTTPClient]
) -> None:
    client = make_client(fault_server)
    response = await client.post(BATCH_PATH, batch(1, 2))
    assert isinstance(response, ServiceResponse)
    assert (response.status, response.outcome, response.attempt) == (200, Outcome.SUCCESS, 1)
    assert response.endpoint == fault_server.url
    assert response.retry_after is None
    assert response.duration_ms > 0
    results = response.json()["results"]
    assert [(r["event_id"], r["status"]) for r in results] == [
        ("evt-00001", "stored"),
        ("evt-00002", "stored"),
    ]
    assert fault_server.stored_ids == ["evt-00001", "evt-00002"]
    # Sending again is absorbed by the receiver's dedupe.
    again = await client.post(BATCH_PATH, batch(2, 3))
    assert [r["status"] for r in again.json()["results"]] == ["duplicate", "stored"]
    assert fault_server.stored_ids == ["evt-00001", "evt-00002", "evt-00003"]
    assert [e["event_id"] for e in fault_server.received] == [
        "evt-00001",
        "evt-00002",
        "evt-00002",
        "evt-00003",
    ]


async def test_single_event_and_non_bytes_body(
    fault_server: FaultServer, make_client: Callable[..., ServiceHTTPClient]
) -> None:
    client = make_client(fault_server)
    response = await client.post(EVENT_PATH, event(7))  # a dict goes through orjson
    assert response.outcome is Outcome.SUCCESS
    assert response.json()["results"] == [{"event_id": "evt-00007", "status": "stored"}]
    assert fault_server.requests[0].headers["Content-Type"] == "application/json"


async def test_per_event_rejection(
    fault_server: FaultServer, make_client: Callable[..., ServiceHTTPClient]
) -> None:
    fault_server.reject("evt-00002")
    body = batch_body(
        [
            orjson.dumps(event(1)),
            orjson.dumps(event(2)),
            orjson.dumps(event(3, attributes={REJECT_MARKER: True})),
        ]
    )
    response = await make_client(fault_server).post(BATCH_PATH, body)
    assert response.outcome is Outcome.SUCCESS
    statuses = {r["event_id"]: r["status"] for r in response.json()["results"]}
    assert statuses == {"evt-00001": "stored", "evt-00002": "rejected", "evt-00003": "rejected"}
    assert fault_server.stored_ids == ["evt-00001"]


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (408, Outcome.RETRYABLE),
        (429, Outcome.RATE_LIMITED),
        (500, Outcome.RETRYABLE),
        (502, Outcome.RETRYABLE),
        (503, Outcome.RETRYABLE),
        (401, Outcome.AUTH),
        (403, Outcome.AUTH),
        (413, Outcome.TOO_LARGE),
        (400, Outcome.PERMANENT),
        (422, Outcome.PERMANENT),
    ],
)
async def test_http_errors_are_returned_with_their_outcome(
    fault_server: FaultServer,
    make_client: Callable[..., ServiceHTTPClient],
    sleeper: Sleeper,
    status: int,
    outcome: Outcome,
) -> None:
    fault_server.fail_next(1, status)
    response = await make_client(fault_server).post(BATCH_PATH, batch(1))
    assert (response.status, response.outcome) == (status, outcome)
    assert response.retry_after is None
    assert response.json()["success"] is False
    assert fault_server.stored_ids == []
    assert len(fault_server.requests) == 1  # retry=False: exactly one round
    assert sleeper.delays == []


async def test_real_receiver_answers(
    fault_server_factory: ServerFactory, make_client: Callable[..., ServiceHTTPClient]
) -> None:
    """401, 413 and 400 as the receiver itself gives them (no injected fault)."""
    server = await fault_server_factory(token="right", max_batch_events=2)
    client = make_client(server, token="wrong")
    assert (await client.post(BATCH_PATH, batch(1))).outcome is Outcome.AUTH
    client.set_token("right")
    too_large = await client.post(BATCH_PATH, batch(1, 2, 3))
    assert (too_large.status, too_large.outcome) == (413, Outcome.TOO_LARGE)
    malformed = await client.post(BATCH_PATH, b'{"events": "nope"}')
    assert (malformed.status, malformed.outcome) == (400, Outcome.PERMANENT)
    assert "results" not in malformed.json()  # no per-event results: bisect
    assert (await client.post(BATCH_PATH, batch(1, 2))).outcome is Outcome.SUCCESS
    assert server.stored_ids == ["evt-00001", "evt-00002"]


@pytest.mark.parametrize("status", [408, 429, 500, 503])
async def test_retry_after_in_seconds(
    fault_server: FaultServer, make_client: Callable[..., ServiceHTTPClient], status: int
) -> None:
    fault_server.fail_next(1, status, retry_after=7)
    response = await make_client(fault_server).post(BATCH_PATH, batch(1))
    assert response.retry_after == 7.0
    assert response.headers["Retry-After"] == "7"


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_as_http_date(
    fault_server: FaultServer, make_client: Callable[..., ServiceHTTPClient], status: int
) -> None:
    fault_server.fail_next(1, status, retry_after=datetime.now(UTC) + timedelta(seconds=20))
    response = await make_client(fault_server).post(BATCH_PATH, batch(1))
    assert response.retry_after is not None
    assert 17.0 <= response.retry_after <= 20.0  # the date has whole seconds


async def test_retry_after_is_clamped_to_the_backoff_cap(
    fault_server: FaultServer, make_client: Callable[..., ServiceHTTPClient]
) -> None:
    client = make_client(fault_server, backoff=BackoffPolicy(base=1.0, cap=30.0))
    fault_server.fail_next(1, 503, retry_after=86400)
    assert (await client.post(BATCH_PATH, batch(1))).retry_after == 30.0
    fault_server.fail_next(1, 429, retry_after=datetime.now(UTC) + timedelta(days=2))
    assert (await client.post(BATCH_PATH, batch(1))).retry_after == 30.0
    fault_server.fail_next(1, 503, retry_after="soon")  # unreadable: ignored
    assert (await client.post(BATCH_PATH, batch(1))).retry_after is None


async def test_timeout(
    fault_server: FaultServer, make_client: Callable[..., ServiceHTTPClient]
) -> None:
    fault_server.add_faults(Fault.slow(10))
    client = make_client(fault_server, timeouts=Timeouts(connect=1.0, total=0.3))
    with pytest.raises(ServiceCallError) as err:
        await client.post(BATCH_PATH, batch(1))
    assert err.value.outcome is Outcome.RETRYABLE
    assert err.value.endpoint == fault_server.url
    assert err.value.status is None
    assert "timed out" in str(err.value)
    # A per-call timeout overrides the client's.
    fault_server.add_faults(Fault.slow(10))
    relaxed = make_client(fault_server, timeouts=Timeouts(connect=1.0, total=30.0))
    with pytest.raises(ServiceCallError, match="timed out"):
        await relaxed.post(BATCH_PATH, batch(1), timeout=Timeouts(connect=1.0, total=0.3))


async def test_connection_refused(
    fault_server: FaultServer, make_client: Callable[..., ServiceHTTPClient]
) -> None:
    await fault_server.refuse()
    with pytest.raises(ServiceCallError) as err:
        await make_client(fault_server).post(BATCH_PATH, batch(1))
    assert err.value.outcome is Outcome.RETRYABLE
    assert not isinstance(err.value, CircuitOpenError)
    assert "ClientConnectorError" in str(err.value)


async def test_connection_reset(
    fault_server: FaultServer, make_client: Callable[..., ServiceHTTPClient]
) -> None:
    fault_server.add_faults(Fault.reset())
    client = make_client(fault_server)
    with pytest.raises(ServiceCallError) as err:
        await client.post(BATCH_PATH, batch(1))
    assert err.value.outcome is Outcome.RETRYABLE
    assert fault_server.requests[0].status is None
    # The connection pool recovers: the next call goes through.
    assert (await client.post(BATCH_PATH, batch(1))).outcome is Outcome.SUCCESS


async def test_fail_after_store_is_absorbed_by_dedupe(
    fault_server: FaultServer, make_client: Callable[..., ServiceHTTPClient]
) -> None:
    fault_server.add_faults(Fault.fail_after_store(503, retry_after=1))
    client = make_client(fault_server)
    first = await client.post(BATCH_PATH, batch(1, 2))
    assert (first.outcome, first.retry_after) == (Outcome.RETRYABLE, 1.0)
    assert fault_server.stored_ids == ["evt-00001", "evt-00002"]
    second = await client.post(BATCH_PATH, batch(1, 2))
    assert [r["status"] for r in second.json()["results"]] == ["duplicate", "duplicate"]
    assert fault_server.stored_ids == ["evt-00001", "evt-00002"]


async def test_body_that_is_not_json(
    fault_server: FaultServer, make_client: Callable[..., ServiceHTTPClient]
) -> None:
    fault_server.add_faults(Fault.answer(502, body=b"<html>bad gateway</html>"))
    response = await make_client(fault_server).post(BATCH_PATH, batch(1))
    assert response.outcome is Outcome.RETRYABLE
    with pytest.raises(ServiceCallError, match="not JSON") as err:
        response.json()
    assert (err.value.outcome, err.value.status) == (Outcome.PERMANENT, 502)


# -- interactive retries --------------------------------------------------------------


async def test_no_retry_for_queued_events(
    fault_server: FaultServer, make_client: Callable[..., ServiceHTTPClient], sleeper: Sleeper
) -> None:
    fault_server.fail_next(5, 503)
    response = await make_client(fault_server).post(BATCH_PATH, batch(1))
    assert response.outcome is Outcome.RETRYABLE
    assert len(fault_server.requests) == 1
    assert sleeper.delays == []


async def test_interactive_retry_with_full_jitter(
    fault_server: FaultServer, make_client: Callable[..., ServiceHTTPClient], sleeper: Sleeper
) -> None:
    draws = iter([0.25, 0.75])
    client = make_client(
        fault_server,
        backoff=BackoffPolicy(base=1.0, cap=60.0),
        rng=lambda: next(draws),
        interactive_attempts=3,
    )
    fault_server.fail_next(2, 503)
    response = await client.post(BATCH_PATH, batch(1), retry=True)
    assert (response.outcome, response.attempt) == (Outcome.SUCCESS, 3)
    assert len(fault_server.requests) == 3
    # Full jitter: rng * min(cap, base * 2**n) for the n-th retry (0-based).
    assert sleeper.delays == [0.25 * 1.0, 0.75 * 2.0]


async def test_interactive_retry_gives_up_after_the_attempts(
    fault_server: FaultServer, make_client: Callable[..., ServiceHTTPClient], sleeper: Sleeper
) -> None:
    client = make_client(fault_server, interactive_attempts=4)
    fault_server.fail_next(10, 500)
    response = await client.post(BATCH_PATH, batch(1), retry=True)
    assert (response.status, response.attempt) == (500, 4)
    assert len(fault_server.requests) == 4
    assert len(sleeper.delays) == 3


async def test_interactive_retry_honours_and_clamps_retry_after(
    fault_server: FaultServer, make_client: Callable[..., ServiceHTTPClient], sleeper: Sleeper
) -> None:
    fault_server.add_faults(
        Fault.answer(429, retry_after=9),  # longer than the jittered backoff: wins
        Fault.answer(503, retry_after=0),  # shorter: the backoff wins
        Fault.answer(429, retry_after=datetime.now(UTC) + timedelta(hours=1)),  # clamped
    )
    client = make_client(
        fault_server, backoff=BackoffPolicy(base=1.0, cap=20.0), interactive_attempts=4
    )
    response = await client.post(BATCH_PATH, batch(1), retry=True)
    assert response.outcome is Outcome.SUCCESS
    assert sleeper.delays == [9.0, 0.5 * 2.0, 20.0]


async def test_interactive_retry_of_transport_errors(
    fault_server: FaultServer, make_client: Callable[..., ServiceHTTPClient], sleeper: Sleeper
) -> None:
    fault_server.add_faults(Fault.reset(), Fault.reset())
    response = await make_client(fault_server).post(BATCH_PATH, batch(1), retry=True)
    assert (response.outcome, response.attempt) == (Outcome.SUCCESS, 3)
    assert sleeper.delays == [0.5 * 0.5, 0.5 * 1.0]
    fault_server.add_faults(Fault.reset(), Fault.reset(), Fault.reset())
    with pytest.raises(ServiceCallError) as err:
        await make_client(fault_server).post(BATCH_PATH, batch(1), retry=True)
    assert err.value.outcome is Outcome.RETRYABLE


@pytest.mark.parametrize("status", [400, 401, 403, 413])
async def test_interactive_retry_stops_at_a_final_answer(
    fault_server: FaultServer,
    make_client: Callable[..., ServiceHTTPClient],
    sleeper: Sleeper,
    status: int,
) -> None:
    fault_server.fail_next(3, status)
    response = await make_client(fault_server).post(BATCH_PATH, batch(1), retry=True)
    assert (response.status, response.attempt) == (status, 1)
    assert sleeper.delays == []


async def test_get_retries_by_default(
    fault_server: FaultServer, make_client: Callable[..., ServiceHTTPClient], sleeper: Sleeper
) -> None:
    fault_server.fail_next(1, 503, path=HEALTH_PATH)
    client = make_client(fault_server, token="secret")
    response = await client.get(HEALTH_PATH, params={"verbose": "1"})
    assert (response.status, response.attempt) == (200, 2)
    assert response.json()["status"] == "healthy"
    assert [r.query for r in fault_server.requests] == [{"verbose": "1"}] * 2
    assert fault_server.requests[-1].headers["Authorization"] == "Bearer secret"
    assert len(sleeper.delays) == 1
    await client.get(HEALTH_PATH, auth=False)
    assert "Authorization" not in fault_server.requests[-1].headers
    fault_server.fail_next(1, 503, path=HEALTH_PATH)
    assert (await client.get(HEALTH_PATH, retry=False)).status == 503


# -- headers and body -----------------------------------------------------------------


async def test_headers(
    fault_server: FaultServer, make_client: Callable[..., ServiceHTTPClient]
) -> None:
    client = make_client(fault_server, token="t0")
    await client.post(
        BATCH_PATH,
        batch(1),
        idempotency_key="key-1",
        correlation_id="corr-1",
        headers={"X-Extra": "yes"},
    )
    sent = fault_server.requests[-1]
    assert sent.headers["Authorization"] == "Bearer t0"
    assert sent.idempotency_key == "key-1"
    assert sent.correlation_id == "corr-1"
    assert sent.headers["X-Extra"] == "yes"
    assert "ha-ingestor" in sent.headers["User-Agent"]
    assert sent.content_encoding is None
    client.set_token("t1")
    await client.post(BATCH_PATH, batch(2))
    sent = fault_server.requests[-1]
    assert sent.headers["Authorization"] == "Bearer t1"
    assert sent.idempotency_key is None
    assert sent.correlation_id is None
    client.set_token(None)
    await client.post(BATCH_PATH, batch(3))
    assert "Authorization" not in fault_server.requests[-1].headers


async def test_set_token_after_auth_failure(
    fault_server_factory: ServerFactory, make_client: Callable[..., ServiceHTTPClient]
) -> None:
    server = await fault_server_factory(token="new")
    client = make_client(server, token="old")
    for _ in range(10):  # auth answers never trip the breaker: the server is alive
        assert (await client.post(BATCH_PATH, batch(1))).outcome is Outcome.AUTH
    assert client.breakers[server.url].state is BreakerState.CLOSED
    client.set_token("new")
    assert (await client.post(BATCH_PATH, batch(1))).outcome is Outcome.SUCCESS
    assert server.stored_ids == ["evt-00001"]


@pytest.mark.parametrize("count", [40, 900])  # small: inline; large: compressed on a thread
async def test_gzip_above_the_threshold(
    fault_server: FaultServer, make_client: Callable[..., ServiceHTTPClient], count: int
) -> None:
    client = make_client(fault_server, gzip_min_bytes=1024)
    body = batch(*range(count))
    assert len(body) >= (64 * 1024 if count > 100 else 1024)
    response = await client.post(BATCH_PATH, body)
    assert response.outcome is Outcome.SUCCESS
    sent = fault_server.requests[-1]
    assert sent.content_encoding == "gzip"
    assert sent.body_bytes == len(body)
    assert sent.wire_bytes is not None
    assert sent.wire_bytes < len(body)
    assert fault_server.stored_ids == [f"evt-{n:05d}" for n in range(count)]
    # Below the threshold the body goes as is.
    await client.post(BATCH_PATH, batch(99999))
    sent = fault_server.requests[-1]
    assert sent.content_encoding is None
    assert sent.wire_bytes == sent.body_bytes


async def test_gzip_body_is_level_1_gzip(
    fault_server: FaultServer, make_client: Callable[..., ServiceHTTPClient]
) -> None:
    client = make_client(fault_server, gzip_min_bytes=10)
    body = batch(1, 2, 3)
    await client.post(BATCH_PATH, body)
    sent = fault_server.requests[-1]
    assert sent.content_encoding == "gzip"
    assert sent.wire_bytes == len(gzip.compress(body, 1))


# -- construction, snapshot ------------------------------------------------------------


def test_constructor_validation() -> None:
    session: Any = object()
    with pytest.raises(ValueError, match="endpoint"):
        ServiceHTTPClient("storage", [], session)
    with pytest.raises(ValueError, match="interactive_attempts"):
        ServiceHTTPClient("storage", ["http://127.0.0.1:1"], session, interactive_attempts=0)
    client = ServiceHTTPClient("storage", ["http://127.0.0.1:1/", "http://127.0.0.1:2"], session)
    assert list(client.breakers) == ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    assert client.available()
    assert client.retry_in() == 0.0


async def test_snapshot(
    fault_server: FaultServer, make_client: Callable[..., ServiceHTTPClient]
) -> None:
    client = make_client(fault_server, token="secret", wall_clock=lambda: 1_700_000_000.0)
    snapshot = client.snapshot()
    assert snapshot["requests"] == 0
    assert snapshot["last_error"] is None
    await client.post(BATCH_PATH, batch(1))
    fault_server.fail_next(1, 503)
    await client.post(BATCH_PATH, batch(1))
    fault_server.fail_next(1, 429)
    await client.post(BATCH_PATH, batch(1))
    snapshot = client.snapshot()
    assert snapshot["service"] == "storage"
    assert snapshot["endpoints"] == [fault_server.url]
    assert snapshot["available"] is True
    assert snapshot["requests"] == 3
    assert snapshot["failures"] == 1
    assert snapshot["outcomes"]["success"] == 1
    assert snapshot["outcomes"]["retryable"] == 1
    assert snapshot["outcomes"]["rate_limited"] == 1
    assert snapshot["last_error"] == {
        "message": f"POST {BATCH_PATH}: HTTP 503",
        "endpoint": fault_server.url,
        "time": "2023-11-14T22:13:20+00:00",
    }
    assert snapshot["breakers"][fault_server.url]["state"] == "closed"
    assert snapshot["token_set"] is True
    assert "secret" not in orjson.dumps(snapshot).decode()
