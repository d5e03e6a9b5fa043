"""Token/role matrix for signaling.auth. Time is always passed in (NOW), never read."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sys
from typing import Any

import jwt
import pytest

from signaling.auth import (
    MAX_TTL_S,
    ROLE_PERMISSIONS,
    Grant,
    Permission,
    Role,
    TokenAuthority,
    TokenError,
    check_api_key,
    generate_secret,
    is_valid_room_id,
    new_identity,
    sanitize_name,
)
from signaling.messages import ERROR_CODES

# >= 64 bytes so PyJWT has no key-length warning even when a test signs with HS512.
SECRET = "test-secret-" + "0123456789abcdef" * 4
OTHER_SECRET = "other-secret-" + "fedcba9876543210" * 4
NOW = 1_700_000_000
ROOM = "ward-7"
_DROP = object()  # marker: leave this claim out


@pytest.fixture
def authority() -> TokenAuthority:
    return TokenAuthority(SECRET, leeway_s=5)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def raw_token(header: dict[str, Any], claims: dict[str, Any], key: bytes | None) -> str:
    """Hand-built JWT so tests can forge headers PyJWT would refuse to produce."""
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    if key is None:
        return signing_input + "."
    sig = hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return signing_input + "." + b64(sig)


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": "consilium",
        "sub": "dr-a",
        "room": ROOM,
        "name": "Dr. A",
        "role": "host",
        "permissions": ["publish", "subscribe", "admin"],
        "iat": NOW,
        "exp": NOW + 600,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not _DROP}


def signed(key: str = SECRET, alg: str = "HS256", **overrides: Any) -> str:
    return jwt.encode(claims(**overrides), key, algorithm=alg)


def expect_error(code: str, authority: TokenAuthority, token: str | None, **kw: Any) -> TokenError:
    kw.setdefault("room", ROOM)
    kw.setdefault("now_s", NOW)
    with pytest.raises(TokenError) as info:
        authority.verify(token, **kw)
    assert info.value.code == code
    assert info.value.message  # every refusal explains itself
    return info.value


# -- role table ------------------------------------------------------------------------------


EXPECTED_TABLE = {
    (Role.HOST, Permission.PUBLISH): True,
    (Role.HOST, Permission.SUBSCRIBE): True,
    (Role.HOST, Permission.ADMIN): True,
    (Role.HOST, Permission.RECORD): True,
    (Role.SPECIALIST, Permission.PUBLISH): True,
    (Role.SPECIALIST, Permission.SUBSCRIBE): True,
    (Role.SPECIALIST, Permission.ADMIN): False,
    (Role.SPECIALIST, Permission.RECORD): False,
    (Role.BEDSIDE, Permission.PUBLISH): True,
    (Role.BEDSIDE, Permission.SUBSCRIBE): True,
    (Role.BEDSIDE, Permission.ADMIN): False,
    (Role.BEDSIDE, Permission.RECORD): False,
    (Role.OBSERVER, Permission.PUBLISH): False,
    (Role.OBSERVER, Permission.SUBSCRIBE): True,
    (Role.OBSERVER, Permission.ADMIN): False,
    (Role.OBSERVER, Permission.RECORD): False,
}


def test_enum_values_match_contract() -> None:
    assert {r.value for r in Role} == {"host", "specialist", "bedside", "observer"}
    assert {p.value for p in Permission} == {"publish", "subscribe", "admin", "record", "chat"}
    assert set(ROLE_PERMISSIONS) == set(Role)


def test_role_permissions_are_read_only() -> None:
    with pytest.raises(TypeError):
        ROLE_PERMISSIONS[Role.OBSERVER] = frozenset(Permission)  # type: ignore[index]


@pytest.mark.parametrize(("role", "permission"), sorted(EXPECTED_TABLE))
def test_minted_default_permissions_matrix(
    authority: TokenAuthority, role: Role, permission: Permission
) -> None:
    token = authority.mint(room=ROOM, identity="u1", name="U", role=role, now_s=NOW)
    grant = authority.verify(token, room=ROOM, now_s=NOW)
    assert grant.role is role
    assert grant.can(permission) is EXPECTED_TABLE[(role, permission)]
    assert (permission in ROLE_PERMISSIONS[role]) is EXPECTED_TABLE[(role, permission)]


@pytest.mark.parametrize(("role", "permission"), sorted(EXPECTED_TABLE))
def test_claiming_every_permission_is_capped_by_role(
    authority: TokenAuthority, role: Role, permission: Permission
) -> None:
    # A token signed with the right secret that claims everything (e.g. minted by an external
    # backend) still gets no more than its role allows.
    token = signed(role=role.value, permissions=[p.value for p in Permission])
    grant = authority.verify(token, room=ROOM, now_s=NOW)
    assert grant.can(permission) is EXPECTED_TABLE[(role, permission)]


@pytest.mark.parametrize(("role", "permission"), sorted(EXPECTED_TABLE))
def test_claiming_one_permission_gives_at_most_that(
    authority: TokenAuthority, role: Role, permission: Permission
) -> None:
    grant = authority.verify(
        signed(role=role.value, permissions=[permission.value]), room=ROOM, now_s=NOW
    )
    expected = frozenset({permission}) if EXPECTED_TABLE[(role, permission)] else frozenset()
    assert grant.permissions == expected


def test_observer_claiming_publish_gets_no_publish(authority: TokenAuthority) -> None:
    grant = authority.verify(
        signed(role="observer", permissions=["publish", "subscribe"]), room=ROOM, now_s=NOW
    )
    assert grant.permissions == {Permission.SUBSCRIBE}
    assert not grant.can(Permission.PUBLISH)


def test_missing_permissions_claim_means_everything_the_role_allows(
    authority: TokenAuthority,
) -> None:
    grant = authority.verify(signed(role="specialist", permissions=_DROP), room=ROOM, now_s=NOW)
    assert grant.permissions == {Permission.PUBLISH, Permission.SUBSCRIBE, Permission.CHAT}


def test_unknown_and_non_string_permissions_are_ignored(authority: TokenAuthority) -> None:
    token = signed(role="host", permissions=["subscribe", "teleport", 3, None, "ADMIN"])
    grant = authority.verify(token, room=ROOM, now_s=NOW)
    assert grant.permissions == {Permission.SUBSCRIBE}


def test_permissions_not_a_list_is_invalid(authority: TokenAuthority) -> None:
    expect_error("token-invalid", authority, signed(permissions="publish"))
    expect_error("token-invalid", authority, signed(permissions={"publish": True}))


# -- mint / verify round trip ----------------------------------------------------------------


def test_round_trip_returns_full_grant(authority: TokenAuthority) -> None:
    token = authority.mint(
        room=ROOM,
        identity="nurse-1",
        name="  Nurse   Joy ",
        role="bedside",
        permissions=["subscribe"],
        ttl_s=120,
        now_s=NOW,
    )
    grant = authority.verify(token, room=ROOM, now_s=NOW + 60)
    assert grant == Grant(
        room=ROOM,
        identity="nurse-1",
        name="Nurse Joy",
        role=Role.BEDSIDE,
        permissions=frozenset({Permission.SUBSCRIBE}),
        expires_at=NOW + 120,
    )


def test_minted_claims_follow_contract(authority: TokenAuthority) -> None:
    token = authority.mint(room=ROOM, identity="x", name="X", role=Role.OBSERVER, now_s=NOW)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    body = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert body == {
        "iss": "consilium",
        "sub": "x",
        "room": ROOM,
        "name": "X",
        "role": "observer",
        "permissions": ["subscribe"],
        "iat": NOW,
        "exp": NOW + 3600,
    }


def test_issue_returns_matching_grant_and_generates_identity(authority: TokenAuthority) -> None:
    token, grant = authority.issue(room=ROOM, identity=None, name="", role="specialist", now_s=NOW)
    assert grant.identity and len(grant.identity) <= 64
    assert grant.name == grant.identity  # empty display name falls back to the id
    assert authority.verify(token, room=ROOM, now_s=NOW) == grant


def test_verify_without_room_takes_room_from_token(authority: TokenAuthority) -> None:
    token = authority.mint(room="icu_3", identity="a", name="A", role="host", now_s=NOW)
    assert authority.verify(token, room=None, now_s=NOW).room == "icu_3"


def test_custom_issuer_is_checked() -> None:
    mine = TokenAuthority(SECRET, issuer="hospital-a")
    theirs = TokenAuthority(SECRET, issuer="hospital-b")
    token = theirs.mint(room=ROOM, identity="a", name="A", role="host", now_s=NOW)
    expect_error("token-invalid", mine, token)
    assert (
        mine.verify(
            mine.mint(room=ROOM, identity="a", name="A", role="host", now_s=NOW),
            room=ROOM,
            now_s=NOW,
        ).identity
        == "a"
    )


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"room": ""}, "room"),
        ({"room": "a" * 65}, "room"),
        ({"room": "ward 7"}, "room"),
        ({"room": "ward/7"}, "room"),
        ({"room": "wärd"}, "room"),
        ({"identity": ""}, "identity"),
        ({"identity": "x" * 65}, "identity"),
        ({"identity": " padded"}, "identity"),
        ({"identity": "a\x00b"}, "identity"),
        ({"name": "n" * 81}, "name"),
        ({"role": "admin"}, "role"),
        ({"role": "HOST"}, "role"),
        ({"role": "observer", "permissions": ["publish"]}, "publish"),
        ({"role": "specialist", "permissions": ["admin"]}, "admin"),
        ({"permissions": ["fly"]}, "permission"),
        ({"permissions": "publish"}, "permission"),
        ({"ttl_s": 0}, "ttl"),
        ({"ttl_s": -5}, "ttl"),
        ({"ttl_s": MAX_TTL_S + 1}, "ttl"),
        ({"ttl_s": True}, "ttl"),
    ],
)
def test_mint_rejects_bad_input(
    authority: TokenAuthority, kwargs: dict[str, Any], fragment: str
) -> None:
    args: dict[str, Any] = {"room": ROOM, "identity": "u", "name": "U", "role": "host"}
    args.update(kwargs)
    with pytest.raises(ValueError, match=fragment):
        authority.mint(now_s=NOW, **args)


def test_mint_accepts_limits(authority: TokenAuthority) -> None:
    token = authority.mint(
        room="A" * 64, identity="i" * 64, name="n" * 80, role="host", ttl_s=MAX_TTL_S, now_s=NOW
    )
    grant = authority.verify(token, room="A" * 64, now_s=NOW)
    assert (len(grant.identity), len(grant.name)) == (64, 80)


@pytest.mark.parametrize("secret", [""])
def test_empty_secret_refused(secret: str) -> None:
    with pytest.raises(ValueError):
        TokenAuthority(secret)


# -- refusals ----------------------------------------------------------------------------------


def test_token_for_room_a_used_on_room_b(authority: TokenAuthority) -> None:
    token = authority.mint(room="room-a", identity="u", name="U", role="host", now_s=NOW)
    expect_error("token-wrong-room", authority, token, room="room-b")
    assert authority.verify(token, room="room-a", now_s=NOW).room == "room-a"


def test_expiry_boundary_uses_now_s_and_leeway(authority: TokenAuthority) -> None:
    token = authority.mint(room=ROOM, identity="u", name="U", role="host", ttl_s=60, now_s=NOW)
    exp = NOW + 60
    # Valid up to (but excluding) exp + leeway, whatever the wall clock says.
    assert authority.verify(token, room=ROOM, now_s=exp + 4).identity == "u"
    expect_error("token-expired", authority, token, now_s=exp + 5)
    expect_error("token-expired", authority, token, now_s=exp + 10_000)


def test_expired_token_far_in_the_past_still_verifies_against_given_time() -> None:
    # exp in 1970 terms: proves PyJWT's wall-clock exp check is not what decides.
    authority = TokenAuthority(SECRET, leeway_s=0)
    token = authority.mint(room=ROOM, identity="u", name="U", role="host", ttl_s=10, now_s=100)
    assert authority.verify(token, room=ROOM, now_s=105).identity == "u"
    expect_error("token-expired", authority, token, now_s=110)


def test_issued_in_the_future_is_not_refused_by_wall_clock(authority: TokenAuthority) -> None:
    far_future = 4_000_000_000
    token = authority.mint(room=ROOM, identity="u", name="U", role="host", now_s=far_future)
    assert authority.verify(token, room=ROOM, now_s=far_future).identity == "u"


def test_nbf_is_honoured(authority: TokenAuthority) -> None:
    expect_error("token-invalid", authority, signed(nbf=NOW + 100))
    assert authority.verify(signed(nbf=NOW + 3), room=ROOM, now_s=NOW).identity == "dr-a"


@pytest.mark.parametrize(
    "overrides",
    [
        {"exp": _DROP},
        {"exp": "soon"},
        {"exp": True},
        {"exp": 1.5e9},
        {"iss": _DROP},
        {"iss": "someone-else"},
        {"sub": _DROP},
        {"sub": ""},
        {"sub": 42},
        {"sub": "x" * 65},
        {"sub": "evil\nid"},
        {"room": _DROP},
        {"room": "../etc"},
        {"room": 7},
        {"role": _DROP},
        {"role": "superuser"},
        {"role": None},
        {"nbf": "now"},
    ],
)
def test_bad_claims_are_invalid(authority: TokenAuthority, overrides: dict[str, Any]) -> None:
    expect_error("token-invalid", authority, signed(**overrides), room=None)


def test_forged_with_wrong_secret(authority: TokenAuthority) -> None:
    err = expect_error("token-invalid", authority, signed(key=OTHER_SECRET))
    assert "signature" in err.message


def test_tampered_payload(authority: TokenAuthority) -> None:
    token = authority.mint(room=ROOM, identity="u", name="U", role="observer", now_s=NOW)
    header, payload, sig = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["role"] = "host"
    tampered = ".".join([header, b64(json.dumps(body).encode()), sig])
    expect_error("token-invalid", authority, tampered)


def test_tampered_signature(authority: TokenAuthority) -> None:
    token = authority.mint(room=ROOM, identity="u", name="U", role="host", now_s=NOW)
    flipped = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    expect_error("token-invalid", authority, flipped)


def test_alg_none_is_refused(authority: TokenAuthority) -> None:
    expect_error(
        "token-invalid", authority, raw_token({"alg": "none", "typ": "JWT"}, claims(), None)
    )
    expect_error("token-invalid", authority, raw_token({"alg": "None"}, claims(), None))
    # "none" header but with a valid HS256 signature appended: still refused.
    expect_error("token-invalid", authority, raw_token({"alg": "none"}, claims(), SECRET.encode()))


def test_other_hmac_algorithms_are_refused(authority: TokenAuthority) -> None:
    expect_error("token-invalid", authority, signed(alg="HS512"))
    expect_error("token-invalid", authority, signed(alg="HS384"))


def test_rs256_key_confusion_is_refused(authority: TokenAuthority) -> None:
    # Classic attack: claim RS256 but sign with HMAC using the server's shared secret as key.
    token = raw_token({"alg": "RS256", "typ": "JWT"}, claims(), SECRET.encode())
    err = expect_error("token-invalid", authority, token)
    assert "algorithm" in err.message


def test_header_without_alg_is_refused(authority: TokenAuthority) -> None:
    expect_error("token-invalid", authority, raw_token({"typ": "JWT"}, claims(), SECRET.encode()))


def test_correct_hand_built_hs256_is_accepted(authority: TokenAuthority) -> None:
    # Guards the tests above: raw_token builds valid tokens when the header is honest.
    token = raw_token({"alg": "HS256", "typ": "JWT"}, claims(), SECRET.encode())
    assert authority.verify(token, room=ROOM, now_s=NOW).identity == "dr-a"


@pytest.mark.parametrize(
    "garbage",
    [
        "x",
        "not.a.jwt",
        "....",
        "a.b",
        "eyJhbGciOiJIUzI1NiJ9.%%%.abc",
        "eyJhbGciOiJIUzI1NiJ9.W10.sig",  # payload is a JSON array
        "Bearer abc.def.ghi",
        "tøken.with.unicode",
        "\ud800.x.y",
        "a" * 5000,
    ],
)
def test_garbage_is_invalid(authority: TokenAuthority, garbage: str) -> None:
    expect_error("token-invalid", authority, garbage)


@pytest.mark.parametrize("missing", [None, "", "   "])
def test_missing_token(authority: TokenAuthority, missing: str | None) -> None:
    expect_error("token-missing", authority, missing)


def test_non_string_token_is_invalid(authority: TokenAuthority) -> None:
    expect_error("token-invalid", authority, 12345)  # type: ignore[arg-type]


def test_error_codes_are_contract_codes() -> None:
    codes = {"token-missing", "token-invalid", "token-expired", "token-wrong-room"}
    assert codes <= ERROR_CODES
    err = TokenError("token-expired", "gone")
    assert (err.code, err.message) == ("token-expired", "gone")
    assert "token-expired" in str(err)


# -- names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("  Dr. Smith  ", "Dr. Smith"),
        ("Dr.\nSmith", "Dr. Smith"),
        ("Dr.\tSmith\r\n", "Dr. Smith"),
        ("Nu\x00rse\x07 \x1b[31mRed", "Nurse [31mRed"),
        ("a\x7fb\x85c", "abc"),
        ("\u202eevil\u202c", "evil"),
        ("Ärztin Özdemir 👩‍⚕️", "Ärztin Özdemir 👩‍⚕️"),
        ("\x00\x01", ""),
    ],
)
def test_sanitize_name(raw: str, clean: str) -> None:
    assert sanitize_name(raw) == clean


def test_verify_sanitizes_and_truncates_names_from_foreign_issuers(
    authority: TokenAuthority,
) -> None:
    grant = authority.verify(signed(name="  Dr.\x00 \u202eX\n" + "y" * 200), room=ROOM, now_s=NOW)
    assert grant.name.startswith("Dr. X yyy")
    assert len(grant.name) == 80
    assert authority.verify(signed(name=17), room=ROOM, now_s=NOW).name == "dr-a"
    assert authority.verify(signed(name=_DROP), room=ROOM, now_s=NOW).name == "dr-a"


def test_mint_sanitizes_name(authority: TokenAuthority) -> None:
    token = authority.mint(room=ROOM, identity="u", name="\tA\x00B ", role="host", now_s=NOW)
    assert authority.verify(token, room=ROOM, now_s=NOW).name == "AB"


# -- helpers -----------------------------------------------------------------------------------


def test_new_identity_is_short_random_url_safe() -> None:
    ids = {new_identity() for _ in range(200)}
    assert len(ids) == 200
    for ident in ids:
        assert 8 <= len(ident) <= 64
        assert is_valid_room_id(ident)  # same url-safe alphabet


def test_generate_secret_is_long_and_random() -> None:
    a, b = generate_secret(), generate_secret()
    assert a != b
    assert len(a.encode()) >= 32


def test_generated_secret_works_without_warnings(recwarn: pytest.WarningsRecorder) -> None:
    authority = TokenAuthority(generate_secret())
    token = authority.mint(room=ROOM, identity="u", name="U", role="host", now_s=NOW)
    assert authority.verify(token, room=ROOM, now_s=NOW).identity == "u"
    assert len(recwarn) == 0


@pytest.mark.parametrize(
    ("header", "key", "ok"),
    [
        (None, None, True),
        ("anything", None, True),
        (None, "", True),
        ("Bearer k3y", "k3y", True),
        ("bearer k3y", "k3y", True),
        ("  Bearer   k3y  ", "k3y", True),
        (None, "k3y", False),
        ("", "k3y", False),
        ("Bearer", "k3y", False),
        ("Bearer ", "k3y", False),
        ("Bearer k3y2", "k3y", False),
        ("Bearer k3", "k3y", False),
        ("Basic k3y", "k3y", False),
        ("k3y", "k3y", False),
        ("Bearer Kés", "Kés", True),
        ("Bearer Kes", "Kés", False),
    ],
)
def test_check_api_key(header: str | None, key: str | None, ok: bool) -> None:
    assert check_api_key(header, key) is ok


def test_auth_module_imports_no_io_libraries() -> None:
    import signaling.auth as mod

    source = open(mod.__file__, encoding="utf-8").read()
    for banned in ("aiohttp", "asyncio", "aiortc"):
        assert f"import {banned}" not in source and f"from {banned}" not in source
    assert "time.time" not in source and "datetime" not in source
    assert sys.modules["signaling.auth"] is mod
