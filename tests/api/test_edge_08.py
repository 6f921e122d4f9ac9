"""The reference's 0.8 edge rules (docs/EDGE.md): deprecation headers on the legacy paths,
the admin allowlist by path and before authentication, the client address behind trusted
proxies, and CORS."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from structlog.testing import capture_logs

from stateset_sequencer.api.http import openapi_yaml
from stateset_sequencer.api.http.app import create_app
from stateset_sequencer.api.http.middleware import (
    DeprecationLog,
    is_admin_path,
    is_legacy_path,
    route_policy,
)
from stateset_sequencer.runtime import StartupError, start_services
from stateset_sequencer.runtime.edge import parse_cors_origins
from tests.api.conftest import ADMIN_KEY, BASE, Api, MakeApi, settings_for
from tests.api.test_auth import HEAD, apikey, auth_failure, stream_params

LEGACY_HEAD = "/api/v1/head"
DEPRECATION = {
    "deprecation": "true",
    "sunset": "Mon, 01 Mar 2027 00:00:00 GMT",
    "link": '</api/v1/ves/events/ingest>; rel="successor-version", '
    '</docs/openapi.yaml>; rel="help"',
}
DENIED = {"error": "admin access denied", "code": "ADMIN_IP_DENIED"}
ORIGIN = "https://app.example.com"


def assert_deprecated(response: httpx.Response) -> None:
    for name, value in DEPRECATION.items():
        assert response.headers.get(name) == value, (name, response.headers)


def assert_not_deprecated(response: httpx.Response) -> None:
    for name in ("deprecation", "sunset", "link"):
        assert name not in response.headers, (name, response.headers)


def client_from(api: Api, peer: str) -> httpx.AsyncClient:
    """Another client of the same services, arriving from ``peer``."""
    transport = httpx.ASGITransport(app=create_app(api.services), client=(peer, 40000))
    return httpx.AsyncClient(transport=transport, base_url=BASE)


# --- deprecation headers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/v1/events/ingest",
        "/api/v1/events/ingest",
        "/v1/events",
        "/v1/head",
        "/v1/commitments",
        "/v1/commitments/pending",
        "/v1/commitments/0b0e2d6e-0000-0000-0000-000000000001/anchored",
        "/api/v1/commitments/x/y",
        "/v1/proofs/1",
        "/api/v1/entities/order/o-1",
        "/v1/projections",
        "/api/v1/projections",
        "/v1/anchor/status",
        "/api/v1/anchor",
    ],
)
def test_legacy_paths(path: str) -> None:
    assert is_legacy_path(path)


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/ves/events/ingest",
        "/api/v1/ves/head",
        "/api/v1/ves/entities/order/o-1",
        "/api/v1/ves/commitments",
        "/v1/ves/proofs/1",
        "/api/v1/eventsx",
        "/api/v1/headers",
        "/apiv1/head",
        "/api/api/v1/head",
        "/health",
        "/v2/events",
        "",
    ],
)
def test_not_legacy_paths(path: str) -> None:
    assert not is_legacy_path(path)


async def test_legacy_routes_carry_the_deprecation_headers(sqlite_api: Api) -> None:
    api = sqlite_api
    ok = await api.client.get(LEGACY_HEAD, params=stream_params(), headers=api.headers())
    assert ok.status_code == 200, ok.text
    assert_deprecated(ok)
    assert ok.headers["x-request-id"] and ok.headers["x-content-type-options"] == "nosniff"
    events = await api.client.get("/api/v1/events", params=stream_params(), headers=api.headers())
    assert events.status_code == 200
    assert_deprecated(events)
    # Refusals and errors too: no credential, a bad query, a path no route serves.
    auth_failure(unauthenticated := await api.client.get(LEGACY_HEAD), 401, "missing_auth")
    assert_deprecated(unauthenticated)
    bad = await api.client.get(LEGACY_HEAD, params={"tenant_id": "x"}, headers=api.headers())
    assert bad.status_code == 400
    assert_deprecated(bad)
    for path in ("/v1/commitments/pending", "/api/v1/projections", "/v1/anchor/x/verify"):
        missing = await api.client.get(path, headers=api.headers())
        assert missing.status_code in (200, 404), (path, missing.text)
        assert_deprecated(missing)
    # The VES routes are the successors: no headers.
    current = await api.client.get(HEAD, params=stream_params(), headers=api.headers())
    assert current.status_code == 200
    assert_not_deprecated(current)
    assert_not_deprecated(await api.client.get("/health"))


async def test_each_legacy_call_is_logged_at_warn_level_bounded(sqlite_api: Api) -> None:
    api = sqlite_api
    with capture_logs() as logs:
        for _ in range(3):
            await api.client.get(LEGACY_HEAD, params=stream_params(), headers=api.headers())
        await api.client.get(HEAD, params=stream_params(), headers=api.headers())
    warnings = [e for e in logs if e["event"] == "deprecated legacy API called"]
    assert len(warnings) == 1  # one per route and minute, not one per call
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["route"] == LEGACY_HEAD and warnings[0]["calls"] == 1


def test_deprecation_log_counts_the_calls_it_stands_for() -> None:
    now = [0.0]
    journal = DeprecationLog(interval=60.0, clock=lambda: now[0])
    with capture_logs() as logs:
        assert journal.note("/api/v1/head", "GET", "/api/v1/head", "r1")
        assert not journal.note("/api/v1/head", "GET", "/api/v1/head", "r2")
        assert journal.note("/api/v1/events", "GET", "/api/v1/events", "r3")  # its own
        assert not journal.note("/api/v1/head", "GET", "/api/v1/head", "r4")
        now[0] = 60.0
        assert journal.note("/api/v1/head", "GET", "/api/v1/head", "r5")
    assert [(e["route"], e["calls"]) for e in logs] == [
        ("/api/v1/head", 1),
        ("/api/v1/events", 1),
        ("/api/v1/head", 3),
    ]


async def test_the_document_marks_the_legacy_operations_deprecated(sqlite_api: Api) -> None:
    document = (await sqlite_api.client.get("/openapi.json")).json()
    marked = set()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert bool(operation.get("deprecated")) == is_legacy_path(path), (path, method)
            if operation.get("deprecated"):
                marked.add(path)
    assert {"/api/v1/events", "/api/v1/head"} <= marked


async def test_the_help_link_serves_the_document_as_yaml(sqlite_api: Api) -> None:
    response = await sqlite_api.client.get("/docs/openapi.yaml")  # public, as /openapi.json
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/yaml")
    document = (await sqlite_api.client.get("/openapi.json")).json()
    assert json.loads(response.content) == document  # JSON is YAML 1.2
    yaml = pytest.importorskip("yaml")
    assert yaml.safe_load(response.text) == document


# --- ADMIN_IP_DENIED ------------------------------------------------------------------------

ADMIN_PROBES = [
    ("GET", "/metrics"),
    ("GET", "/health/detailed"),
    ("GET", "/admin"),
    ("GET", "/admin/"),
    ("GET", "/api/v1/admin"),
    ("GET", "/api/v1/admin/api-keys"),
    ("POST", "/api/v1/admin/api-keys"),
    ("DELETE", "/api/v1/admin/api-keys/abcdef12"),
    ("GET", "/api/v1/admin/no-such-route"),
    ("PUT", "/api/v1/admin/api-keys"),  # a method no route serves
]


def test_admin_paths() -> None:
    for _, path in ADMIN_PROBES:
        assert is_admin_path(path), path
    for path in ("/health", "/ready", "/api/v1/adminx", "/administrator", "/metrics/x", "/"):
        assert not is_admin_path(path), path


async def test_denied_address_gets_403_before_any_credential_is_read(make_api: MakeApi) -> None:
    api = await make_api("sqlite", ADMIN_IP_ALLOWLIST="10.9.9.9/32")
    bad_key = apikey("ss_" + "z" * 40)
    for method, path in ADMIN_PROBES:
        for headers in ({}, bad_key, api.headers()):
            response = await api.client.request(
                method, path, headers=headers, content=b"x" * 100_000
            )
            assert response.status_code == 403, (method, path, response.text)
            assert response.content == json.dumps(DENIED, separators=(",", ":")).encode()
            assert response.headers["x-error-code"] == "ADMIN_IP_DENIED"
    # The allowlist answered first: no refused credential was counted against the source.
    assert api.services.auth_failures.pending() == 0
    assert (
        await api.client.get(HEAD, params=stream_params(), headers=api.headers())
    ).status_code == 200


async def test_allowed_address_meets_the_routes_as_usual(make_api: MakeApi) -> None:
    api = await make_api("sqlite", ADMIN_IP_ALLOWLIST="127.0.0.0/8")
    assert (await api.client.get("/admin", headers=api.headers())).status_code == 404
    assert (await api.client.get("/api/v1/admin/nothing", headers=api.headers())).status_code == 404
    auth_failure(await api.client.get("/metrics"), 401, "missing_auth")
    assert (await api.client.get("/metrics", headers=api.headers())).status_code == 200


@pytest.mark.parametrize("empty", ["", " ", ",", " , ,"])
async def test_an_empty_allowlist_disables_the_check(make_api: MakeApi, empty: str) -> None:
    api = await make_api("sqlite", ADMIN_IP_ALLOWLIST=empty)
    assert api.services.admin_allowlist is None
    async with client_from(api, "198.51.100.1") as outsider:
        response = await outsider.get("/metrics", headers=api.headers())
    assert response.status_code == 200


@pytest.mark.parametrize(
    "entry",
    ["10.0.0.1/33", "not-an-ip", "10.0.0.1;10.0.0.2", "::1/129", "10.0.0", "1.2.3.4/8/8", "*"],
)
async def test_a_malformed_allowlist_entry_refuses_the_start(tmp_path: Path, entry: str) -> None:
    for setting in ("ADMIN_IP_ALLOWLIST", "TRUST_PROXY_ALLOWLIST"):
        folder = tmp_path / setting
        settings = settings_for(None, folder, **{setting: f"10.0.0.0/8, {entry}"})
        with pytest.raises(StartupError, match=setting) as info:
            await start_services(settings, announce=False)
        assert "IP address or CIDR" in str(info.value)
        assert not folder.exists()  # refused before anything was created


# --- the client address behind trusted proxies ----------------------------------------------

PROXIED = {
    "TRUST_PROXY_HEADERS": "true",
    "TRUST_PROXY_ALLOWLIST": "127.0.0.1/32, 10.0.0.0/8, fd00::/8",
    "ADMIN_IP_ALLOWLIST": "203.0.113.7/32, 2001:db8::/32",
}


async def admitted(
    api: Api, headers: dict[str, str], client: httpx.AsyncClient | None = None
) -> bool:
    response = await (client or api.client).get("/metrics", headers={**api.headers(), **headers})
    assert response.status_code in (200, 403), response.text
    return response.status_code == 200


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, False),  # the peer itself, 127.0.0.1
        ({"X-Forwarded-For": "203.0.113.7"}, True),
        ({"X-Forwarded-For": "203.0.113.7, 10.1.2.3"}, True),  # a trusted hop skipped
        ({"X-Forwarded-For": "203.0.113.7,10.1.2.3,10.4.5.6"}, True),
        # Spoofed entries on the left are the client's own words.
        ({"X-Forwarded-For": "203.0.113.7, 198.51.100.1"}, False),
        ({"X-Forwarded-For": "203.0.113.7, 198.51.100.1, 10.1.2.3"}, False),
        # Garbage ends the walk at the nearest address on its right (a trusted one here).
        ({"X-Forwarded-For": "not-an-ip"}, False),
        ({"X-Forwarded-For": "203.0.113.7, garbage"}, False),
        ({"X-Forwarded-For": "203.0.113.7, , 10.1.2.3"}, False),
        ({"X-Forwarded-For": "203.0.113.7/32"}, False),
        ({"X-Forwarded-For": "203.0.113.7:8080"}, True),
        ({"X-Forwarded-For": "  203.0.113.7  "}, True),
        ({"X-Forwarded-For": "2001:db8::1"}, True),
        ({"X-Forwarded-For": "[2001:db8::1]:443"}, True),
        ({"X-Forwarded-For": "2001:db8::1, fd00::5"}, True),
        ({"X-Forwarded-For": "::ffff:203.0.113.7"}, True),  # IPv4-mapped
        ({"X-Forwarded-For": "[2001:db8::1"}, False),
        ({"X-Forwarded-For": "2001:db8::1%eth0" + "x" * 80}, False),
        ({"X-Forwarded-For": "0x cb.0.113.7"}, False),
        ({"X-Real-IP": "203.0.113.7"}, True),
        ({"X-Real-IP": "203.0.113.7, 1.2.3.4"}, False),  # one address, not a list
        ({"Forwarded": "for=203.0.113.7;proto=https;by=10.0.0.1"}, True),
        ({"Forwarded": 'for="[2001:db8::1]:4711"'}, True),
        ({"Forwarded": "for=198.51.100.1, for=203.0.113.7"}, True),
        ({"Forwarded": "for=203.0.113.7, for=198.51.100.1"}, False),
        ({"Forwarded": "for=unknown"}, False),
        ({"Forwarded": "for=_hidden, for=10.0.0.9"}, False),
        ({"Forwarded": "proto=https"}, False),
        # X-Forwarded-For is read first when several are present.
        ({"X-Forwarded-For": "198.51.100.1", "Forwarded": "for=203.0.113.7"}, False),
    ],
)
async def test_forwarded_addresses_are_read_from_the_right(
    make_api: MakeApi, headers: dict[str, str], expected: bool
) -> None:
    api = await make_api("sqlite", **PROXIED)
    assert await admitted(api, headers) is expected


async def test_hostile_forwarded_chains(make_api: MakeApi) -> None:
    api = await make_api("sqlite", **PROXIED)
    # Very long, many hops: only the last hops are read.
    many = ", ".join(["198.51.100.1"] * 5000 + ["203.0.113.7"])
    assert await admitted(api, {"X-Forwarded-For": many})
    trusted_run = ", ".join(["203.0.113.7"] + ["10.0.0.1"] * 100)
    assert not await admitted(api, {"X-Forwarded-For": trusted_run})  # past the bound
    async with client_from(api, "127.0.0.1") as client:
        raw = [(b"authorization", f"ApiKey {ADMIN_KEY}".encode())]
        junk = b"," * 20_000 + "\u00e9\u00e9".encode() + b"\xff\x00"
        hostile = [*raw, (b"x-forwarded-for", junk)]
        assert (await client.get("/metrics", headers=hostile)).status_code == 403
        # Two header lines read as one list, in order.
        lines = [b"203.0.113.7", b"198.51.100.1"]
        first = [*raw, *((b"x-forwarded-for", line) for line in lines)]
        assert (await client.get("/metrics", headers=first)).status_code == 403
        second = [*raw, *((b"x-forwarded-for", line) for line in reversed(lines))]
        assert (await client.get("/metrics", headers=second)).status_code == 200


async def test_headers_from_an_untrusted_peer_are_ignored(make_api: MakeApi) -> None:
    api = await make_api("sqlite", **PROXIED)
    async with client_from(api, "198.51.100.9") as outsider:
        for headers in (
            {"X-Forwarded-For": "203.0.113.7"},
            {"X-Real-IP": "203.0.113.7"},
            {"Forwarded": "for=203.0.113.7"},
        ):
            assert not await admitted(api, headers, outsider)
    async with client_from(api, "203.0.113.7") as listed:
        assert await admitted(api, {"X-Forwarded-For": "198.51.100.1"}, listed)


async def test_headers_are_ignored_unless_trust_is_on(make_api: MakeApi) -> None:
    api = await make_api(
        "sqlite",
        TRUST_PROXY_ALLOWLIST="127.0.0.1/32",
        ADMIN_IP_ALLOWLIST="203.0.113.7/32",
    )
    assert not await admitted(api, {"X-Forwarded-For": "203.0.113.7"})


async def test_the_refusal_audit_names_the_forwarded_client(make_api: MakeApi) -> None:
    api = await make_api("sqlite", **{**PROXIED, "ADMIN_IP_ALLOWLIST": ""})
    bad = {**apikey("ss_" + "q" * 40), "X-Forwarded-For": "198.51.100.1, 203.0.113.50"}
    response = await api.client.get(HEAD, params=stream_params(), headers=bad)
    auth_failure(response, 401, "invalid_api_key")
    await api.services.auth_failures.flush()
    rows = await api.store.list_audit(action="auth.failure")
    assert [row.ip_address for row in rows] == ["203.0.113.50"]


@pytest.mark.parametrize("allowlist", ["", " ", ","])
async def test_trusting_proxy_headers_needs_an_allowlist(tmp_path: Path, allowlist: str) -> None:
    settings = settings_for(
        None, tmp_path / "d", TRUST_PROXY_HEADERS="true", TRUST_PROXY_ALLOWLIST=allowlist
    )
    with pytest.raises(StartupError, match="TRUST_PROXY_ALLOWLIST"):
        await start_services(settings, announce=False)
    assert not (tmp_path / "d").exists()


def test_no_proxy_is_trusted_by_default() -> None:
    assert settings_for(None, Path("unused")).TRUST_PROXY_ALLOWLIST == ""


# --- CORS -----------------------------------------------------------------------------------


def preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type",
    }


async def test_a_preflight_from_an_allowed_origin_needs_no_credential(make_api: MakeApi) -> None:
    api = await make_api(
        "sqlite",
        CORS_ALLOW_ORIGINS=f"{ORIGIN}, http://localhost:3000",
        ADMIN_IP_ALLOWLIST="10.9.9.9",
    )
    for path in ("/api/v1/ves/events/ingest", "/api/v1/admin/api-keys", LEGACY_HEAD):
        response = await api.client.options(
            path, headers={**preflight(ORIGIN), "Content-Length": str(10**12)}
        )
        assert response.status_code == 200, (path, response.text)
        assert response.headers["access-control-allow-origin"] == ORIGIN
        methods = {m.strip() for m in response.headers["access-control-allow-methods"].split(",")}
        assert methods == {"GET", "POST", "PUT", "DELETE", "OPTIONS"}
        allowed = response.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed and "content-type" in allowed
    local = await api.client.options(HEAD, headers=preflight("http://localhost:3000", "GET"))
    assert local.headers["access-control-allow-origin"] == "http://localhost:3000"


async def test_other_origins_get_no_cors_headers(make_api: MakeApi) -> None:
    api = await make_api("sqlite", CORS_ALLOW_ORIGINS=ORIGIN)
    for origin in ("https://evil.example.com", "http://app.example.com", f"{ORIGIN}:8443", "null"):
        response = await api.client.options(HEAD, headers=preflight(origin))
        assert response.status_code == 400, origin
        assert "access-control-allow-origin" not in response.headers
        simple = await api.client.get(
            HEAD, params=stream_params(), headers={**api.headers(), "Origin": origin}
        )
        assert simple.status_code == 200
        assert "access-control-allow-origin" not in simple.headers
    # A method or header outside the lists is refused too.
    wrong = await api.client.options(HEAD, headers=preflight(ORIGIN, "PATCH"))
    assert wrong.status_code == 400


async def test_an_allowed_origin_sees_the_exposed_headers(make_api: MakeApi) -> None:
    api = await make_api("sqlite", CORS_ALLOW_ORIGINS=ORIGIN)
    response = await api.client.get(HEAD, params=stream_params(), headers={"Origin": ORIGIN})
    auth_failure(response, 401, "missing_auth")  # CORS admits the browser, not the caller
    assert response.headers["access-control-allow-origin"] == ORIGIN
    exposed = {
        h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")
    }
    assert exposed == {"x-request-id", "x-error-code", "retry-after"}
    assert response.headers["x-request-id"]


async def test_cors_is_off_unless_configured(sqlite_api: Api) -> None:
    assert sqlite_api.services.cors_origins is None
    response = await sqlite_api.client.options(HEAD, headers=preflight(ORIGIN))
    assert response.status_code == 405
    assert "access-control-allow-origin" not in response.headers


async def test_any_origin_outside_production(make_api: MakeApi) -> None:
    api = await make_api("sqlite", CORS_ALLOW_ORIGINS="*")
    response = await api.client.options(HEAD, headers=preflight("https://anything.example"))
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("*", "refused in production"),
        ("https://a.example.com, *", "cannot be combined"),
        ("app.example.com", "not an origin"),
        ("https://app.example.com/", "not an origin"),
    ],
)
async def test_bad_cors_settings_refuse_the_start(tmp_path: Path, value: str, message: str) -> None:
    overrides: dict[str, Any] = {"CORS_ALLOW_ORIGINS": value}
    if value == "*":
        overrides["SEQUENCER_ENV"] = "production"
    settings = settings_for(None, tmp_path / "d", **overrides)
    with pytest.raises(StartupError, match="CORS_ALLOW_ORIGINS") as info:
        await start_services(settings, announce=False)
    assert message in str(info.value)
    assert not (tmp_path / "d").exists()


async def test_explicit_origins_serve_production(make_api: MakeApi) -> None:
    api = await make_api("sqlite", CORS_ALLOW_ORIGINS=ORIGIN, SEQUENCER_ENV="production")
    assert api.services.cors_origins == [ORIGIN]
    response = await api.client.options(HEAD, headers=preflight(ORIGIN))
    assert response.headers["access-control-allow-origin"] == ORIGIN


def test_the_yaml_text_reads_the_same_in_yaml_1_1_and_json() -> None:
    data: dict[str, Any] = {
        "floats": [1e-07, 1e16, 1.8446744073709552e19, 0.5, -2.0, 0.0],
        "ints": [0, -1, 2**64 - 1],
        "flags": [True, False, None],
        "words": ["on", "no", "~", "null", "1.0", "", "a: b", "# x", '\u2028\u00e9\u2026\t\n"\\'],
        "empty": [{}, []],
        "nested": {"a": {"b": [{"c": "d"}]}},
    }
    text = openapi_yaml.dumps(data)
    assert text.isascii()
    assert json.loads(text) == data
    yaml = pytest.importorskip("yaml")
    assert yaml.safe_load(text) == data
    with pytest.raises(ValueError, match="non-finite"):
        openapi_yaml.dumps({"x": float("nan")})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://app.example.com", ["https://app.example.com"]),
        ("HTTPS://App.Example.COM:443", ["https://app.example.com"]),
        (
            "http://localhost:80, http://localhost:3000",
            ["http://localhost", "http://localhost:3000"],
        ),
        ("https://a.example, https://a.example", ["https://a.example"]),
        ("http://127.0.0.1:8080", ["http://127.0.0.1:8080"]),
        ("http://[::1]:3000", ["http://[::1]:3000"]),
        ("http://[2001:DB8:0::1]", ["http://[2001:db8::1]"]),
        (" , ", None),
        ("", None),
    ],
)
def test_origins_are_read_as_browsers_send_them(value: str, expected: list[str] | None) -> None:
    assert parse_cors_origins(value, production=True) == expected


@pytest.mark.parametrize(
    "value",
    [
        "app.example.com",
        "https://app.example.com/",
        "https://app.example.com/path",
        "https://app.example.com?x=1",
        "https://app.example.com#f",
        "https://user@app.example.com",
        "ftp://app.example.com",
        "null",
        "https://",
        "https://:443",
        "https://app.example.com:0",
        "https://app.example.com:99999",
        "https://app.example.com:",
        "https://exa mple.com",
        "https://-bad-.example.com",
        "https://" + "a" * 64 + ".example.com",
        "https://[zz::1]",
        "https://[::1",
        "https://1.2.3",
        "https://caf\u00e9.example",
        "https://a.example.com\x00",
        "javascript://x",
    ],
)
def test_invalid_origins_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="CORS_ALLOW_ORIGINS"):
        parse_cors_origins(f"https://ok.example.com,{value}", production=False)


def test_star_is_for_development_only() -> None:
    assert parse_cors_origins("*", production=False) == ["*"]
    with pytest.raises(ValueError, match="refused in production"):
        parse_cors_origins(" * ", production=True)
    with pytest.raises(ValueError, match="at most"):
        parse_cors_origins(",".join(f"https://h{i}.example" for i in range(101)), production=False)


# --- secret files at start-up (the rules themselves: tests/unit/test_secret_files.py) -------


async def test_a_loose_secret_file_is_logged_at_start(tmp_path: Path) -> None:
    secret = tmp_path / "jwt"
    secret.write_text("j" * 40 + "\n")
    secret.chmod(0o644)
    settings = settings_for(None, tmp_path / "d", JWT_SECRET_FILE=str(secret))
    assert settings.JWT_SECRET == "j" * 40
    with capture_logs() as logs:
        services = await start_services(settings, announce=False)
    await services.close()
    warnings = [e for e in logs if e["event"] == "secret file readable by others"]
    assert len(warnings) == 1 and "chmod 600" in warnings[0]["detail"]
    assert "j" * 40 not in repr(logs)


async def test_the_guarded_routes_are_the_admin_paths(sqlite_api: Api) -> None:
    """The ``admin_ip_guard`` declarations and the path rule say the same thing."""
    app = create_app(sqlite_api.services)
    for route in iter_route_contexts(app.routes):
        if isinstance(route.original_route, APIRoute):
            policy = route_policy(route, sqlite_api.services.settings)
            assert policy.admin_ip_guard == is_admin_path(str(route.path)), route.path
