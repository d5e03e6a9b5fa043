"""Table-driven and property tests for signaling.messages (protocol v1 parsing, SDP checks)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.vocabulary import TileView
from signaling.messages import (
    ERROR_CODES,
    MAX_MEDIA_SECTIONS,
    MAX_MESSAGE_BYTES,
    MAX_SUBSCRIBE_MEDIA_SECTIONS,
    MAX_TILE_PIXELS,
    MAX_VIEWPORT_TILES,
    PROTOCOL_VERSION,
    ClientMessage,
    Join,
    Leave,
    Mute,
    Ping,
    ProtocolError,
    Publish,
    SubscribeAnswer,
    Viewport,
    error_message,
    parse_client_message,
    server_message,
    validate_sdp,
)

SDP = (
    "v=0\r\n"
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n"
    "s=-\r\n"
    "t=0 0\r\n"
    "a=group:BUNDLE 0 1\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
    "c=IN IP4 0.0.0.0\r\n"
    "a=mid:0\r\n"
    "a=sendonly\r\n"
    "a=rtpmap:111 opus/48000/2\r\n"
    "a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
    "c=IN IP4 0.0.0.0\r\n"
    "a=mid:1\r\n"
    "a=sendonly\r\n"
    "a=rtpmap:96 VP8/90000\r\n"
)


def sdp_with_media(count: int) -> str:
    head = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    return head + "".join(f"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:{i}\r\n" for i in range(count))


def msg(**fields: Any) -> str:
    return json.dumps(fields)


def tile(**overrides: Any) -> dict[str, Any]:
    """A valid viewport tile; overrides replace fields, a value of ... removes the field."""
    fields: dict[str, Any] = {"participantId": "u-1", "width": 640, "height": 360, "visible": True}
    fields.update(overrides)
    return {k: v for k, v in fields.items() if v is not ...}


def viewport(*tiles: Any) -> str:
    return msg(type="viewport", tiles=list(tiles))


def expect(code: str, raw: str | bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_client_message(raw)
    assert info.value.code == code, info.value.message
    assert info.value.message
    return info.value


# -- valid messages ---------------------------------------------------------------------------


VALID: list[tuple[str | bytes, ClientMessage]] = [
    (msg(type="join", version=1, token="abc.def.ghi"), Join(token="abc.def.ghi", version=1)),
    (msg(type="join", token="t", version=1, extra="ignored"), Join(token="t", version=1)),
    (msg(type="join", token="t", version=1, room="ward-7"), Join("t", 1, room="ward-7")),
    (msg(type="join", token="t", version=1, room=None), Join(token="t", version=1)),
    (msg(type="join", token="t", version=1, resume="r-1"), Join("t", 1, resume="r-1")),
    (msg(type="join", token="t", version=1, resume=None), Join(token="t", version=1)),
    (msg(type="publish", sdp=SDP), Publish(sdp=SDP)),
    (msg(type="subscribe-answer", sdp=SDP), SubscribeAnswer(sdp=SDP)),
    (msg(type="mute", kind="audio", muted=True), Mute(kind="audio", muted=True)),
    (msg(type="mute", kind="video", muted=False), Mute(kind="video", muted=False)),
    (msg(type="leave"), Leave()),
    (msg(type="ping"), Ping()),
    (msg(type="ping", ts=123), Ping()),
    (b'{"type":"ping"}', Ping()),
    (bytearray(b'{"type":"leave"}'), Leave()),  # type: ignore[list-item]
    ('  {"type" : "ping"}\n', Ping()),
    ('{"type":"mute","kind":"audio","muted":true}', Mute(kind="audio", muted=True)),
    (msg(type="join", version=1, token="tøken"), Join(token="tøken", version=1)),
    # viewport
    (viewport(), Viewport(tiles=())),
    (viewport(tile()), Viewport((TileView("u-1", 640, 360, visible=True, pinned=False),))),
    (viewport(tile(pinned=True)), Viewport((TileView("u-1", 640, 360, True, pinned=True),))),
    (viewport(tile(pinned=False)), Viewport((TileView("u-1", 640, 360, True, pinned=False),))),
    (
        viewport(tile(visible=False, width=0, height=0)),
        Viewport((TileView("u-1", 0, 0, visible=False),)),
    ),
    (
        viewport(tile(width=MAX_TILE_PIXELS, height=MAX_TILE_PIXELS)),
        Viewport((TileView("u-1", MAX_TILE_PIXELS, MAX_TILE_PIXELS, visible=True),)),
    ),
    (
        viewport(tile(participantId="a", extra="ignored"), tile(participantId="b", width=1)),
        Viewport((TileView("a", 640, 360, True), TileView("b", 1, 360, True))),
    ),
    (
        msg(type="viewport", tiles=[tile()], extra=1),
        Viewport((TileView("u-1", 640, 360, True),)),
    ),
]


@pytest.mark.parametrize(("raw", "expected"), VALID)
def test_valid_messages(raw: str | bytes, expected: ClientMessage) -> None:
    assert parse_client_message(raw) == expected


def test_parsed_messages_are_frozen() -> None:
    parsed = parse_client_message(msg(type="mute", kind="audio", muted=True))
    with pytest.raises(AttributeError):
        parsed.muted = False  # type: ignore[misc, union-attr]


def test_protocol_version_is_one() -> None:
    assert PROTOCOL_VERSION == 1
    assert MAX_MESSAGE_BYTES == 65536


# -- invalid messages -------------------------------------------------------------------------


INVALID: list[tuple[str, str | bytes]] = [
    # not JSON / not an object
    ("bad-json", ""),
    ("bad-json", "   "),
    ("bad-json", "{"),
    ("bad-json", "{'type': 'ping'}"),
    ("bad-json", '{"type":"ping",}'),
    ("bad-json", "null"),
    ("bad-json", "42"),
    ("bad-json", '"ping"'),
    ("bad-json", '[{"type":"ping"}]'),
    ("bad-json", "true"),
    ("bad-json", '{"type":"ping","n":NaN}'),
    ("bad-json", '{"type":"ping","n":Infinity}'),
    ("bad-json", '{"type":"ping","type":"leave"}'),
    ("bad-json", "[" * 10_000 + "]" * 10_000),
    ("bad-json", b"\xff\xfe{}"),
    ("bad-json", b'{"type":"ping","x":"\xc3"}'),
    ("bad-json", b'{"type":"ping","x":"\xed\xa0\x80"}'),  # UTF-8-encoded surrogate
    # type
    ("bad-field", "{}"),
    ("bad-field", msg(type=None)),
    ("bad-field", msg(type=1)),
    ("bad-field", msg(type=["ping"])),
    ("unknown-type", msg(type="pong")),
    ("unknown-type", msg(type="PING")),
    ("unknown-type", msg(type="")),
    ("unknown-type", msg(type="x" * 1000)),
    # join
    ("bad-field", msg(type="join", token="t")),
    ("bad-field", msg(type="join", token="t", version="1")),
    ("bad-field", msg(type="join", token="t", version=1.0)),
    ("bad-field", msg(type="join", token="t", version=True)),
    ("bad-field", msg(type="join", token="t", version=None)),
    ("unsupported-version", msg(type="join", token="t", version=2)),
    ("unsupported-version", msg(type="join", token="t", version=0)),
    ("unsupported-version", msg(type="join", version=99)),
    ("token-missing", msg(type="join", version=1)),
    ("token-missing", msg(type="join", version=1, token=None)),
    ("token-missing", msg(type="join", version=1, token="")),
    ("bad-field", msg(type="join", version=1, token=123)),
    ("bad-field", msg(type="join", version=1, token=["a"])),
    ("bad-field", msg(type="join", version=1, token=True)),
    ("bad-field", '{"type":"join","version":1,"token":"\\ud800"}'),
    ("bad-field", msg(type="join", version=1, token="t", room="")),
    ("bad-field", msg(type="join", version=1, token="t", room="ward 7")),
    ("bad-field", msg(type="join", version=1, token="t", room="r" * 65)),
    ("bad-field", msg(type="join", version=1, token="t", room=7)),
    ("bad-field", msg(type="join", version=1, token="t", resume=7)),
    ("bad-field", msg(type="join", version=1, token="t", resume=["r"])),
    # publish / subscribe-answer
    ("bad-field", msg(type="publish")),
    ("bad-field", msg(type="publish", sdp=None)),
    ("bad-field", msg(type="publish", sdp={"sdp": SDP})),
    ("bad-sdp", msg(type="publish", sdp="")),
    ("bad-sdp", msg(type="publish", sdp="hello")),
    ("bad-sdp", msg(type="publish", sdp=sdp_with_media(MAX_MEDIA_SECTIONS + 1))),
    ("bad-field", msg(type="subscribe-answer")),
    ("bad-field", msg(type="subscribe-answer", sdp=7)),
    ("bad-sdp", msg(type="subscribe-answer", sdp="v=0\r\nbogus\r\n")),
    ("bad-sdp", msg(type="subscribe-answer", sdp=sdp_with_media(MAX_SUBSCRIBE_MEDIA_SECTIONS + 1))),
    # mute
    ("bad-field", msg(type="mute", muted=True)),
    ("bad-field", msg(type="mute", kind="audio")),
    ("bad-field", msg(type="mute", kind="screen", muted=True)),
    ("bad-field", msg(type="mute", kind="Audio", muted=True)),
    ("bad-field", msg(type="mute", kind=1, muted=True)),
    ("bad-field", msg(type="mute", kind="audio", muted=1)),
    ("bad-field", msg(type="mute", kind="audio", muted=0)),
    ("bad-field", msg(type="mute", kind="audio", muted="true")),
    ("bad-field", msg(type="mute", kind="audio", muted=None)),
    # viewport: the list
    ("bad-field", msg(type="viewport")),
    ("bad-field", msg(type="viewport", tiles=None)),
    ("bad-field", msg(type="viewport", tiles=tile())),
    ("bad-field", msg(type="viewport", tiles="u-1")),
    ("bad-field", msg(type="viewport", tiles=3)),
    ("bad-field", viewport(*[tile(participantId=f"p{i}") for i in range(MAX_VIEWPORT_TILES + 1)])),
    # viewport: a tile that is not an object
    ("bad-field", viewport(None)),
    ("bad-field", viewport("u-1")),
    ("bad-field", viewport(7)),
    ("bad-field", viewport(["u-1", 640, 360, True])),
    ("bad-field", viewport(tile(), None)),  # one bad tile refuses the whole message
    # viewport: width / height
    ("bad-field", viewport(tile(width=...))),
    ("bad-field", viewport(tile(height=...))),
    ("bad-field", viewport(tile(width=None))),
    ("bad-field", viewport(tile(height=None))),
    ("bad-field", viewport(tile(width="640"))),
    ("bad-field", viewport(tile(height="360"))),
    ("bad-field", viewport(tile(width=640.0))),
    ("bad-field", viewport(tile(height=360.5))),
    ("bad-field", viewport(tile(width=True))),
    ("bad-field", viewport(tile(height=False))),
    ("bad-field", viewport(tile(width=-1))),
    ("bad-field", viewport(tile(height=-1))),
    ("bad-field", viewport(tile(width=MAX_TILE_PIXELS + 1))),
    ("bad-field", viewport(tile(height=MAX_TILE_PIXELS + 1))),
    ("bad-field", viewport(tile(width=10**100))),
    # viewport: participantId
    ("bad-field", viewport(tile(participantId=...))),
    ("bad-field", viewport(tile(participantId=None))),
    ("bad-field", viewport(tile(participantId=7))),
    ("bad-field", viewport(tile(participantId=["u-1"]))),
    ("bad-field", viewport(tile(participantId=True))),
    (
        "bad-field",
        '{"type":"viewport","tiles":[{"participantId":"\\ud800","width":1,'
        '"height":1,"visible":true}]}',
    ),
    # viewport: visible / pinned
    ("bad-field", viewport(tile(visible=...))),
    ("bad-field", viewport(tile(visible=None))),
    ("bad-field", viewport(tile(visible=1))),
    ("bad-field", viewport(tile(visible=0))),
    ("bad-field", viewport(tile(visible="true"))),
    ("bad-field", viewport(tile(pinned=1))),
    ("bad-field", viewport(tile(pinned=0))),
    ("bad-field", viewport(tile(pinned="yes"))),
    ("bad-field", viewport(tile(pinned=[True]))),
]


@pytest.mark.parametrize(("code", "raw"), INVALID)
def test_invalid_messages(code: str, raw: str | bytes) -> None:
    expect(code, raw)


def test_every_code_raised_is_a_contract_code() -> None:
    assert {code for code, _ in INVALID} <= ERROR_CODES


def test_more_media_sections_allowed_in_subscribe_answer_than_in_publish() -> None:
    many = sdp_with_media(MAX_MEDIA_SECTIONS + 5)
    expect("bad-sdp", msg(type="publish", sdp=many))
    assert parse_client_message(msg(type="subscribe-answer", sdp=many)) == SubscribeAnswer(many)


def test_viewport_limits() -> None:
    assert (MAX_VIEWPORT_TILES, MAX_TILE_PIXELS) == (64, 16384)
    most = [tile(participantId=f"p{i}") for i in range(MAX_VIEWPORT_TILES)]
    parsed = parse_client_message(viewport(*most))
    assert isinstance(parsed, Viewport)
    assert [t.participant_id for t in parsed.tiles] == [f"p{i}" for i in range(64)]
    assert isinstance(parsed.tiles, tuple)


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        (msg(type="viewport", tiles={}), "tiles"),
        (viewport(tile(width="1")), "width"),
        (viewport(tile(height=...)), "height"),
        (viewport(tile(participantId=1)), "participantId"),
        (viewport(tile(visible="no")), "visible"),
        (viewport(tile(pinned="no")), "pinned"),
        (viewport(tile(width=-5)), str(MAX_TILE_PIXELS)),
        (viewport(*[tile()] * (MAX_VIEWPORT_TILES + 1)), str(MAX_VIEWPORT_TILES)),
    ],
)
def test_viewport_errors_name_the_problem(raw: str, named: str) -> None:
    assert named in expect("bad-field", raw).message


# -- size limit -------------------------------------------------------------------------------


def ping_of_bytes(size: int, filler: str = "a") -> str:
    """A valid ping message whose UTF-8 encoding is exactly ``size`` bytes."""
    skeleton = '{"type":"ping","pad":""}'
    room = size - len(skeleton.encode())
    width = len(filler.encode())
    assert room % width == 0
    text = '{"type":"ping","pad":"' + filler * (room // width) + '"}'
    assert len(text.encode()) == size
    return text


@pytest.mark.parametrize("as_bytes", [False, True])
def test_size_limit_at_and_just_over(as_bytes: bool) -> None:
    at = ping_of_bytes(MAX_MESSAGE_BYTES)
    over = ping_of_bytes(MAX_MESSAGE_BYTES + 1)
    assert parse_client_message(at.encode() if as_bytes else at) == Ping()
    expect("too-large", over.encode() if as_bytes else over)


def test_size_is_counted_in_utf8_bytes_not_characters() -> None:
    # 'é' is two bytes: under the limit in characters, over it in bytes.
    text = ping_of_bytes(MAX_MESSAGE_BYTES + 2, filler="é")
    assert len(text) < MAX_MESSAGE_BYTES
    expect("too-large", text)
    assert parse_client_message(ping_of_bytes(MAX_MESSAGE_BYTES, filler="é")) == Ping()


def test_size_is_checked_before_json() -> None:
    # Not JSON at all, but too big: the size answer comes first (no parsing of huge input).
    expect("too-large", "x" * (MAX_MESSAGE_BYTES + 1))
    expect("too-large", b"\xff" * (MAX_MESSAGE_BYTES + 1))


# -- SDP -----------------------------------------------------------------------------------------


VALID_SDP = [
    SDP,
    SDP.replace("\r\n", "\n"),
    "v=0",
    "v=0\r\n",
    "v=0\r\n\r\n",
    "v=0\r\ns=caf\u00e9 \u2014 session\r\n",
    "v=0\r\na=fmtp:111\tminptime=10\r\n",
    sdp_with_media(MAX_MEDIA_SECTIONS),
]

INVALID_SDP = [
    "",
    "\r\n",
    "v=1\r\n",
    "v=00\r\n",
    " v=0\r\n",
    "\r\nv=0\r\n",
    "o=- 1 1 IN IP4 127.0.0.1\r\nv=0\r\n",
    "V=0\r\n",
    "v=0\r\nhello\r\n",
    "v=0\r\n=x\r\n",
    "v=0\r\na\r\n",
    "v=0\r\nA=x\r\n",
    "v=0\r\n1=x\r\n",
    "v=0\r\nab=x\r\n",
    "v=0\r\n\r\na=x\r\n",  # blank line inside
    "v=0\ra=x\r\n",  # bare CR as a line break
    "v=0\r\na=x\rb\r\n",
    "v=0\r\na=x\x00y\r\n",
    "v=0\r\na=\x1b[2J\r\n",
    "v=0\r\na=\x7f\r\n",
    "v=0\r\na=\x85\r\n",
    "v=0\r\na=\x0b\r\n",
    "v=0\r\na=\ud800\r\n",
    sdp_with_media(MAX_MEDIA_SECTIONS + 1),
    "v=0\r\na=" + "x" * 65536 + "\r\n",
]


@pytest.mark.parametrize("sdp", VALID_SDP)
def test_valid_sdp(sdp: str) -> None:
    validate_sdp(sdp)


@pytest.mark.parametrize("sdp", INVALID_SDP)
def test_invalid_sdp(sdp: str) -> None:
    with pytest.raises(ProtocolError) as info:
        validate_sdp(sdp)
    assert info.value.code == "bad-sdp"
    assert info.value.message


def test_sdp_size_limit_is_64_kib() -> None:
    head = "v=0\r\n"
    line = "a=" + "x" * 98 + "\r\n"  # 102 bytes; lines stay under the per-line limit
    body = line * ((65536 - len(head)) // len(line))
    exact = head + body + "a=" + "y" * (65536 - len(head) - len(body) - 2)
    assert len(exact) == 65536
    validate_sdp(exact)
    with pytest.raises(ProtocolError):
        validate_sdp(exact + "x")


def test_absurdly_long_sdp_line_is_refused() -> None:
    validate_sdp("v=0\r\na=" + "x" * 4000 + "\r\n")
    with pytest.raises(ProtocolError, match="longer than"):
        validate_sdp("v=0\r\na=" + "x" * 5000 + "\r\n")


def test_sdp_media_limit_is_a_parameter() -> None:
    validate_sdp(sdp_with_media(30), max_media_sections=30)
    with pytest.raises(ProtocolError):
        validate_sdp(sdp_with_media(3), max_media_sections=2)


def test_non_string_sdp_is_bad_sdp() -> None:
    with pytest.raises(ProtocolError) as info:
        validate_sdp(None)  # type: ignore[arg-type]
    assert info.value.code == "bad-sdp"


# -- server messages --------------------------------------------------------------------------


def test_error_message_shape() -> None:
    assert error_message("bad-json", "nope") == {
        "type": "error",
        "code": "bad-json",
        "message": "nope",
        "fatal": False,
    }
    assert error_message("token-expired", "old", fatal=True)["fatal"] is True


def test_error_message_refuses_unknown_codes() -> None:
    with pytest.raises(ValueError):
        error_message("oops", "typo in a code")


def test_protocol_error_to_message() -> None:
    err = ProtocolError("too-large", "big")
    assert err.to_message(fatal=True) == error_message("too-large", "big", fatal=True)
    assert "too-large" in str(err)


def test_server_message() -> None:
    assert server_message("pong") == {"type": "pong"}
    assert server_message("participant-left", participantId="p1", reason="left") == {
        "type": "participant-left",
        "participantId": "p1",
        "reason": "left",
    }
    with pytest.raises(ValueError):
        server_message("pong", **{"type": "ping"})
    json.dumps(server_message("joined", version=1, maxMessageBytes=MAX_MESSAGE_BYTES))


def test_messages_module_imports_no_io_libraries() -> None:
    import signaling.messages as mod

    source = open(mod.__file__, encoding="utf-8").read()
    for banned in ("aiohttp", "asyncio", "aiortc"):
        assert f"import {banned}" not in source and f"from {banned}" not in source


# -- property tests ---------------------------------------------------------------------------


MESSAGE_TYPES = ["join", "publish", "subscribe-answer", "mute", "leave", "ping", "viewport", "pong"]
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
tile_like = st.fixed_dictionaries(
    {},
    optional={
        "participantId": st.sampled_from(["u-1", ""]) | json_scalars,
        "width": st.integers(-2, MAX_TILE_PIXELS + 2) | json_scalars,
        "height": st.integers(-2, MAX_TILE_PIXELS + 2) | json_scalars,
        "visible": st.booleans() | json_scalars,
        "pinned": st.booleans() | json_scalars,
    },
)
message_like = st.fixed_dictionaries(
    {"type": st.sampled_from(MESSAGE_TYPES) | json_scalars},
    optional={
        "version": st.sampled_from([1, 2, True, "1", None]) | st.integers(),
        "token": st.text(max_size=30) | json_scalars,
        "sdp": st.sampled_from([SDP, "v=0", ""]) | st.text(max_size=50) | json_scalars,
        "kind": st.sampled_from(["audio", "video"]) | json_values,
        "muted": st.booleans() | json_values,
        "room": st.sampled_from(["ward-7", "", "a b"]) | json_scalars,
        "tiles": st.lists(tile_like, max_size=3) | json_values,
        "extra": json_values,
    },
)


def check_total(raw: str | bytes) -> None:
    try:
        result = parse_client_message(raw)
    except ProtocolError as err:
        assert err.code in ERROR_CODES
        return
    assert isinstance(result, Join | Publish | SubscribeAnswer | Mute | Leave | Ping | Viewport)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_arbitrary_text_raises_only_protocol_error(raw: str) -> None:
    check_total(raw)


@settings(max_examples=300, deadline=None)
@given(st.binary())
def test_arbitrary_bytes_raise_only_protocol_error(raw: bytes) -> None:
    check_total(raw)


@settings(max_examples=500, deadline=None)
@given(message_like)
def test_message_shaped_json_raises_only_protocol_error(obj: dict[str, Any]) -> None:
    text = json.dumps(obj, allow_nan=True)
    check_total(text)
    check_total(text.encode("utf-8", "surrogatepass"))


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_arbitrary_sdp_raises_only_bad_sdp(sdp: str) -> None:
    try:
        validate_sdp(sdp)
    except ProtocolError as err:
        assert err.code == "bad-sdp"
