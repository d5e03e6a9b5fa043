"""signaling.file_links: signed, expiring download links."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest

from signaling.file_links import LINK_TTL_S, LinkError, LinkSigner, derive_key

NOW = 1_700_000_000


def split(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    return parts.path.rsplit("/", 1)[-1], dict(parse_qsl(parts.query))


def test_round_trip_and_fields() -> None:
    signer = LinkSigner(derive_key("server secret"))
    url, expires = signer.mint("ward", "f1", "alice", NOW, inline=True)
    assert url.startswith("/files/f1?") and expires == NOW + LINK_TTL_S
    file_id, query = split(url)
    link = signer.verify(file_id, query, NOW + LINK_TTL_S - 1)
    assert (link.room, link.file_id, link.identity, link.inline) == ("ward", "f1", "alice", True)


def code(signer: LinkSigner, file_id: str, query: dict[str, str], now: int) -> str:
    with pytest.raises(LinkError) as info:
        signer.verify(file_id, query, now)
    return info.value.code


def test_expiry_boundary() -> None:
    signer = LinkSigner(derive_key("s"))
    file_id, query = split(signer.mint("ward", "f1", "alice", NOW, ttl_s=5)[0])
    assert signer.verify(file_id, query, NOW + 4).expires_s == NOW + 5
    assert code(signer, file_id, query, NOW + 5) == "link-expired"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda q: {**q, "room": "other"},
        lambda q: {**q, "who": "mallory"},
        lambda q: {**q, "exp": str(int(q["exp"]) + 3600)},
        lambda q: {**q, "inline": "1"},
        lambda q: {**q, "sig": q["sig"][:-1] + ("A" if q["sig"][-1] != "A" else "B")},
        lambda q: {**q, "sig": "é"},
        lambda q: {k: v for k, v in q.items() if k != "sig"},
        lambda q: {**q, "exp": "soon"},
    ],
)
def test_tampered_links_are_invalid(tamper: object) -> None:
    signer = LinkSigner(derive_key("s"))
    file_id, query = split(signer.mint("ward", "f1", "alice", NOW)[0])
    assert code(signer, file_id, tamper(query), NOW) == "link-invalid"  # type: ignore[operator]
    # Another file id with the same query, or another server's key, is refused too.
    assert code(signer, "f2", query, NOW) == "link-invalid"
    assert code(LinkSigner(derive_key("t")), file_id, query, NOW) == "link-invalid"


def test_expired_and_tampered_is_invalid_not_expired() -> None:
    signer = LinkSigner(derive_key("s"))
    file_id, query = split(signer.mint("ward", "f1", "alice", NOW, ttl_s=1)[0])
    assert code(signer, file_id, {**query, "who": "bob"}, NOW + 100) == "link-invalid"


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError):
        LinkSigner(b"short")
