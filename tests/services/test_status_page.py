"""The status page at ``/`` (web.py, status_page.py) around the small in-test service.

The real services' pages, with their dependencies failing, are tested in
tests/services/storage/test_status_page.py and tests/services/enrichment/.
"""

from __future__ import annotations

import aiohttp
import pytest

from ha_ingestor_services import status_page
from ha_ingestor_services.contract import DependencyHealth
from ha_ingestor_services.web import create_app

from .conftest import AUTH, TOKEN, Serve
from .status_page_checks import (
    assert_hides,
    assert_page_headers,
    assert_queries_never_fail,
    assert_shows,
    get_page,
)
from .test_web import RecordingService, assert_error


class PageService(RecordingService):
    """The in-test service, whose health check itself can raise."""

    def __init__(self) -> None:
        super().__init__()
        self.health_error: Exception | None = None

    async def health(self) -> dict[str, DependencyHealth]:
        if self.health_error is not None:
            raise self.health_error
        return await super().health()


@pytest.fixture
def service() -> PageService:
    return PageService()


@pytest.fixture
async def url(serve: Serve, service: PageService) -> str:
    return await serve(create_app(service, token=TOKEN))


async def test_page_is_open_html_with_the_headers(
    client: aiohttp.ClientSession, url: str, service: PageService
) -> None:
    status, headers, page = await get_page(client, url)
    assert status == 200
    assert_page_headers(headers)
    assert_shows(page, "test-service", "healthy", {"backend": "up"})
    assert_hides(page, TOKEN, "0.1.0")  # no token, no version
    # No script, nothing fetched from elsewhere.
    for needle in ("<script", "src=", "http://", "https://", "@import", "url("):
        assert needle not in page, needle
    # A token changes nothing: the page is the same for everyone.
    status, _, _ = await get_page(client, url, headers=AUTH)
    assert status == 200


async def test_head_answers_the_headers_without_a_body(
    client: aiohttp.ClientSession, url: str
) -> None:
    async with client.head(f"{url}/") as response:
        assert response.status == 200
        assert_page_headers(response.headers)
        assert await response.read() == b""


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
async def test_other_methods_are_405(client: aiohttp.ClientSession, url: str, method: str) -> None:
    async with client.request(method, f"{url}/", data=b"x") as response:
        assert response.status == 405
        assert set(response.headers["Allow"].split(",")) == {"GET", "HEAD"}
        assert_error(await response.json(), "METHOD_NOT_ALLOWED")


async def test_unknown_paths_still_need_the_token(client: aiohttp.ClientSession, url: str) -> None:
    """Opening ``/`` opened nothing else: other paths answer as before."""
    for path in ("/index.html", "//", "/api", "/api/v1/"):
        async with client.get(url + path) as answer:
            assert answer.status == 401, path
            assert_error(await answer.json(), "UNAUTHORIZED")
        async with client.get(url + path, headers=AUTH) as answer:
            assert answer.status == 404, path
            assert_error(await answer.json(), "NOT_FOUND")


@pytest.mark.parametrize(
    ("dependencies", "overall", "shown"),
    [
        ({"backend": DependencyHealth(True, "SQLite /data/x.db")}, "healthy", {"backend": "up"}),
        (
            {
                "backend": DependencyHealth(True, "/var/lib/events.db"),
                "weather": DependencyHealth(False, "timeout at https://example.test", False),
            },
            "degraded",
            {"backend": "up", "weather": "down"},
        ),
        (
            {"backend": DependencyHealth(False, "refused: http://10.0.0.9:8086")},
            "unhealthy",
            {"backend": "down"},
        ),
    ],
)
async def test_page_gives_the_health_verdict_without_details(
    client: aiohttp.ClientSession,
    url: str,
    service: PageService,
    dependencies: dict[str, DependencyHealth],
    overall: str,
    shown: dict[str, str],
) -> None:
    service.health_state = dependencies
    async with client.get(f"{url}/api/v1/health") as answer:
        assert (await answer.json())["status"] == overall
    status, _, page = await get_page(client, url)
    assert status == 200  # the page works whatever it shows; health's 503 is for monitors
    assert_shows(page, "test-service", overall, shown)
    assert_hides(page, *(dep.detail for dep in dependencies.values()))


async def test_a_failing_health_check_still_shows_a_page(
    client: aiohttp.ClientSession, url: str, service: PageService
) -> None:
    service.health_error = OSError("cannot open /secret/path")
    status, _, page = await get_page(client, url)
    assert status == 200
    assert_shows(page, "test-service", "unhealthy", {"self": "down"})
    assert_hides(page, "/secret/path", "OSError")


async def test_everything_on_the_page_is_escaped(
    client: aiohttp.ClientSession, url: str, service: PageService
) -> None:
    service.health_state = {'<script>alert("x")</script>': DependencyHealth(True)}
    _, _, page = await get_page(client, url)
    assert "<script" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    rendered = status_page.render('a"b<i>', "healthy", {"x&y": (False, True)}, "<now>")
    assert "<i>" not in rendered
    assert "a&quot;b&lt;i&gt;" in rendered
    assert "x&amp;y" in rendered
    assert "&lt;now&gt;" in rendered


def test_roles_name_the_services() -> None:
    assert status_page.role_of("data-storage") == "Data storage"
    assert status_page.role_of("enrichment-pipeline") == "Enrichment pipeline"
    assert status_page.role_of("other") == "other"


async def test_random_query_strings_never_fail(client: aiohttp.ClientSession, url: str) -> None:
    await assert_queries_never_fail(client, url)
