"""What a newcomer meets first: /docs offline, the credential schemes in the document,
HEAD on the probes, and 404/405 answers in the documented error shape."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from stateset_sequencer.api.http.app import CREDENTIALS, SECURITY_SCHEMES
from tests.api.conftest import Api
from tests.api.test_auth import api_error

PUBLIC_OPERATIONS = {
    ("/health", "get"),
    ("/health", "head"),
    ("/ready", "get"),
    ("/ready", "head"),
    ("/api/v1/agents/register", "post"),
}


class Links(HTMLParser):
    """Every URL a page loads: src and href attributes, and url: in inline scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self._script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._script = tag == "script"
        self.urls.extend(v for k, v in attrs if k in ("src", "href") and v)

    def handle_data(self, data: str) -> None:
        if self._script:
            self.urls.extend(re.findall(r"url:\s*'([^']*)'", data))


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_doc_pages_load_only_local_assets(sqlite_api: Api, page: str) -> None:
    response = await sqlite_api.client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    links = Links()
    links.feed(html)
    assets = [u for u in links.urls if u != "/openapi.json"]
    assert assets, html
    for url in links.urls:
        assert url.startswith("/") and not url.startswith("//"), url
    for url in assets:
        asset = await sqlite_api.client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 1000, url  # the real file, not an error page


async def test_a_missing_asset_is_a_documented_404(sqlite_api: Api) -> None:
    api_error(
        await sqlite_api.client.get("/docs/assets/nothing.js"),
        404,
        "RESOURCE_NOT_FOUND",
        "ROUTE_NOT_FOUND",
    )


async def test_the_document_declares_the_schemes_and_each_operations_security(
    sqlite_api: Api,
) -> None:
    document = (await sqlite_api.client.get("/openapi.json")).json()
    schemes = document["components"]["securitySchemes"]
    assert schemes == SECURITY_SCHEMES
    assert {(s["type"], s.get("in"), s.get("name"), s.get("scheme")) for s in schemes.values()} == {
        ("apiKey", "header", "Authorization", None),
        ("apiKey", "header", "X-API-Key", None),
        ("http", None, None, "bearer"),
    }
    for path, item in document["paths"].items():
        for method, operation in item.items():
            expected = [] if (path, method) in PUBLIC_OPERATIONS else CREDENTIALS
            assert operation.get("security") == expected, (path, method)


@pytest.mark.parametrize("path", ["/health", "/ready"])
async def test_head_on_the_probes_answers_like_get_without_a_body(
    sqlite_api: Api, path: str
) -> None:
    get = await sqlite_api.client.get(path)
    head = await sqlite_api.client.head(path)
    assert (get.status_code, head.status_code) == (200, 200)
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    assert int(head.headers["content-length"]) > 0


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/health", "GET, HEAD"),
        ("DELETE", "/api/v1/schemas", "GET, POST"),
        # Two routes share the path: Allow names the methods of both.
        ("PUT", "/api/v1/agents/keys", "GET, POST"),
    ],
)
async def test_405_names_the_allowed_methods(
    sqlite_api: Api, method: str, path: str, allow: str
) -> None:
    response = await sqlite_api.client.request(method, path, headers=sqlite_api.headers())
    api_error(response, 405, "INVALID_REQUEST_BODY", "METHOD_NOT_ALLOWED")
    assert response.headers["allow"] == allow
    details = response.json()["error"]["details"]
    assert details == {
        "reason": "METHOD_NOT_ALLOWED",
        "path": path,
        "method": method,
        "allow": allow.split(", "),
    }


async def test_unknown_route_has_the_documented_details(sqlite_api: Api) -> None:
    response = await sqlite_api.client.get("/api/v1/nothing/here")
    api_error(response, 404, "RESOURCE_NOT_FOUND", "ROUTE_NOT_FOUND")
    error = response.json()["error"]
    assert error["details"] == {"reason": "ROUTE_NOT_FOUND", "path": "/api/v1/nothing/here"}
    assert error["request_id"] == response.headers["x-request-id"]


async def test_an_unknown_path_is_echoed_as_storable_bounded_text(sqlite_api: Api) -> None:
    response = await sqlite_api.client.get("/" + "%00" + "a" * 500)
    api_error(response, 404, "RESOURCE_NOT_FOUND", "ROUTE_NOT_FOUND")
    shown = response.json()["error"]["details"]["path"]
    assert "\x00" not in shown and len(shown.encode()) <= 200
