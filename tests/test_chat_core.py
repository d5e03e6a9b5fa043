"""Room chat's pure core (signaling.chat) and the parsing of chat client messages."""

from __future__ import annotations

import json
import sys
import unicodedata

import pytest

from signaling.chat import (
    DEFAULT_BURN_TTL_S,
    MAX_BURN_TTL_S,
    MAX_TEXT_CHARS,
    Author,
    BurnCandidate,
    ChatMessage,
    ChatRejected,
    NoFiles,
    Receipt,
    advance_receipt,
    burn_expiry_ms,
    burn_reason,
    burn_recipients,
    due_burns,
    has_control,
    is_well_formed_id,
    next_sent_ms,
    normalise_attachments,
    normalise_mentions,
    normalise_text,
)
from signaling.messages import (
    ChatReceipt,
    ChatSend,
    ChatSync,
    ProtocolError,
    parse_client_message,
)


def _code(raw: dict[str, object]) -> str:
    with pytest.raises(ProtocolError) as err:
        parse_client_message(json.dumps(raw))
    return err.value.code


# -- text, mentions, attachments ------------------------------------------------------------


def test_text_is_trimmed_and_limited_after_trimming() -> None:
    assert normalise_text("  hello\n", has_attachments=False) == "hello"
    padded = " " * 50 + "x" * MAX_TEXT_CHARS + "\n" * 50
    assert normalise_text(padded, has_attachments=False) == "x" * MAX_TEXT_CHARS
    with pytest.raises(ChatRejected) as err:
        normalise_text("x" * (MAX_TEXT_CHARS + 1), has_attachments=False)
    assert err.value.code == "too-large" and str(MAX_TEXT_CHARS) in err.value.message
    with pytest.raises(ChatRejected) as err:
        normalise_text("   ", has_attachments=False)
    assert err.value.code == "bad-field"
    assert normalise_text("  ", has_attachments=True) == ""
    assert normalise_text("line 1\n\tline 2", has_attachments=False) == "line 1\n\tline 2"
    with pytest.raises(ChatRejected):
        normalise_text("bell\x07", has_attachments=False)


def test_control_check_matches_the_unicode_categories_for_every_code_point() -> None:
    # The regex stands in for unicodedata.category(ch) in ("Cc", "Cs"), character by character.
    for code in range(sys.maxunicode + 1):
        ch = chr(code)
        control = unicodedata.category(ch) in ("Cc", "Cs")
        assert has_control(f"a{ch}b") is control, hex(code)
        if control:
            assert not is_well_formed_id(f"id{ch}")
            allowed = ch in "\n\t\r"
            if allowed:
                assert normalise_text(f"x{ch}y", has_attachments=False) == f"x{ch}y"
            else:
                with pytest.raises(ChatRejected):
                    normalise_text(f"x{ch}y", has_attachments=False)


def test_mentions_are_deduplicated_and_only_well_formed_ids_kept() -> None:
    assert normalise_mentions(["b", "a", "b", "", " pad", "x" * 65, "ok\x00", "c"]) == (
        "b",
        "a",
        "c",
    )
    assert normalise_mentions([f"p{i % 20}" for i in range(60)]) == tuple(
        f"p{i}" for i in range(20)
    )
    with pytest.raises(ChatRejected):
        normalise_mentions([f"p{i}" for i in range(21)])


def test_attachments_limited_and_malformed_ids_refused() -> None:
    assert normalise_attachments(["f1", "f2", "f1"]) == ("f1", "f2")
    with pytest.raises(ChatRejected):
        normalise_attachments([f"f{i}" for i in range(11)])
    with pytest.raises(ChatRejected):
        normalise_attachments([""])
    assert NoFiles().get("room", "f1") is None


# -- parsing ----------------------------------------------------------------------------------


def test_chat_send_parses_into_a_normalised_value() -> None:
    raw = {
        "type": "chat-send",
        "clientId": "c-1",
        "text": "  see the CT  ",
        "mentions": ["u1", "u1", "u2"],
        "attachments": ["file-1"],
        "burn": {"afterReading": True, "ttlSeconds": 30},
    }
    assert parse_client_message(json.dumps(raw)) == ChatSend(
        "c-1", "see the CT", ("u1", "u2"), ("file-1",), 30
    )
    plain = parse_client_message('{"type":"chat-send","clientId":"c","text":"hi"}')
    assert plain == ChatSend("c", "hi")
    default_ttl = {
        "type": "chat-send",
        "clientId": "c",
        "text": "x",
        "burn": {"afterReading": True},
    }
    assert parse_client_message(json.dumps(default_ttl)) == ChatSend(
        "c", "x", burn_ttl_s=DEFAULT_BURN_TTL_S
    )
    not_burning = {**default_ttl, "burn": {"afterReading": False}}
    assert parse_client_message(json.dumps(not_burning)) == ChatSend("c", "x")
    only_file = {"type": "chat-send", "clientId": "c", "text": "", "attachments": ["f"]}
    assert parse_client_message(json.dumps(only_file)) == ChatSend("c", "", attachments=("f",))


def test_bad_chat_send_is_refused_with_contract_codes() -> None:
    ok: dict[str, object] = {"type": "chat-send", "clientId": "c", "text": "hi"}
    assert _code({**ok, "text": "y" * (MAX_TEXT_CHARS + 1)}) == "too-large"
    bad = [
        {"type": "chat-send", "text": "hi"},
        {**ok, "clientId": ""},
        {**ok, "clientId": "c" * 65},
        {**ok, "clientId": 5},
        {**ok, "text": None},
        {**ok, "text": " "},
        {**ok, "mentions": "u1"},
        {**ok, "mentions": [1]},
        {**ok, "attachments": {"id": "f"}},
        {**ok, "attachments": [f"f{i}" for i in range(11)]},
        {**ok, "mentions": [f"u{i}" for i in range(21)]},
        {**ok, "burn": True},
        {**ok, "burn": {}},
        {**ok, "burn": {"afterReading": True, "ttlSeconds": 0}},
        {**ok, "burn": {"afterReading": True, "ttlSeconds": MAX_BURN_TTL_S + 1}},
        {**ok, "burn": {"afterReading": True, "ttlSeconds": "60"}},
    ]
    for raw in bad:
        assert _code(raw) == "bad-field", raw
    assert _code({**ok, "text": "\ud800"}) == "bad-field"


def test_chat_sync_and_receipt_parse() -> None:
    assert parse_client_message('{"type":"chat-sync","after":7}') == ChatSync(7)
    assert parse_client_message('{"type":"chat-sync"}') == ChatSync(0)
    assert parse_client_message('{"type":"chat-receipt","read":3}') == ChatReceipt(None, 3)
    assert parse_client_message('{"type":"chat-receipt","delivered":4}') == ChatReceipt(4, None)
    for raw in (
        {"type": "chat-sync", "after": -1},
        {"type": "chat-sync", "after": "3"},
        {"type": "chat-sync", "after": True},
        {"type": "chat-receipt"},
        {"type": "chat-receipt", "read": -2},
        {"type": "chat-receipt", "delivered": 1.5},
    ):
        assert _code(raw) == "bad-field", raw


# -- receipts ---------------------------------------------------------------------------------


def test_receipt_watermarks_only_rise_and_stop_at_the_last_message() -> None:
    start = Receipt("u")
    first = advance_receipt(start, delivered=5, read=None, last_seq=10)
    assert first == Receipt("u", 5, 0)
    assert advance_receipt(first, delivered=3, read=None, last_seq=10) is None  # lower: ignored
    assert advance_receipt(first, delivered=5, read=0, last_seq=10) is None  # same: no change
    # Reading implies delivery; a mark past the room's last message is held at it.
    read = advance_receipt(first, delivered=None, read=99, last_seq=10)
    assert read == Receipt("u", 10, 10)
    assert advance_receipt(read, delivered=11, read=11, last_seq=10) is None
    assert advance_receipt(Receipt("u"), delivered=4, read=None, last_seq=0) is None


def test_sent_times_never_go_back() -> None:
    assert next_sent_ms(1000, 900) == 1000
    assert next_sent_ms(800, 900) == 900  # the wall clock stepped back
    assert burn_expiry_ms(1000, None) is None
    assert burn_expiry_ms(1000, 2) == 3000


# -- burn-after-reading -----------------------------------------------------------------------


def _candidate(seq: int, recipients: set[str], expires: int = 10_000) -> BurnCandidate:
    return BurnCandidate(f"m{seq}", "ward", seq, "sender", frozenset(recipients), expires)


def test_recipients_are_everyone_present_but_the_sender() -> None:
    assert burn_recipients("a", ["a", "b", "c"]) == {"b", "c"}
    assert burn_recipients("a", ["a"]) == frozenset()


def test_burns_when_every_recipient_read_it_and_not_before() -> None:
    c = _candidate(5, {"b", "c"})
    assert burn_reason(c, {"b": 5}, now_ms=0) is None
    assert burn_reason(c, {"b": 9, "c": 4}, now_ms=0) is None
    assert burn_reason(c, {"b": 5, "c": 5, "sender": 0}, now_ms=0) == "read"
    # The sender's own watermark is not what decides.
    assert burn_reason(c, {"sender": 100, "b": 100}, now_ms=0) is None


def test_burns_at_expiry_whichever_comes_first() -> None:
    c = _candidate(5, {"b"}, expires=10_000)
    assert burn_reason(c, {}, now_ms=9_999) is None
    assert burn_reason(c, {}, now_ms=10_000) == "expired"
    alone = _candidate(1, set(), expires=10_000)  # nobody to read it: only time removes it
    assert burn_reason(alone, {"x": 100}, now_ms=9_999) is None
    assert burn_reason(alone, {}, now_ms=10_001) == "expired"


def test_due_burns_names_only_the_messages_due() -> None:
    candidates = [_candidate(1, {"b"}), _candidate(2, {"b"}), _candidate(3, {"b"}, expires=50)]
    burns = due_burns(candidates, {"b": 1}, now_ms=100)
    assert [(b.id, b.reason) for b in burns] == [("m1", "read"), ("m3", "expired")]
    assert all(b.sender == "sender" and b.room == "ward" for b in burns)


def test_message_wire_shape() -> None:
    message = ChatMessage(
        id="m1",
        room="ward",
        seq=3,
        sender=Author("u1", "Dr A", "host"),
        client_id="c1",
        text="hello",
        sent_ms=1_700_000_000_000,
        mentions=("u2",),
        attachments=({"id": "f1"},),
        burn_expires_ms=1_700_000_600_000,
    )
    assert message.to_wire() == {
        "id": "m1",
        "seq": 3,
        "from": {"id": "u1", "name": "Dr A", "role": "host"},
        "text": "hello",
        "sentAt": 1_700_000_000_000,
        "mentions": ["u2"],
        "attachments": [{"id": "f1"}],
        "clientId": "c1",
        "burn": {"afterReading": True, "expiresAt": 1_700_000_600_000},
    }
