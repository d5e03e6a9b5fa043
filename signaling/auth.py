"""Access tokens and roles: the pure core behind every "may this person do that?" question.

Nothing here touches the network or the clock: callers pass ``now_s`` (unix seconds), so tests
control time and the same code serves the REST API, the WebSocket join and the CLI.

Tokens are HS256 JWTs signed with the server secret (claims in the shared contract). Only the
signature check is delegated to PyJWT; every claim is checked here so that each failure maps to
exactly one contract error code with a message a human can act on.
"""

from __future__ import annotations

import hmac
import re
import secrets
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final, Literal, TypeGuard

import jwt

__all__ = [
    "MAX_IDENTITY_CHARS",
    "MAX_NAME_CHARS",
    "MAX_TOKEN_CHARS",
    "MAX_TTL_S",
    "ROLE_PERMISSIONS",
    "ROOM_ID_PATTERN",
    "Grant",
    "Permission",
    "Role",
    "TokenAuthority",
    "TokenError",
    "TokenErrorCode",
    "check_api_key",
    "generate_secret",
    "is_valid_role",
    "is_valid_room_id",
    "new_identity",
    "sanitize_name",
]


class Role(StrEnum):
    HOST = "host"
    SPECIALIST = "specialist"
    BEDSIDE = "bedside"
    OBSERVER = "observer"


class Permission(StrEnum):
    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"
    ADMIN = "admin"
    RECORD = "record"  # start/stop recording the consultation
    CHAT = "chat"  # post chat messages and share files (everyone may read)


# Read-only so no caller can widen a role at run time.
ROLE_PERMISSIONS: Final[Mapping[Role, frozenset[Permission]]] = MappingProxyType(
    {
        Role.HOST: frozenset(
            {
                Permission.PUBLISH,
                Permission.SUBSCRIBE,
                Permission.ADMIN,
                Permission.RECORD,
                Permission.CHAT,
            }
        ),
        Role.SPECIALIST: frozenset({Permission.PUBLISH, Permission.SUBSCRIBE, Permission.CHAT}),
        Role.BEDSIDE: frozenset({Permission.PUBLISH, Permission.SUBSCRIBE, Permission.CHAT}),
        Role.OBSERVER: frozenset({Permission.SUBSCRIBE}),
    }
)

ROOM_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_IDENTITY_CHARS: Final = 64
MAX_NAME_CHARS: Final = 80
# A JWT we mint is a few hundred characters; refusing huge strings early keeps a hostile client
# from making us base64-decode and HMAC megabytes.
MAX_TOKEN_CHARS: Final = 4096
# Consultations last hours, not weeks; a leaked long-lived token is the bigger risk.
MAX_TTL_S: Final = 7 * 24 * 3600

_ALGORITHM: Final = "HS256"
_ROLE_VALUES: Final = frozenset(r.value for r in Role)

TokenErrorCode = Literal["token-missing", "token-invalid", "token-expired", "token-wrong-room"]


class TokenError(Exception):
    """A token was refused. ``code`` is a contract error code, ``message`` is for humans."""

    def __init__(self, code: TokenErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code: TokenErrorCode = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token allows: one identity, in one room, until ``expires_at``."""

    room: str
    identity: str
    name: str
    role: Role
    permissions: frozenset[Permission]
    expires_at: int

    def can(self, permission: Permission) -> bool:
        return permission in self.permissions

    def with_role(self, role: Role) -> Grant:
        """This grant as if the token had named that role (the host changed it in the room)."""
        return replace(self, role=role, permissions=ROLE_PERMISSIONS[role])


def is_valid_role(role: object) -> TypeGuard[str]:
    return isinstance(role, str) and role in _ROLE_VALUES


def is_valid_room_id(room: object) -> bool:
    return isinstance(room, str) and ROOM_ID_PATTERN.fullmatch(room) is not None


# Bidi embedding/override/isolate marks let a name render as something it is not ("Dr. X"
# reading backwards), so they go together with the C0/C1 control characters.
_BIDI_CONTROLS: Final = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _is_unsafe_char(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Cs") or ch in _BIDI_CONTROLS


def sanitize_name(name: str) -> str:
    """Display name as shown to others: control characters dropped, whitespace collapsed, trimmed.

    Tabs/newlines become a space first so "Dr.\\nSmith" reads "Dr. Smith", not "Dr.Smith".
    """
    spaced = "".join(" " if ch in "\t\n\r\v\f" else ch for ch in name)
    cleaned = "".join(ch for ch in spaced if not _is_unsafe_char(ch))
    return " ".join(cleaned.split())


def _identity_problem(identity: object) -> str | None:
    if not isinstance(identity, str) or not identity:
        return "identity must be a non-empty string"
    if len(identity) > MAX_IDENTITY_CHARS:
        return f"identity is longer than {MAX_IDENTITY_CHARS} characters"
    if identity != identity.strip() or any(_is_unsafe_char(ch) for ch in identity):
        # The identity is the participant id other clients see and the REST path segment.
        return "identity must not contain control characters or surrounding whitespace"
    return None


def new_identity() -> str:
    """A short random participant id (72 bits, url-safe)."""
    return secrets.token_urlsafe(9)


def generate_secret() -> str:
    """A fresh signing secret (256 bits, url-safe), e.g. for dev mode."""
    return secrets.token_urlsafe(32)


def check_api_key(header_value: str | None, api_key: str | None) -> bool:
    """True when the ``Authorization`` header carries ``Bearer <api_key>``.

    No api key configured means the REST API is open (dev mode), hence True.
    """
    if not api_key:
        return True
    if not header_value:
        return False
    scheme, _, presented = header_value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    # Bytes, because compare_digest refuses non-ASCII str; constant time against guessing.
    return hmac.compare_digest(presented.strip().encode("utf-8"), api_key.encode("utf-8"))


def _coerce_role(role: Role | str) -> Role:
    try:
        return Role(role)
    except ValueError:
        allowed = ", ".join(r.value for r in Role)
        raise ValueError(f"unknown role {role!r}; expected one of: {allowed}") from None


class TokenAuthority:
    """Mints and verifies tokens for one server secret."""

    def __init__(
        self,
        secret: str,
        issuer: str = "consilium",
        default_ttl_s: int = 3600,
        leeway_s: int = 5,
    ) -> None:
        if not secret:
            raise ValueError("secret must not be empty")
        if not 0 < default_ttl_s <= MAX_TTL_S:
            raise ValueError(f"default_ttl_s must be in 1..{MAX_TTL_S}")
        if leeway_s < 0:
            raise ValueError("leeway_s must not be negative")
        self._key = secret.encode("utf-8")
        self.issuer = issuer
        self.default_ttl_s = default_ttl_s
        self.leeway_s = leeway_s

    # -- minting ---------------------------------------------------------------------------

    def issue(
        self,
        *,
        room: str,
        identity: str | None,
        name: str,
        role: Role | str,
        permissions: Iterable[Permission | str] | None = None,
        ttl_s: int | None = None,
        now_s: int,
    ) -> tuple[str, Grant]:
        """Like :meth:`mint` but also returns the Grant the token carries (for ``expiresAt``).

        ``identity=None`` picks a fresh random identity.
        """
        if not is_valid_room_id(room):
            raise ValueError("room id must match [A-Za-z0-9_-]{1,64}")
        if identity is None:
            identity = new_identity()
        problem = _identity_problem(identity)
        if problem:
            raise ValueError(problem)
        if not isinstance(name, str):
            raise ValueError("name must be a string")
        clean_name = sanitize_name(name)
        if len(clean_name) > MAX_NAME_CHARS:
            raise ValueError(f"name is longer than {MAX_NAME_CHARS} characters")
        the_role = _coerce_role(role)
        allowed = ROLE_PERMISSIONS[the_role]
        if permissions is None:
            granted = allowed
        else:
            if isinstance(permissions, str):
                # A bare "publish" would otherwise be iterated letter by letter.
                raise ValueError("permissions must be a list of permission names")
            try:
                granted = frozenset(Permission(p) for p in permissions)
            except ValueError:
                names = ", ".join(p.value for p in Permission)
                raise ValueError(f"unknown permission; expected some of: {names}") from None
            # Refuse rather than silently drop, so an API caller learns the token is narrower
            # than asked (verify would intersect anyway).
            excess = granted - allowed
            if excess:
                listed = ", ".join(sorted(excess))
                raise ValueError(f"role {the_role.value} cannot have permission(s): {listed}")
        ttl = self.default_ttl_s if ttl_s is None else ttl_s
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 < ttl <= MAX_TTL_S:
            raise ValueError(f"ttl must be an integer number of seconds in 1..{MAX_TTL_S}")

        expires_at = now_s + ttl
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": identity,
            "room": room,
            "name": clean_name,
            "role": the_role.value,
            "permissions": sorted(p.value for p in granted),
            "iat": now_s,
            "exp": expires_at,
        }
        token = jwt.encode(claims, self._key, algorithm=_ALGORITHM)
        grant = Grant(
            room=room,
            identity=identity,
            name=clean_name or identity,
            role=the_role,
            permissions=granted,
            expires_at=expires_at,
        )
        return token, grant

    def mint(
        self,
        *,
        room: str,
        identity: str | None,
        name: str,
        role: Role | str,
        permissions: Iterable[Permission | str] | None = None,
        ttl_s: int | None = None,
        now_s: int,
    ) -> str:
        """A signed token; raises ValueError on a bad room id, identity, name, role or ttl."""
        token, _ = self.issue(
            room=room,
            identity=identity,
            name=name,
            role=role,
            permissions=permissions,
            ttl_s=ttl_s,
            now_s=now_s,
        )
        return token

    # -- verifying -------------------------------------------------------------------------

    def verify(self, token: str | None, *, room: str | None, now_s: int) -> Grant:
        """The Grant a token carries, or TokenError.

        ``room=None`` skips the room check (the WebSocket join takes the room from the token).
        """
        if token is None or (isinstance(token, str) and not token.strip()):
            raise TokenError("token-missing", "an access token is required to join")
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or not token.isascii():
            raise TokenError("token-invalid", "the access token is malformed")
        claims = self._decode(token.strip())

        iss = claims.get("iss")
        if iss != self.issuer:
            raise TokenError("token-invalid", "the access token was not issued by this server")

        exp = claims.get("exp")
        if not _is_int(exp):
            raise TokenError("token-invalid", "the access token has no valid expiry")
        # Same boundary as PyJWT: still valid strictly before exp + leeway.
        if now_s >= exp + self.leeway_s:
            raise TokenError("token-expired", "the access token has expired; ask for a new link")
        nbf = claims.get("nbf")
        if nbf is not None and (not _is_int(nbf) or now_s + self.leeway_s < nbf):
            raise TokenError("token-invalid", "the access token is not valid yet")

        token_room = claims.get("room")
        if not is_valid_room_id(token_room):
            raise TokenError("token-invalid", "the access token names no valid room")
        assert isinstance(token_room, str)  # narrowed by is_valid_room_id
        if room is not None and token_room != room:
            raise TokenError("token-wrong-room", "the access token is for a different room")

        identity = claims.get("sub")
        if _identity_problem(identity) is not None:
            raise TokenError("token-invalid", "the access token has no valid identity")
        assert isinstance(identity, str)

        raw_role = claims.get("role")
        if not isinstance(raw_role, str) or raw_role not in _ROLE_VALUES:
            raise TokenError("token-invalid", "the access token has an unknown role")
        role = Role(raw_role)

        allowed = ROLE_PERMISSIONS[role]
        raw_perms = claims.get("permissions")
        if raw_perms is None:
            permissions = allowed
        elif isinstance(raw_perms, list):
            # Unknown names are ignored so a newer issuer's extra permissions don't lock users
            # out; the intersection is what stops an observer token from claiming publish.
            known = {p.value for p in Permission}
            claimed = {Permission(p) for p in raw_perms if isinstance(p, str) and p in known}
            permissions = frozenset(claimed) & allowed
        else:
            raise TokenError("token-invalid", "the access token has malformed permissions")

        raw_name = claims.get("name")
        name = sanitize_name(raw_name)[:MAX_NAME_CHARS] if isinstance(raw_name, str) else ""
        return Grant(
            room=token_room,
            identity=identity,
            name=name or identity,
            role=role,
            permissions=permissions,
            expires_at=exp,
        )

    def _decode(self, token: str) -> dict[str, Any]:
        try:
            # PyJWT checks only the signature and the algorithm allow-list (which is what
            # rejects alg "none", HS512 and RS256 key-confusion tokens). Time-based claims are
            # checked by the caller against now_s, never against the wall clock.
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=[_ALGORITHM],
                options={
                    "verify_signature": True,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                    "verify_iss": False,
                    "verify_sub": False,
                    "verify_jti": False,
                },
            )
        except jwt.InvalidSignatureError:
            raise TokenError("token-invalid", "the access token signature is not valid") from None
        except jwt.InvalidAlgorithmError:
            raise TokenError("token-invalid", "the access token uses a refused algorithm") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise TokenError("token-invalid", "the access token is malformed") from None
        return claims


def _is_int(value: object) -> TypeGuard[int]:
    # bool is an int subclass; "exp": true must not mean exp == 1.
    return isinstance(value, int) and not isinstance(value, bool)
