"""Repair issues: a service unreachable too long, the outbox dropping, dead letters piling up.

`async_update_issues` runs with every coordinator refresh (once a second). It only
compares a few figures of the snapshot and touches the issue registry when a condition
starts or ends, so it costs next to nothing while nothing changes:

- ``service_unreachable``: every URL of a service down for longer than
  `SERVICE_DOWN_AFTER`; cleared when the service answers again.
- ``outbox_dropping``: the outbox dropped its oldest events at its cap; cleared once the
  backlog is back under `CAP_CLEAR_RATIO` of both caps (so it stopped dropping).
- ``dead_letters``: more than `DEAD_LETTERS_THRESHOLD` dead letters; cleared when they
  are replayed or purged. Fixable: the fix flow (repairs.py) replays or purges them.

A refused API token is not an issue here: the runtime starts Home Assistant's reauth
flow, which shows its own repair. Going down and coming back are logged by the pipeline
(`ServiceRegistry` per URL, and the client's circuit breaker), so not again here.
Issues belong to their entry: they are deleted when it unloads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Final

from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import issue_registry as ir
from homeassistant.util import dt as dt_util
from homeassistant.util.hass_dict import HassKey

from .const import DOMAIN, SERVICE_ENRICHMENT, SERVICE_STORAGE

if TYPE_CHECKING:
    from .coordinator import IngestorConfigEntry, IngestorSnapshot, ServiceHealth

SERVICE_DOWN_AFTER: Final = timedelta(minutes=15)
DEAD_LETTERS_THRESHOLD: Final = 100
CAP_CLEAR_RATIO: Final = 0.9

ISSUE_SERVICE_UNREACHABLE: Final = "service_unreachable"
ISSUE_OUTBOX_DROPPING: Final = "outbox_dropping"
ISSUE_DEAD_LETTERS: Final = "dead_letters"

DATA_ISSUES: HassKey[dict[str, _EntryIssues]] = HassKey(f"{DOMAIN}_issues")


def service_issue_id(entry_id: str, service: str) -> str:
    return f"{ISSUE_SERVICE_UNREACHABLE}_{service}_{entry_id}"


def outbox_issue_id(entry_id: str) -> str:
    return f"{ISSUE_OUTBOX_DROPPING}_{entry_id}"


def dead_letters_issue_id(entry_id: str) -> str:
    return f"{ISSUE_DEAD_LETTERS}_{entry_id}"


def _all_issue_ids(entry_id: str) -> set[str]:
    return {
        service_issue_id(entry_id, SERVICE_STORAGE),
        service_issue_id(entry_id, SERVICE_ENRICHMENT),
        outbox_issue_id(entry_id),
        dead_letters_issue_id(entry_id),
    }


@dataclass(frozen=True, slots=True)
class _Issue:
    """An issue whose condition holds: what to create if it is not raised yet."""

    translation_key: str
    severity: ir.IssueSeverity
    placeholders: dict[str, str]
    fixable: bool = False


@dataclass(slots=True)
class _EntryIssues:
    """What one entry has raised, and what the outbox-drop condition remembers."""

    active: set[str] = field(default_factory=set)
    dropping: bool = False
    dropped_seen: int = 0


@callback
def async_update_issues(
    hass: HomeAssistant,
    entry: IngestorConfigEntry,
    snapshot: IngestorSnapshot,
) -> None:
    """Create the issues whose condition started and delete those whose condition ended."""
    issues = hass.data.setdefault(DATA_ISSUES, {})
    state = issues.get(entry.entry_id)
    first = state is None
    if state is None:
        state = issues[entry.entry_id] = _EntryIssues()
        entry.async_on_unload(partial(_async_clear_entry, hass, entry.entry_id))

    wanted: dict[str, _Issue] = {}
    now = dt_util.utcnow()
    for service in snapshot.services.values():
        if (
            not service.available
            and service.down_since is not None
            and now - service.down_since >= SERVICE_DOWN_AFTER
        ):
            wanted[service_issue_id(entry.entry_id, service.name)] = _service_issue(
                snapshot, service
            )
    if _outbox_dropping(state, snapshot):
        wanted[outbox_issue_id(entry.entry_id)] = _Issue(
            ISSUE_OUTBOX_DROPPING,
            ir.IssueSeverity.ERROR,
            {
                "dropped": str(snapshot.dropped),
                "max_events": str(snapshot.max_events),
                "max_megabytes": str(snapshot.max_megabytes),
            },
        )
    if snapshot.dead_letters > DEAD_LETTERS_THRESHOLD:
        wanted[dead_letters_issue_id(entry.entry_id)] = _Issue(
            ISSUE_DEAD_LETTERS,
            ir.IssueSeverity.WARNING,
            {"count": str(snapshot.dead_letters), "threshold": str(DEAD_LETTERS_THRESHOLD)},
            fixable=True,
        )
    for issue_id, issue in wanted.items():
        if issue_id not in state.active:
            _create(hass, entry, issue_id, issue)

    # The first time, also clear what an earlier run left behind.
    stale = (_all_issue_ids(entry.entry_id) if first else state.active) - wanted.keys()
    for issue_id in stale:
        ir.async_delete_issue(hass, DOMAIN, issue_id)
    state.active = set(wanted)


def _outbox_dropping(state: _EntryIssues, snapshot: IngestorSnapshot) -> bool:
    """Dropping from the moment the drop counter grows until the backlog is under the caps."""
    if snapshot.dropped > state.dropped_seen:
        state.dropping = True
    state.dropped_seen = snapshot.dropped  # also follows a reset when the outbox reopens
    if (
        state.dropping
        and snapshot.pending <= snapshot.max_events * CAP_CLEAR_RATIO
        and snapshot.pending_bytes <= snapshot.max_megabytes * 1024 * 1024 * CAP_CLEAR_RATIO
    ):
        state.dropping = False
    return state.dropping


def _service_issue(snapshot: IngestorSnapshot, service: ServiceHealth) -> _Issue:
    assert service.down_since is not None
    # Events still flow while only the enrichment is down and storage takes them directly.
    still_delivering = service.name == SERVICE_ENRICHMENT and snapshot.fallback_to_storage
    return _Issue(
        ISSUE_SERVICE_UNREACHABLE,
        ir.IssueSeverity.WARNING if still_delivering else ir.IssueSeverity.ERROR,
        {
            "service": service.name,
            "url": service.url,
            "since": dt_util.as_local(service.down_since).strftime("%Y-%m-%d %H:%M"),
            "minutes": str(int(SERVICE_DOWN_AFTER.total_seconds() // 60)),
        },
    )


def _create(hass: HomeAssistant, entry: IngestorConfigEntry, issue_id: str, issue: _Issue) -> None:
    ir.async_create_issue(
        hass,
        DOMAIN,
        issue_id,
        data={"entry_id": entry.entry_id},
        is_fixable=issue.fixable,
        is_persistent=False,
        severity=issue.severity,
        translation_key=issue.translation_key,
        translation_placeholders={"title": entry.title, **issue.placeholders},
    )


@callback
def _async_clear_entry(hass: HomeAssistant, entry_id: str) -> None:
    """The entry unloads: its issues say nothing any more."""
    state = hass.data.get(DATA_ISSUES, {}).pop(entry_id, None)
    if state is not None:
        for issue_id in state.active:
            ir.async_delete_issue(hass, DOMAIN, issue_id)


@callback
def async_forget_issue(hass: HomeAssistant, entry_id: str, issue_id: str) -> None:
    """A fix flow deleted the issue: raise it again if its condition still holds."""
    state = hass.data.get(DATA_ISSUES, {}).get(entry_id)
    if state is not None:
        state.active.discard(issue_id)
