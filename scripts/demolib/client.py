"""HTTP calls of the demo (standard library only: it also runs before anything is up)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


def http_get(url: str, token: str | None = None, timeout: float = 3.0) -> tuple[int, Any]:
    """Status and decoded JSON body (None when not JSON) of a GET; OSError when unreachable."""
    return _call(urllib.request.Request(url), token, timeout)


def http_post(
    url: str,
    *,
    json_body: Any = None,
    form: dict[str, str] | None = None,
    token: str | None = None,
    timeout: float = 30.0,
) -> tuple[int, Any]:
    """A POST with a JSON or form body; as `http_get` otherwise."""
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        content_type = "application/x-www-form-urlencoded"
    else:
        data = json.dumps(json_body if json_body is not None else {}).encode()
        content_type = "application/json"
    request = urllib.request.Request(url, data=data, method="POST")
    request.add_header("Content-Type", content_type)
    return _call(request, token, timeout)


def _call(request: urllib.request.Request, token: str | None, timeout: float) -> tuple[int, Any]:
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, body = err.code, err.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None
