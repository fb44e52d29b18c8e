"""The repairs platform: the fix flow of the dead letters issue (replay or purge them).

The issues themselves are raised and cleared in issues.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from homeassistant.components.repairs import ConfirmRepairFlow, RepairsFlow
from homeassistant.config_entries import ConfigEntryState
from homeassistant.helpers import issue_registry as ir

from .issues import ISSUE_DEAD_LETTERS, async_forget_issue

if TYPE_CHECKING:
    from homeassistant.core import HomeAssistant
    from homeassistant.data_entry_flow import FlowResult

    from .coordinator import IngestorConfigEntry


class DeadLettersRepairFlow(RepairsFlow):
    """Replay or purge every dead letter of one entry."""

    def __init__(self, entry_id: str) -> None:
        self._entry_id = entry_id

    async def async_step_init(self, user_input: dict[str, str] | None = None) -> FlowResult:
        issue = ir.async_get(self.hass).async_get_issue(self.handler, self.issue_id)
        # The `unused-ignore` marks: types that differ between the supported Home Assistant
        # releases (docs/ARCHITECTURE.md, "Supported Home Assistant releases").
        return self.async_show_menu(  # type: ignore[return-value, unused-ignore]
            step_id="init",
            menu_options=["replay", "purge"],
            description_placeholders=issue.translation_placeholders if issue else None,
        )

    async def async_step_replay(self, user_input: dict[str, str] | None = None) -> FlowResult:
        return await self._async_act(replay=True)

    async def async_step_purge(self, user_input: dict[str, str] | None = None) -> FlowResult:
        return await self._async_act(replay=False)

    async def _async_act(self, *, replay: bool) -> FlowResult:
        entry: IngestorConfigEntry | None = self.hass.config_entries.async_get_entry(self._entry_id)
        if entry is None or entry.state is not ConfigEntryState.LOADED:
            return self.async_abort(reason="entry_not_loaded")  # type: ignore[return-value, unused-ignore]
        outbox = entry.runtime_data.runtime.outbox
        if replay:
            await outbox.replay_dead_letters()
        else:
            await outbox.purge_dead_letters()
        async_forget_issue(self.hass, self._entry_id, self.issue_id)
        await entry.runtime_data.coordinator.async_refresh()
        return self.async_create_entry(data={})  # type: ignore[return-value, unused-ignore]


async def async_create_fix_flow(
    hass: HomeAssistant,
    issue_id: str,
    data: dict[str, str | int | float | None] | None,
) -> RepairsFlow:
    """The fix flow of a fixable issue (only the dead letters issue is)."""
    entry_id = (data or {}).get("entry_id")
    if issue_id.startswith(ISSUE_DEAD_LETTERS) and isinstance(entry_id, str):
        return DeadLettersRepairFlow(entry_id)
    return ConfirmRepairFlow()
