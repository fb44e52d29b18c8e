"""The options flow: filters on top, delivery tuning in the collapsed "Advanced delivery"
section; the options are stored flat."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import voluptuous as vol
from homeassistant.data_entry_flow import FlowResultType, section
from homeassistant.setup import async_setup_component

from custom_components.ha_ingestor.const import (
    ALL_EVENTS,
    ALL_EVENTS_OPTION,
    CONF_BATCH_SIZE,
    CONF_DURABILITY,
    CONF_EVENT_TYPES,
    CONF_EXCLUDE_DOMAINS,
    CONF_EXCLUDE_ENTITIES,
    CONF_EXCLUDE_ENTITY_GLOBS,
    CONF_FALLBACK_TO_STORAGE,
    CONF_GAP_FILL,
    CONF_GAP_FILL_MAX_HOURS,
    CONF_HEALTH_INTERVAL,
    CONF_INCLUDE_DOMAINS,
    CONF_INCLUDE_ENTITIES,
    CONF_INCLUDE_ENTITY_GLOBS,
    CONF_LINGER_MS,
    CONF_MAX_EVENTS,
    CONF_MAX_MEGABYTES,
    CONF_PROBLEM_AFTER,
    CONF_WEATHER_ENTITY,
    SUGGESTED_EVENT_TYPES,
)
from custom_components.ha_ingestor.options_flow import (
    ADVANCED_DELIVERY,
    ADVANCED_DELIVERY_KEYS,
    default_options,
)
from tests.integration.flow_helpers import add_entry, field_selector, suggested

if TYPE_CHECKING:
    from homeassistant.core import HomeAssistant
    from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

pytestmark = pytest.mark.usefixtures("mock_setup_entry")

INTEGRATION = Path(__file__).parents[2] / "custom_components" / "ha_ingestor"
STORAGE_URL = "http://localhost:8004"  # not contacted: the options need no service


# The options form: filters on top, delivery tuning in the "Advanced delivery" section.
TOP_FIELDS = [
    CONF_EVENT_TYPES,
    CONF_INCLUDE_DOMAINS,
    CONF_INCLUDE_ENTITIES,
    CONF_INCLUDE_ENTITY_GLOBS,
    CONF_EXCLUDE_DOMAINS,
    CONF_EXCLUDE_ENTITIES,
    CONF_EXCLUDE_ENTITY_GLOBS,
    CONF_WEATHER_ENTITY,
]
SECTION = "advanced_delivery"
SECTION_FIELDS = [
    CONF_BATCH_SIZE,
    CONF_LINGER_MS,
    CONF_DURABILITY,
    CONF_MAX_EVENTS,
    CONF_MAX_MEGABYTES,
    CONF_FALLBACK_TO_STORAGE,
    CONF_HEALTH_INTERVAL,
    CONF_PROBLEM_AFTER,
    CONF_GAP_FILL,
    CONF_GAP_FILL_MAX_HOURS,
]


def as_form(options: dict[str, Any]) -> dict[str, Any]:
    """Flat options as the form sends them: the section's fields nested under it."""
    values = {key: value for key, value in options.items() if key not in SECTION_FIELDS}
    values[SECTION] = {key: value for key, value in options.items() if key in SECTION_FIELDS}
    return values


def options_input(**changes: Any) -> dict[str, Any]:
    values = default_options()
    del values[CONF_WEATHER_ENTITY]  # an empty optional field is left out by the frontend
    values.update(changes)
    return as_form(values)


async def test_options_defaults(hass: HomeAssistant) -> None:
    entry = add_entry(hass, STORAGE_URL)
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "init"
    assert suggested(result) == default_options()
    assert default_options()[CONF_PROBLEM_AFTER] == 60

    result = await hass.config_entries.options.async_configure(result["flow_id"], options_input())
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options == default_options()


async def test_options_layout(hass: HomeAssistant) -> None:
    """Filters on top; delivery tuning in a section that starts collapsed."""
    entry = add_entry(hass, STORAGE_URL)
    result = await hass.config_entries.options.async_init(entry.entry_id)
    schema = result["data_schema"].schema
    assert [str(key) for key in schema] == [*TOP_FIELDS, SECTION]
    (advanced,) = (value for key, value in schema.items() if str(key) == SECTION)
    assert isinstance(advanced, section)
    assert advanced.options == {"collapsed": True}
    assert [str(key) for key in advanced.schema.schema] == SECTION_FIELDS
    assert (ADVANCED_DELIVERY, list(ADVANCED_DELIVERY_KEYS)) == (SECTION, SECTION_FIELDS)
    config = field_selector(result, CONF_PROBLEM_AFTER).config
    assert (config["min"], config["max"], config["step"]) == (10, 86_400, 1)
    assert (config["mode"], config["unit_of_measurement"]) == ("box", "s")


async def test_options_of_an_entry_without_options(hass: HomeAssistant) -> None:
    entry = add_entry(hass, STORAGE_URL)
    hass.config_entries.async_update_entry(entry, options={CONF_BATCH_SIZE: 42})
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert suggested(result) == {**default_options(), CONF_BATCH_SIZE: 42}


async def test_options_form_as_the_frontend_gets_it(
    hass: HomeAssistant, hass_client: ClientSessionGenerator
) -> None:
    """Through Home Assistant's HTTP API, as the frontend sees the form: an entry's stored
    options (from before problem_after existed) are filled into the section, and an error
    of a field inside the section is reported on the section, where it is shown."""
    assert await async_setup_component(hass, "config", {})
    entry = add_entry(hass, STORAGE_URL)
    stored = {**default_options(), CONF_BATCH_SIZE: 42, CONF_DURABILITY: "on_backlog"}
    del stored[CONF_PROBLEM_AFTER]
    hass.config_entries.async_update_entry(entry, options=stored)
    client = await hass_client()

    response = await client.post(
        "/api/config/config_entries/options/flow", json={"handler": entry.entry_id}
    )
    assert response.status == 200
    form = await response.json()
    fields_by_name = {field["name"]: field for field in form["data_schema"]}
    assert list(fields_by_name) == [*TOP_FIELDS, SECTION]
    advanced = fields_by_name[SECTION]
    assert advanced["type"] == "expandable"
    assert advanced["expanded"] is False
    assert {
        field["name"]: field["description"]["suggested_value"] for field in advanced["schema"]
    } == {
        **{key: default_options()[key] for key in SECTION_FIELDS},
        CONF_BATCH_SIZE: 42,
        CONF_DURABILITY: "on_backlog",
    }
    assert fields_by_name[CONF_EVENT_TYPES]["description"]["suggested_value"] == ["state_changed"]

    response = await client.post(
        f"/api/config/config_entries/options/flow/{form['flow_id']}",
        json=options_input(batch_size=42.5),
    )
    assert response.status == 200
    form = await response.json()
    assert form["type"] == "form"
    assert form["errors"] == {SECTION: "not_whole_number"}
    assert entry.options == stored

    response = await client.post(
        f"/api/config/config_entries/options/flow/{form['flow_id']}",
        json=options_input(batch_size=42, problem_after=600),
    )
    assert response.status == 200
    assert (await response.json())["type"] == "create_entry"
    assert entry.options == {**default_options(), CONF_BATCH_SIZE: 42, CONF_PROBLEM_AFTER: 600}


async def test_options_changes(hass: HomeAssistant) -> None:
    hass.states.async_set("light.kitchen", "on")
    hass.states.async_set("weather.home", "rainy")
    entry = add_entry(hass, STORAGE_URL)
    result = await hass.config_entries.options.async_init(entry.entry_id)
    domains = field_selector(result, CONF_INCLUDE_DOMAINS).config["options"]
    assert domains == ["light", "weather"]

    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        options_input(
            event_types=["state_changed", "call_service", "my_custom_event", "call_service"],
            include_domains=["sensor", "light"],
            include_entities=["sensor.outside"],
            include_entity_globs=[" sensor.*_temperature "],
            exclude_domains=["automation"],
            exclude_entities=["sensor.noisy"],
            exclude_entity_globs=["sensor.*_linkquality", "sensor.*_linkquality"],
            batch_size=1000.0,
            linger_ms=20.0,
            durability="on_backlog",
            max_events=5000.0,
            max_megabytes=64.0,
            fallback_to_storage=False,
            health_check_interval=10.0,
            problem_after=300.0,
            gap_fill=False,
            gap_fill_max_hours=48.0,
            weather_entity="weather.home",
        ),
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    expected = {
        CONF_EVENT_TYPES: ["state_changed", "call_service", "my_custom_event"],
        CONF_INCLUDE_DOMAINS: ["sensor", "light"],
        CONF_INCLUDE_ENTITIES: ["sensor.outside"],
        CONF_INCLUDE_ENTITY_GLOBS: ["sensor.*_temperature"],
        CONF_EXCLUDE_DOMAINS: ["automation"],
        CONF_EXCLUDE_ENTITIES: ["sensor.noisy"],
        CONF_EXCLUDE_ENTITY_GLOBS: ["sensor.*_linkquality"],
        CONF_BATCH_SIZE: 1000,
        CONF_LINGER_MS: 20,
        CONF_DURABILITY: "on_backlog",
        CONF_MAX_EVENTS: 5000,
        CONF_MAX_MEGABYTES: 64,
        CONF_FALLBACK_TO_STORAGE: False,
        CONF_HEALTH_INTERVAL: 10,
        CONF_PROBLEM_AFTER: 300,
        CONF_WEATHER_ENTITY: "weather.home",
        CONF_GAP_FILL: False,
        CONF_GAP_FILL_MAX_HOURS: 48,
    }
    assert entry.options == expected  # flat, as before the section
    for key in (
        CONF_BATCH_SIZE,
        CONF_LINGER_MS,
        CONF_MAX_EVENTS,
        CONF_MAX_MEGABYTES,
        CONF_HEALTH_INTERVAL,
        CONF_PROBLEM_AFTER,
    ):
        assert type(entry.options[key]) is int

    # Opened again: the stored values are the suggestions, custom event types included.
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert suggested(result) == expected
    assert field_selector(result, CONF_EVENT_TYPES).config["options"] == [
        "state_changed",
        "call_service",
        "automation_triggered",
        "all_events",
        "my_custom_event",
    ]
    assert field_selector(result, CONF_INCLUDE_DOMAINS).config["options"] == [
        "automation",
        "light",
        "sensor",
        "weather",
    ]

    # Clearing the weather entity stores None.
    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        as_form({key: value for key, value in expected.items() if key != "weather_entity"}),
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options[CONF_WEATHER_ENTITY] is None


@pytest.mark.parametrize("chosen", ["all_events", "*", " * "])
async def test_options_all_events(hass: HomeAssistant, chosen: str) -> None:
    """The select's "all_events" option, or "*" typed in, is stored as "*" (and shown back
    as "all_events", the select's translatable value for it)."""
    entry = add_entry(hass, STORAGE_URL)
    result = await hass.config_entries.options.async_init(entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], options_input(event_types=["state_changed", chosen])
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options[CONF_EVENT_TYPES] == [ALL_EVENTS]

    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert suggested(result)[CONF_EVENT_TYPES] == [ALL_EVENTS_OPTION]
    options = field_selector(result, CONF_EVENT_TYPES).config["options"]
    assert ALL_EVENTS_OPTION in options
    assert ALL_EVENTS not in options


async def test_options_all_events_kept_on_an_error(hass: HomeAssistant) -> None:
    """A form shown again for another field's error keeps "all events" chosen."""
    entry = add_entry(hass, STORAGE_URL)
    result = await hass.config_entries.options.async_init(entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], options_input(event_types=["*"], include_domains=["Light"])
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_INCLUDE_DOMAINS: "invalid_domain"}
    assert suggested(result)[CONF_EVENT_TYPES] == [ALL_EVENTS_OPTION]


async def test_options_lists_left_out(hass: HomeAssistant) -> None:
    """The frontend leaves out emptied optional lists: they are stored empty."""
    entry = add_entry(hass, STORAGE_URL)
    hass.config_entries.async_update_entry(
        entry, options={**default_options(), CONF_INCLUDE_DOMAINS: ["light"]}
    )
    result = await hass.config_entries.options.async_init(entry.entry_id)
    values = options_input()
    for key in (CONF_INCLUDE_DOMAINS, CONF_INCLUDE_ENTITIES, CONF_EXCLUDE_ENTITY_GLOBS):
        del values[key]
    result = await hass.config_entries.options.async_configure(result["flow_id"], values)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options == default_options()


@pytest.mark.parametrize(
    ("changes", "errors"),
    [
        ({CONF_EVENT_TYPES: []}, {CONF_EVENT_TYPES: "no_event_types"}),
        ({CONF_EVENT_TYPES: ["state changed"]}, {CONF_EVENT_TYPES: "invalid_event_type"}),
        ({CONF_EVENT_TYPES: ["", "state_changed"]}, {CONF_EVENT_TYPES: "invalid_event_type"}),
        ({CONF_EVENT_TYPES: ["x" * 65]}, {CONF_EVENT_TYPES: "invalid_event_type"}),
        ({CONF_INCLUDE_DOMAINS: ["Light"]}, {CONF_INCLUDE_DOMAINS: "invalid_domain"}),
        ({CONF_EXCLUDE_DOMAINS: ["binary sensor"]}, {CONF_EXCLUDE_DOMAINS: "invalid_domain"}),
        ({CONF_INCLUDE_ENTITY_GLOBS: [""]}, {CONF_INCLUDE_ENTITY_GLOBS: "invalid_glob"}),
        ({CONF_INCLUDE_ENTITY_GLOBS: ["   "]}, {CONF_INCLUDE_ENTITY_GLOBS: "invalid_glob"}),
        ({CONF_EXCLUDE_ENTITY_GLOBS: ["Sensor.*"]}, {CONF_EXCLUDE_ENTITY_GLOBS: "invalid_glob"}),
        ({CONF_EXCLUDE_ENTITY_GLOBS: ["sensor.a *"]}, {CONF_EXCLUDE_ENTITY_GLOBS: "invalid_glob"}),
        (
            {CONF_EVENT_TYPES: [], CONF_INCLUDE_ENTITY_GLOBS: ["a", ""]},
            {CONF_EVENT_TYPES: "no_event_types", CONF_INCLUDE_ENTITY_GLOBS: "invalid_glob"},
        ),
        # Fields inside the section: the error is shown on the section.
        ({CONF_BATCH_SIZE: 2.5}, {SECTION: "not_whole_number"}),
        ({CONF_LINGER_MS: 0.5, CONF_MAX_EVENTS: 5000.5}, {SECTION: "not_whole_number"}),
        (
            {CONF_EVENT_TYPES: [], CONF_PROBLEM_AFTER: 90.5},
            {CONF_EVENT_TYPES: "no_event_types", SECTION: "not_whole_number"},
        ),
    ],
)
async def test_options_validation(
    hass: HomeAssistant,
    changes: dict[str, Any],
    errors: dict[str, str],
) -> None:
    entry = add_entry(hass, STORAGE_URL)
    result = await hass.config_entries.options.async_init(entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], options_input(**changes)
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == errors
    assert entry.options == default_options()
    # What was typed stays on the form.
    for key, value in changes.items():
        assert suggested(result)[key] == value

    result = await hass.config_entries.options.async_configure(result["flow_id"], options_input())
    assert result["type"] is FlowResultType.CREATE_ENTRY


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (CONF_BATCH_SIZE, 0),
        (CONF_BATCH_SIZE, 5001),
        (CONF_LINGER_MS, -1),
        (CONF_LINGER_MS, 1001),
        (CONF_MAX_EVENTS, 999),
        (CONF_MAX_EVENTS, 10_000_001),
        (CONF_MAX_MEGABYTES, 0),
        (CONF_MAX_MEGABYTES, 10_001),
        (CONF_HEALTH_INTERVAL, 4),
        (CONF_HEALTH_INTERVAL, 3601),
        (CONF_PROBLEM_AFTER, 9),
        (CONF_PROBLEM_AFTER, 86_401),
        (CONF_DURABILITY, "sometimes"),
        (CONF_WEATHER_ENTITY, "sensor.outside"),
    ],
)
async def test_options_out_of_bounds(hass: HomeAssistant, key: str, value: Any) -> None:
    """The selectors refuse values outside their bounds before the step sees them."""
    entry = add_entry(hass, STORAGE_URL)
    result = await hass.config_entries.options.async_init(entry.entry_id)
    with pytest.raises(vol.Invalid) as raised:
        await hass.config_entries.options.async_configure(
            result["flow_id"], options_input(**{key: value})
        )
    # The refusal names the field, inside its section or not.
    path = [SECTION, key] if key in SECTION_FIELDS else [key]
    assert [str(part) for part in raised.value.path] == path
    assert entry.options == default_options()


# -- translations ------------------------------------------------------------------------


def test_options_translations() -> None:
    """Every option field, the section and every error has its text; the delivery tuning
    is labelled in the section (strings.json; en.json is the same, test_config_flow)."""
    strings = json.loads((INTEGRATION / "strings.json").read_text(encoding="utf-8"))
    options = strings["options"]

    init = options["step"]["init"]
    assert set(init["data"]) == set(init["data_description"]) == set(TOP_FIELDS)
    assert set(init["sections"]) == {SECTION}
    advanced = init["sections"][SECTION]
    assert advanced["name"] == "Advanced delivery"
    assert advanced["description"]
    assert set(advanced["data"]) == set(advanced["data_description"]) == set(SECTION_FIELDS)
    assert advanced["data"][CONF_PROBLEM_AFTER] == "Delivery problem after (seconds)"
    assert set(default_options()) == {*TOP_FIELDS, *SECTION_FIELDS}
    assert set(options["error"]) == {
        "no_event_types",
        "invalid_event_type",
        "invalid_domain",
        "invalid_glob",
        "not_whole_number",
    }
    assert set(strings["selector"]["durability"]["options"]) == {"always", "on_backlog"}
    assert set(strings["selector"]["event_types"]["options"]) == {
        *SUGGESTED_EVENT_TYPES,
        ALL_EVENTS_OPTION,
    }
