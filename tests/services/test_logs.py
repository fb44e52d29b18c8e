"""Structured logs of the services."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from ha_ingestor_services.logs import configure_logging


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    """configure_logging replaces the root handlers (pytest's capture among them)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_json_lines_carry_extras_and_exceptions() -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", json=True, stream=stream)
    logger = logging.getLogger("ha_ingestor_services.test")
    logger.info("stored %d events", 3, extra={"correlation_id": "c-1"})
    try:
        raise ValueError("bad")
    except ValueError:
        logger.exception("failed")
    first, second = (
        orjson.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")
    )
    assert first["message"] == "stored 3 events"
    assert first["level"] == "INFO"
    assert first["correlation_id"] == "c-1"
    assert first["time"].endswith("Z")
    assert "ValueError: bad" in second["exception"]


def test_text_lines_append_extras() -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    logging.getLogger("ha_ingestor_services.test").warning("storage down", extra={"retry_after": 5})
    logging.getLogger("ha_ingestor_services.test").debug("hidden")
    line = stream.getvalue().strip()
    assert line.endswith("WARNING ha_ingestor_services.test: storage down retry_after=5")
    assert "hidden" not in stream.getvalue()
