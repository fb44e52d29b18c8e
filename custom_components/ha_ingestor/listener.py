"""From the event bus to the outbox: filter on the loop, encode on the outbox's thread.

The bus callback does only what must happen on the event loop: drop events of this
integration's own entities (no feedback loop), apply the user's entity filter, and hand
the `Event` object to the outbox (an O(1) append). Turning it into an envelope happens
later, on the outbox's worker thread, in `EventEncoder`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC
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

    def __call__(self, event: Event[Any]) -> EncodedEvent:
        if event.event_type == EVENT_STATE_CHANGED:
            encoded = self._encode_state_changed(event)
            if encoded is not None:
                return encoded
        return self._encode_generic(event)

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
        context_of, context_json = self._context_json
        if context_of is not self.validator.envelope_context:
            context_of, context_json = self._context_json = _context_json(
                self.validator.envelope_context
            )
        context = event.context
        event_id = new_event_id()
        # Keys in the order EventValidator.build writes them: the same bytes either way.
        return self.validator.serialize(
            event_id,
            {
                "event_id": event_id,
                "timestamp": orjson.Fragment(orjson.dumps(time_fired, option=orjson.OPT_UTC_Z)),
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

    def _encode_generic(self, event: Event[Any]) -> EncodedEvent:
        data: Mapping[str, Any] = event.data
        if event.event_type == EVENT_STATE_CHANGED:
            raw_data: dict[str, Any] = {
                "entity_id": data.get("entity_id"),
                "new_state": _state_as_raw(data.get("new_state")),
                "old_state": _state_as_raw(data.get("old_state")),
            }
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
            }
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
        outbox: Outbox[Event[Any]],
        own_entities: set[str],
    ) -> None:
        self._hass = hass
        self._outbox = outbox
        self._own_entities = own_entities
        self._filter: Callable[[str], bool] | None = None
        self._unsubscribers: list[Callable[[], None]] = []
        self._held: list[Event[Any]] | None = None
        self.event_types: tuple[str, ...] = ()

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
    def release_to(self, outbox: Outbox[Event[Any]]) -> None:
        """Hand held events, then every new one, to ``outbox``."""
        held, self._held = self._held, None
        self._outbox = outbox
        if held:
            outbox.append_many(held)

    @callback
    def _handle(self, event: Event[Any]) -> None:
        entity_id = event.data.get("entity_id")
        if isinstance(entity_id, str):
            if entity_id in self._own_entities:
                return
            if self._filter is not None and not self._filter(entity_id):
                return
        if self._held is not None:
            self._held.append(event)
        else:
            self._outbox.append(event)
