"""Helpers of the ServiceHTTPClient tests (test_http_client*.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from custom_components.ha_ingestor.pipeline.envelope import batch_body
from tests.pipeline.fault_server import FaultServer

CLIENT_LOGGER = "custom_components.ha_ingestor.pipeline.http_client"
ServerFactory = Callable[..., Awaitable[FaultServer]]


def event(n: int, **data: Any) -> dict[str, Any]:
    return {
        "event_id": f"evt-{n:05d}",
        "timestamp": "2025-01-01T00:00:00Z",
        "source": "ha_ingestor",
        "data": {"event_type": "state_changed", "entity_id": "sensor.t", "state": str(n), **data},
        "context": {},
    }


def batch(*numbers: int) -> bytes:
    return batch_body([orjson.dumps(event(n)) for n in numbers])
