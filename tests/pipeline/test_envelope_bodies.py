"""The wire formats, bodies: batch bodies, error responses and results parsing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from custom_components.ha_ingestor.pipeline.envelope import (
    VALIDATION_ERROR,
    EventValidator,
    ValidationError,
    batch_body,
    error_response,
    parse_results,
)
from tests.pipeline.envelopes import (
    JSON_VALUES,
    PROPERTY,
    WILD_VALUES,
    state_changed,
)

# --------------------------------------------------------------------------------- batches


def test_batch_body_joins_encoded_envelopes(validator: EventValidator) -> None:
    encoded = [validator.encode(state_changed(entity_id=f"sensor.s{i}")) for i in range(3)]
    body = batch_body([e.payload for e in encoded])
    parsed = orjson.loads(body)
    assert list(parsed) == ["events"]
    assert [e["event_id"] for e in parsed["events"]] == [e.event_id for e in encoded]
    assert [e["data"]["entity_id"] for e in parsed["events"]] == [
        "sensor.s0",
        "sensor.s1",
        "sensor.s2",
    ]
    assert parsed["events"] == [orjson.loads(e.payload) for e in encoded]


def test_batch_body_empty_and_single() -> None:
    assert batch_body([]) == b'{"events":[]}'
    assert orjson.loads(batch_body([])) == {"events": []}
    assert orjson.loads(batch_body([b'{"a":1}'])) == {"events": [{"a": 1}]}


@settings(PROPERTY, max_examples=100)
@given(st.lists(JSON_VALUES, max_size=8))
def test_batch_body_is_valid_json_for_any_payloads(values: list[Any]) -> None:
    body = batch_body([orjson.dumps(v) for v in values])
    assert orjson.loads(body) == {"events": values}


# ------------------------------------------------------------------------------ responses


def test_error_response_shape() -> None:
    err = ValidationError("entity_id", "has type int", "string")
    before = datetime.now(UTC)
    body = error_response(err.code, err.message, err.details(), correlation_id="corr-1")
    after = datetime.now(UTC)
    assert set(body) == {"success", "error", "timestamp", "correlation_id"}
    assert body["success"] is False
    assert body["error"] == {
        "code": "VALIDATION_ERROR",
        "message": "entity_id: has type int (expected string)",
        "details": {"field": "entity_id", "issue": "has type int", "expected": "string"},
    }
    assert body["correlation_id"] == "corr-1"
    assert body["timestamp"].endswith("Z")
    assert before <= datetime.fromisoformat(body["timestamp"]) <= after
    assert orjson.loads(orjson.dumps(body)) == body


def test_error_response_without_details_or_correlation() -> None:
    body = error_response("UNAUTHORIZED", "missing token")
    assert body["error"] == {"code": "UNAUTHORIZED", "message": "missing token"}
    assert body["correlation_id"] is None
    assert error_response("X", "y", {})["error"] == {"code": "X", "message": "y"}


def test_parse_results_well_formed() -> None:
    body = {
        "success": True,
        "results": [
            {"event_id": "a", "status": "stored"},
            {"event_id": "b", "status": "duplicate"},
            {
                "event_id": "c",
                "status": "rejected",
                "error": {
                    "code": "VALIDATION_ERROR",
                    "message": "entity_id: is missing",
                    "details": {"field": "entity_id", "issue": "is missing"},
                },
            },
        ],
    }
    assert parse_results(body) == {
        "a": {"event_id": "a", "status": "stored"},
        "b": {"event_id": "b", "status": "duplicate"},
        "c": {
            "event_id": "c",
            "status": "rejected",
            "error": {
                "code": "VALIDATION_ERROR",
                "message": "entity_id: is missing",
                "details": {"field": "entity_id", "issue": "is missing"},
            },
        },
    }


def test_parse_results_fills_in_a_partial_error() -> None:
    results = parse_results(
        {"results": [{"event_id": "a", "status": "rejected", "error": {"details": "x"}}]}
    )
    assert results == {
        "a": {
            "event_id": "a",
            "status": "rejected",
            "error": {"code": VALIDATION_ERROR, "message": ""},
        }
    }
    results = parse_results(
        {"results": [{"event_id": "a", "status": "rejected", "error": {"code": 413}}]}
    )
    assert results is not None
    assert results["a"]["error"] == {"code": "413", "message": ""}


def test_parse_results_ignores_an_error_that_is_not_an_object() -> None:
    results = parse_results({"results": [{"event_id": "a", "status": "rejected", "error": "x"}]})
    assert results == {"a": {"event_id": "a", "status": "rejected"}}


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        "results",
        b'{"results": []}',
        {},
        {"success": True},
        {"results": None},
        {"results": {"event_id": "a", "status": "stored"}},
        {"results": "stored"},
    ],
)
def test_parse_results_missing(body: object) -> None:
    assert parse_results(body) is None


def test_parse_results_empty_list() -> None:
    assert parse_results({"results": []}) == {}


def test_parse_results_skips_malformed_and_unknown_entries() -> None:
    body = {
        "results": [
            None,
            "a",
            ["a", "stored"],
            {"status": "stored"},
            {"event_id": 1, "status": "stored"},
            {"event_id": None, "status": "stored"},
            {"event_id": "no-status"},
            {"event_id": "unknown", "status": "ok"},
            {"event_id": "upper", "status": "STORED"},
            {"event_id": "listy", "status": ["stored"]},
            {"event_id": "good", "status": "stored", "extra": 1},
        ]
    }
    assert parse_results(body) == {"good": {"event_id": "good", "status": "stored"}}


@settings(PROPERTY, max_examples=150)
@given(WILD_VALUES)
def test_parse_results_never_raises(body: object) -> None:
    parsed = parse_results({"results": body})
    if parsed is None:
        assert not isinstance(body, list)
        return
    for event_id, result in parsed.items():
        assert result["event_id"] == event_id
        assert result["status"] in {"stored", "duplicate", "rejected"}
