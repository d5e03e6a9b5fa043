"""Security headers on every kind of response: the page, a static file, the REST API, errors,
the WebSocket handshake and shared-file downloads (which carry their own sandboxing CSP).

The browser side (the page runs without a single CSP violation) is tests/browser/test_csp_ui.py.
"""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp
from test_files_e2e import ROOM, Served, auth, upload
from test_files_e2e import http as http  # noqa: F401  (fixtures, by these names)
from test_files_e2e import served as served  # noqa: F401

from signaling.app import CONTENT_SECURITY_POLICY, PERMISSIONS_POLICY

FILE_CSP = "default-src 'none'; sandbox"


def directives(policy: str) -> dict[str, list[str]]:
    parsed: dict[str, list[str]] = {}
    for part in policy.split(";"):
        name, *values = part.split()
        assert name not in parsed, f"{name} given twice in {policy!r}"
        parsed[name] = values
    return parsed


def assert_common(headers: Mapping[str, str]) -> None:
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Permissions-Policy"] == PERMISSIONS_POLICY
    assert len(headers.getall("Content-Security-Policy")) == 1  # type: ignore[attr-defined]


def assert_client_policy(headers: Mapping[str, str]) -> None:
    assert_common(headers)
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY


def test_the_client_policy_is_strict() -> None:
    policy = directives(CONTENT_SECURITY_POLICY)
    assert policy["default-src"] == ["'self'"]
    # Only our own files and WebAssembly compilation: no inline script, no eval.
    assert policy["script-src"] == ["'self'", "'wasm-unsafe-eval'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["connect-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"] and policy["base-uri"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert "mediastream:" in policy["media-src"]
    unsafe = [v for values in policy.values() for v in values if v in ("'unsafe-inline'", "*")]
    assert unsafe == []
    assert "geolocation=()" in PERMISSIONS_POLICY and "camera=(self)" in PERMISSIONS_POLICY


async def test_page_static_api_and_errors_carry_the_policy(
    served: Served,  # noqa: F811
    http: aiohttp.ClientSession,  # noqa: F811
) -> None:
    for path in ("/", "/static/app.js", "/static/vendor/sha256.umd.min.js", "/healthz"):
        async with http.get(served.url + path) as resp:
            assert resp.status == 200, path
            assert_client_policy(resp.headers)
    async with http.get(f"{served.url}/api/rooms/{ROOM}/files", headers=auth()) as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        assert_client_policy(resp.headers)
    # Raised errors too (aiohttp's own 404s and refusals), not only returned responses.
    for path in ("/static/missing.js", "/no-such-page"):
        async with http.get(served.url + path) as resp:
            assert resp.status == 404, path
            assert_client_policy(resp.headers)
    async with http.get(f"{served.url}/api/rooms/{ROOM}/files") as resp:
        assert resp.status == 401
        assert_client_policy(resp.headers)


async def test_websocket_handshake_carries_the_policy(
    served: Served,  # noqa: F811
    http: aiohttp.ClientSession,  # noqa: F811
) -> None:
    async with http.ws_connect(served.url + "/ws") as ws:
        assert ws._response.status == 101
        assert_client_policy(ws._response.headers)


async def test_downloads_are_sandboxed_and_keep_their_disposition(
    served: Served,  # noqa: F811
    http: aiohttp.ClientSession,  # noqa: F811
) -> None:
    # An image that is really a page with script: served inline it must not run on our origin.
    data = b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>"
    file_id = await upload(http, served, data, name="scan.png", type_="image/png")
    link_url = f"{served.url}/api/rooms/{ROOM}/files/{file_id}/link"
    for query, disposition, type_ in (
        ("", "attachment; ", "application/octet-stream"),
        ("?inline=1", "inline; ", "image/png"),
    ):
        async with http.post(link_url + query, headers=auth("bob")) as resp:
            assert resp.status == 200
            assert_client_policy(resp.headers)  # the link itself is an API answer
            url = served.url + (await resp.json())["url"]
        for headers in ({}, {"Range": "bytes=0-3"}):
            async with http.get(url, headers=headers) as resp:
                assert resp.status in (200, 206) and (await resp.read()) in (data, data[:4])
                assert resp.headers["Content-Disposition"].startswith(disposition)
                assert resp.headers["Content-Type"] == type_
                assert_common(resp.headers)
                assert resp.headers["Content-Security-Policy"] == FILE_CSP
    # A refused link (tampered) is an ordinary error page with the client policy.
    async with http.get(url.replace("sig=", "sig=x")) as resp:
        assert resp.status == 403
        assert_client_policy(resp.headers)
