"""Checks of the status page at ``/`` that every service's tests share."""

from __future__ import annotations

from typing import Any

import aiohttp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDictProxy
from yarl import URL

# Printable ASCII but '#' (a fragment never reaches the server): '%' not followed by hex,
# '&', '=', ';' and '+' in any order, sent as they are.
_raw_query = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#"), max_size=40
)
# Any text, including non-ASCII, percent-encoded by the client.
_params = st.lists(
    st.tuples(st.text(st.characters(codec="utf-8"), max_size=12), st.text(max_size=12)),
    max_size=4,
)


def draw_queries(count: int) -> list[str]:
    """Raw query strings for ``/``, drawn deterministically up front."""
    drawn: list[str] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.one_of(_raw_query.map(lambda raw: ("raw", raw)), _params.map(lambda p: ("p", p))))
    def collect(case: tuple[str, Any]) -> None:
        kind, value = case
        drawn.append(value if kind == "raw" else URL("/").with_query(value).raw_query_string)

    collect()
    return drawn


async def get_page(
    client: aiohttp.ClientSession, url: str, **kwargs: Any
) -> tuple[int, CIMultiDictProxy[str], str]:
    async with client.get(f"{url}/", **kwargs) as response:
        return response.status, response.headers, await response.text()


def assert_page_headers(headers: CIMultiDictProxy[str]) -> None:
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Cache-Control"] == "no-store"
    assert headers["X-Content-Type-Options"] == "nosniff"
    policy = headers["Content-Security-Policy"]
    assert policy.startswith("default-src 'none'; style-src 'unsafe-inline'")
    assert "script-src" not in policy


def assert_shows(page: str, role: str, status: str, dependencies: dict[str, str]) -> None:
    """The role, the overall status and each dependency with up or down are on the page."""
    assert role in page
    assert f'<p class="verdict {status}">{status}</p>' in page
    for name, state in dependencies.items():
        assert f'<tr><td>{name}</td><td class="{state}">{state}</td>' in page
    assert '<meta http-equiv="refresh"' in page
    assert "/api/v1/health" in page
    assert "/api/v1/openapi.json" in page
    assert "Bearer" in page


def assert_hides(page: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret, "an empty secret proves nothing"
        assert secret not in page, secret


async def assert_queries_never_fail(client: aiohttp.ClientSession, url: str) -> None:
    """Random query strings on ``/``: the page, or a 4xx from the HTTP parser; never a 5xx."""
    answered = 0
    for query in draw_queries(60):
        async with client.get(URL(f"{url}/?{query}", encoded=True)) as response:
            assert response.status < 500, (query, await response.text())
            if response.status == 200:
                answered += 1
                assert "<!doctype html>" in await response.text()
    assert answered > 40  # most of them reached the page
