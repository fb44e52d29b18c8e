"""JSON answers and the one error body, for web.py and the services' own routes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from ha_ingestor_pipeline.envelope import error_response


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def error_body_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    *,
    correlation_id: str | None = None,
    retry_after: float | None = None,
) -> web.Response:
    headers: dict[str, str] = {}
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, round(retry_after)))
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="ha-ingestor"'
    return json_response(
        error_response(code, message, details, correlation_id), status=status, headers=headers
    )
