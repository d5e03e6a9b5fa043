"""Signed, expiring download links for shared files (pure core).

A link names the room, the file, the participant it was minted for, when it expires and
whether it opens inline; an HMAC-SHA256 over exactly those values proves the server minted
it. The browser can then fetch the file with a plain GET (an <a href>, a video element), which
cannot carry an Authorization header. The server still checks at download time that the
participant has not been removed and the room has not ended.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlencode

LINK_TTL_S = 600
_CONTEXT = b"consilium file links v1"

LinkErrorCode = Literal["link-invalid", "link-expired"]


class LinkError(Exception):
    def __init__(self, code: LinkErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code: LinkErrorCode = code
        self.message = message


@dataclass(frozen=True, slots=True)
class DownloadLink:
    room: str
    file_id: str
    identity: str
    expires_s: int
    inline: bool

    def query(self, signature: str) -> dict[str, str]:
        q = {"room": self.room, "who": self.identity, "exp": str(self.expires_s)}
        if self.inline:
            q["inline"] = "1"
        q["sig"] = signature
        return q


def derive_key(secret: str) -> bytes:
    """A key for links only, so a link signature is never also a token signature."""
    return hmac.new(secret.encode("utf-8"), _CONTEXT, hashlib.sha256).digest()


class LinkSigner:
    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the link key must have at least 128 bits")
        self._key = key

    def _signature(self, link: DownloadLink) -> str:
        # JSON of a list: unambiguous whatever characters an identity holds.
        message = json.dumps(
            [link.room, link.file_id, link.identity, link.expires_s, link.inline],
            separators=(",", ":"),
        ).encode("utf-8")
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def mint(
        self,
        room: str,
        file_id: str,
        identity: str,
        now_s: int,
        ttl_s: int = LINK_TTL_S,
        inline: bool = False,
    ) -> tuple[str, int]:
        """The URL (path and query) and its expiry in unix seconds."""
        link = DownloadLink(room, file_id, identity, now_s + ttl_s, inline)
        return f"/files/{file_id}?{urlencode(link.query(self._signature(link)))}", link.expires_s

    def verify(self, file_id: str, query: Mapping[str, str], now_s: int) -> DownloadLink:
        """The link the query carries, or LinkError (checked signature first, then expiry)."""
        try:
            expires_s = int(query["exp"])
            link = DownloadLink(
                room=query["room"],
                file_id=file_id,
                identity=query["who"],
                expires_s=expires_s,
                inline=query.get("inline", "0") == "1",
            )
            presented = query["sig"]
        except (KeyError, ValueError):
            raise LinkError("link-invalid", "this download link is incomplete") from None
        expected = self._signature(link)
        if not hmac.compare_digest(presented.encode("utf-8"), expected.encode("ascii")):
            raise LinkError("link-invalid", "this download link is not valid")
        if now_s >= link.expires_s:
            raise LinkError("link-expired", "this download link has expired; ask for a new one")
        return link
