"""The outbox's logger, and a log that repeats one kind of problem at most once a minute."""

from __future__ import annotations

import logging
import time

# The package's logger (custom_components.ha_ingestor.pipeline.outbox), unless the
# Outbox is given another.
LOGGER = logging.getLogger(__name__.rpartition(".")[0])

_LOG_EVERY = 60.0  # seconds between repeated warnings of one kind


class RateLimitedLog:
    """Log one kind of problem at most once per interval, with a count of the rest."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(
        self, key: str, level: int, msg: str, *args: object, exc_info: BaseException | None = None
    ) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < _LOG_EVERY:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            msg += " (%d similar messages suppressed)"
            args = (*args, suppressed)
        self._logger.log(level, msg, *args, exc_info=exc_info)
