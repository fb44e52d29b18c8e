"""From the event bus to the outbox: filter on the loop, encode on the outbox's thread.

The bus callback does only what must happen on the event loop: drop events of this
integration's own entities (no feedback loop), apply the user's entity filter, and hand
the `Event` object to the outbox (an O(1) append). Turning it into an envelope happens
later, on the outbox's worker thread, in `EventEncoder`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeIs

import orjson
from homeassistant.const import (
    ATTR_TEMPERATURE,
    EVENT_STATE_CHANGED,
    MATCH_ALL,
    UnitOfPressure,
    UnitOfTemperature,
)
from homeassistant.core import Event, HomeAssistant, State, callback
from homeassistant.helpers.entityfilter import EntityFilter
from homeassistant.util.unit_conversion import PressureConverter, TemperatureConverter

from .const import ALL_EVENTS
from .pipeline.envelope import (
    SOURCE,
    EncodedEvent,
    EnvelopeContext,
    EventValidator,
    Weather,
    new_event_id,
    state_event_id,
)

if TYPE_CHECKING:
    from .pipeline.outbox import Outbox


def _state_as_raw(state: State | None) -> dict[str, Any] | None:
    # Only what the envelope keeps; State.as_dict() would also build the bookkeeping.
    if state is None:
        return None
    return {"state": state.state, "attributes": state.attributes}


def _is_state(value: object) -> TypeIs[State | None]:
    return value is None or type(value) is State


_NO_CONTEXT = {"id": None, "user_id": None, "parent_id": None}


# A state change read back from the recorder (a backfill), for the outbox: entity id,
# state, attributes as JSON, last_updated (epoch seconds, the recorder's float), and the
# entity's previous state in the window when known. A plain tuple of text and numbers:
# the garbage collector stops tracking those, so a backfill's hundreds of thousands of
# waiting changes add nothing to its full passes (which then took up to half a second
# on the event loop). The recorder keeps no context: the envelope's context ids are null.
type RecordedChange = tuple[str, str, bytes, float, str | None]

# What the outbox holds before encoding: events from the bus, changes from the recorder.
type Captured = Event[Any] | RecordedChange


def _state_id(entity_id: str, updated_json: bytes, state: str) -> str:
    # updated_json is orjson's JSON text of the time, quotes included.
    return state_event_id(entity_id, updated_json[1:-1].decode(), state)


class EventEncoder:
    """Turns a Home Assistant `Event` into an encoded envelope (runs off the loop).

    ``context`` (instance, location, weather) is replaced as a whole by the loop when it
    changes; the worker thread only reads the reference, so no lock is needed.

    A ``state_changed`` event straight from the bus is valid by construction (a string
    entity id with a dot, `State` objects or None, a UTC ``time_fired``), so it is
    encoded directly: one dict and one orjson call, with the envelope context and the
    timestamp inserted as ready JSON fragments. Anything else (other event types, or an
    event that does not look like that) goes through `EventValidator`, which decides
    what is wrong with it. Both give the same bytes for the same event.
    """

    def __init__(self, validator: EventValidator) -> None:
        self.validator = validator
        # (the context, its JSON) as one reference, so the worker never sees a mix;
        # derived again whenever the validator's context is a different object.
        self._context_json = _context_json(validator.envelope_context)

    def set_context(self, context: EnvelopeContext) -> None:
        self.validator.envelope_context = context

    def __call__(self, event: Event[Any] | RecordedChange) -> EncodedEvent:
        if isinstance(event, tuple):
            return self._encode_recorded(event)
        if event.event_type == EVENT_STATE_CHANGED:
            encoded = self._encode_state_changed(event)
            if encoded is not None:
                return encoded
        return self._encode_generic(event)

    def _current_context_json(self) -> orjson.Fragment:
        context_of, context_json = self._context_json
        if context_of is not self.validator.envelope_context:
            context_of, context_json = self._context_json = _context_json(
                self.validator.envelope_context
            )
        return context_json

    def _encode_state_changed(self, event: Event[Any]) -> EncodedEvent | None:
        """The direct path; None when the event needs the validator's judgement."""
        data: Mapping[str, Any] = event.data
        entity_id = data.get("entity_id")
        new_state = data.get("new_state")
        old_state = data.get("old_state")
        time_fired = event.time_fired
        if not (
            type(entity_id) is str
            and "." in entity_id
            and _is_state(new_state)
            and _is_state(old_state)
            and time_fired.tzinfo is UTC
        ):
            return None
        context_json = self._current_context_json()
        context = event.context
        time_json = orjson.dumps(time_fired, option=orjson.OPT_UTC_Z)
        if new_state is None:
            event_id = new_event_id()
        else:
            # The id is derived from the change (state_event_id). last_updated is
            # time_fired for every change Home Assistant makes: formatted once then.
            updated_json = (
                time_json
                if new_state.last_updated_timestamp == event.time_fired_timestamp
                else orjson.dumps(new_state.last_updated, option=orjson.OPT_UTC_Z)
            )
            event_id = _state_id(entity_id, updated_json, new_state.state)
        # Keys in the order EventValidator.build writes them: the same bytes either way.
        return self.validator.serialize(
            event_id,
            {
                "event_id": event_id,
                "timestamp": orjson.Fragment(time_json),
                "source": SOURCE,
                "data": {
                    "event_type": EVENT_STATE_CHANGED,
                    "context": {
                        "id": context.id,
                        "user_id": context.user_id,
                        "parent_id": context.parent_id,
                    },
                    "entity_id": entity_id,
                    "state": None if new_state is None else new_state.state,
                    "attributes": {} if new_state is None else new_state.attributes,
                    "old_state": None if old_state is None else old_state.state,
                },
                "context": context_json,
            },
        )

    def _encode_recorded(self, change: RecordedChange) -> EncodedEvent:
        """A state change from the recorder: the envelope a live one gets, its id too."""
        entity_id, state, attributes, last_updated, old_state = change
        # The datetime Home Assistant makes of the same float (dt_util.utc_from_timestamp).
        time_json = orjson.dumps(
            datetime.fromtimestamp(last_updated, tz=UTC), option=orjson.OPT_UTC_Z
        )
        event_id = _state_id(entity_id, time_json, state)
        return self.validator.serialize(
            event_id,
            {
                "event_id": event_id,
                "timestamp": orjson.Fragment(time_json),
                "source": SOURCE,
                "data": {
                    "event_type": EVENT_STATE_CHANGED,
                    "context": _NO_CONTEXT,
                    "entity_id": entity_id,
                    "state": state,
                    "attributes": orjson.Fragment(attributes),
                    "old_state": old_state,
                },
                "context": self._current_context_json(),
            },
        )

    def _encode_generic(self, event: Event[Any]) -> EncodedEvent:
        data: Mapping[str, Any] = event.data
        event_id: str | None = None
        if event.event_type == EVENT_STATE_CHANGED:
            new_state = data.get("new_state")
            entity_id = data.get("entity_id")
            raw_data: dict[str, Any] = {
                "entity_id": entity_id,
                "new_state": _state_as_raw(new_state),
                "old_state": _state_as_raw(data.get("old_state")),
            }
            if isinstance(new_state, State) and isinstance(entity_id, str):
                updated_json = orjson.dumps(new_state.last_updated, option=orjson.OPT_UTC_Z)
                event_id = _state_id(entity_id, updated_json, str(new_state.state))
        else:
            raw_data = dict(data)
        context = event.context
        return self.validator.encode(
            {
                "event_type": event.event_type,
                "time_fired": event.time_fired,
                "context": {
                    "id": context.id,
                    "user_id": context.user_id,
                    "parent_id": context.parent_id,
                },
                "data": raw_data,
            },
            event_id,
        )


def _context_json(context: EnvelopeContext) -> tuple[EnvelopeContext, orjson.Fragment]:
    return context, orjson.Fragment(orjson.dumps(context, default=str))


def weather_from_state(state: State | None) -> Weather | None:
    """The weather entity's current conditions, in °C and hPa."""
    if state is None:
        return None
    attributes = state.attributes
    weather: Weather = {"entity_id": state.entity_id, "condition": state.state}
    temperature = _number(attributes.get(ATTR_TEMPERATURE))
    if temperature is not None:
        unit = attributes.get("temperature_unit", UnitOfTemperature.CELSIUS)
        weather["temperature_c"] = _convert(
            TemperatureConverter.convert, temperature, unit, UnitOfTemperature.CELSIUS
        )
    humidity = _number(attributes.get("humidity"))
    if humidity is not None:
        weather["humidity"] = humidity
    pressure = _number(attributes.get("pressure"))
    if pressure is not None:
        unit = attributes.get("pressure_unit", UnitOfPressure.HPA)
        weather["pressure_hpa"] = _convert(
            PressureConverter.convert, pressure, unit, UnitOfPressure.HPA
        )
    return weather


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _convert(
    converter: Callable[[float, str | None, str | None], float],
    value: float,
    unit: object,
    target: str,
) -> float | None:
    try:
        return round(converter(value, str(unit), target), 2)
    except Exception:  # an exotic unit: better no figure than a wrong one
        return None


class EventListener:
    """Subscribes to the chosen event types and hands matching events to the outbox."""

    def __init__(
        self,
        hass: HomeAssistant,
        outbox: Outbox[Captured],
        own_entities: set[str],
    ) -> None:
        self._hass = hass
        self._outbox = outbox
        self._own_entities = own_entities
        self._filter: Callable[[str], bool] | None = None
        self._unsubscribers: list[Callable[[], None]] = []
        self._held: list[Captured] | None = None
        self.event_types: tuple[str, ...] = ()
        # When (time_fired, epoch seconds) the last event was captured; the gap fill
        # starts there next time (backfill.py). A float write per event, nothing more.
        self.last_captured: float | None = None

    @callback
    def subscribe(self, event_types: list[str], entity_filter: EntityFilter) -> None:
        """(Re)subscribe at once: old and new never overlap, so no event is taken twice."""
        self.unsubscribe()
        self._filter = None if entity_filter.empty_filter else entity_filter.get_filter()
        types = [MATCH_ALL] if ALL_EVENTS in event_types else list(dict.fromkeys(event_types))
        self.event_types = tuple(types)
        for event_type in types:
            self._unsubscribers.append(self._hass.bus.async_listen(event_type, self._handle))

    @callback
    def unsubscribe(self) -> None:
        while self._unsubscribers:
            self._unsubscribers.pop()()

    @callback
    def hold(self) -> None:
        """Keep events in memory while the outbox is being replaced."""
        if self._held is None:
            self._held = []

    @callback
    def release_to(self, outbox: Outbox[Captured]) -> None:
        """Hand held events, then every new one, to ``outbox``."""
        held, self._held = self._held, None
        self._outbox = outbox
        if held:
            outbox.append_many(held)

    @property
    def own_entities(self) -> set[str]:
        return self._own_entities

    @property
    def subscribed(self) -> bool:
        return bool(self._unsubscribers)

    @callback
    def hand_over(self, items: Iterable[Captured]) -> None:
        """Queue items that did not come from the bus (a backfill) behind what is queued."""
        if self._held is not None:
            self._held.extend(items)
        else:
            self._outbox.append_many(items)

    @callback
    def _handle(self, event: Event[Any]) -> None:
        entity_id = event.data.get("entity_id")
        if isinstance(entity_id, str):
            if entity_id in self._own_entities:
                return
            if self._filter is not None and not self._filter(entity_id):
                return
        self.last_captured = event.time_fired_timestamp
        if self._held is not None:
            self._held.append(event)
        else:
            self._outbox.append(event)
