"""Test set-up shared by every suite.

The Home Assistant test harness mounts its own ``custom_components`` package; importing
ours first makes Home Assistant find this repository's integration.
"""

from __future__ import annotations

import custom_components.ha_ingestor  # noqa: F401
