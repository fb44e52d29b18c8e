"""Tag values are capped (issue 10: a 70 KB ``source`` in 200 events made 399 writes to
InfluxDB, its 64 KiB series-key limit and then bisection): such an event is rejected on
its own with a validation error, the others are stored in one write."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from ha_ingestor_pipeline.envelope import ValidationError
from ha_ingestor_services.envelopes import MAX_TAG_LENGTH, check_envelope
from ha_ingestor_services.storage.backends.influx_writes import InfluxWrites
from ha_ingestor_services.storage.backends.line_protocol import influx_problem
from ha_ingestor_services.storage.records import Record, to_record

from .conftest import StartStorage, envelope, post_batch, statuses


def with_long(where: str, length: int) -> dict[str, Any]:
    """An envelope whose tag at ``where`` is ``length`` characters long."""
    event = envelope("sensor.long")
    text = "x" * length
    if where == "source":
        event["source"] = text
    elif where == "context.instance_id":
        event["context"]["instance_id"] = text
    elif where.startswith("data.attributes."):
        event["data"]["attributes"][where.removeprefix("data.attributes.")] = text
    else:  # normalized.*: the enrichment's part, which storage takes as it comes
        event["normalized"] = {"domain": "sensor", "object_id": "long", "value": 1.0}
        event["normalized"][where.removeprefix("normalized.")] = text
    return event


WHERE = {
    "source": "source",
    "context.instance_id": "context.instance_id",
    "data.attributes.unit_of_measurement": "data.attributes.unit_of_measurement",
    "data.attributes.device_class": "data.attributes.device_class",
    "normalized.unit": "unit",
    "normalized.device_class": "device_class",
    "normalized.domain": "domain",
}


@pytest.mark.parametrize("where", list(WHERE))
async def test_every_tag_value_is_capped(
    start_storage: StartStorage, client: aiohttp.ClientSession, where: str
) -> None:
    url, _ = await start_storage()
    batch = [with_long(where, MAX_TAG_LENGTH), with_long(where, MAX_TAG_LENGTH + 1)]
    status, body = await post_batch(client, url, batch)
    assert status == 200
    assert statuses(body) == ["stored", "rejected"]
    error = body["results"][1]["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["details"]["field"] == WHERE[where]
    assert "256 characters" in error["message"]


def test_the_envelope_check_names_the_long_tag() -> None:
    """The enrichment checks envelopes the same way (web.run_events), before any work."""
    for where in ("source", "context.instance_id", "data.attributes.unit_of_measurement"):
        check_envelope(with_long(where, MAX_TAG_LENGTH))
        with pytest.raises(ValidationError) as caught:
            check_envelope(with_long(where, 70_000))
        assert caught.value.field == where


async def test_a_70_kb_source_makes_no_extra_influxdb_writes(
    start_storage: StartStorage, client: aiohttp.ClientSession, influx_settings: dict[str, Any]
) -> None:
    url, service = await start_storage(**influx_settings)
    writes = service.backend._writes  # type: ignore[attr-defined]
    posts = 0
    post = writes._post

    async def counting_post(lines: str) -> None:
        nonlocal posts
        posts += 1
        await post(lines)

    writes._post = counting_post
    batch = [with_long("source", 70_000) for _ in range(200)]
    batch[::40] = [envelope(f"sensor.good{i}") for i in range(5)]
    status, body = await post_batch(client, url, batch)
    assert status == 200
    expected = ["rejected"] * 200
    expected[::40] = ["stored"] * 5
    assert statuses(body) == expected
    assert posts == 1
    assert writes.bisections == 0


def test_a_series_key_over_64_kib_is_not_sent() -> None:
    """Checked before writing too, whatever made the record (each tag is escaped as
    written: a comma takes two bytes)."""
    tag = "," * 6000
    record = Record(
        "id-1", 1, "state_changed", "sensor." + tag, tag, tag, tag, tag, tag,
        "1", None, None, "{}", None, None, None, None, None, None, None,
    )  # fmt: skip
    problem = influx_problem(record)
    assert problem is not None
    assert "series key" in problem
    assert "64 KiB" in problem
    assert influx_problem(record._replace(source="short", unit=None)) is None


async def test_influx_writes_reject_a_long_series_key_without_a_write() -> None:
    posts: list[str] = []

    async def post(lines: str) -> None:
        posts.append(lines)

    writes = InfluxWrites(post)
    good = to_record(check_envelope(envelope("sensor.good")))
    long_key = good._replace(event_id="long", source="é" * 40_000)
    outcomes = await writes.write([good, long_key])
    assert outcomes[0] == "stored"
    assert outcomes[1] != "stored"
    assert "series key" in str(outcomes[1])
    assert len(posts) == 1
    assert "long" not in posts[0]
