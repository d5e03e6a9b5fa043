"""media/red.py: RFC 2198 parse/build/strip, payload-type rewrite, recovery, encoder/receiver."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.red import (
    MAX_TIMESTAMP_OFFSET,
    RedBlock,
    RedEncoder,
    RedPacketView,
    RedParseError,
    RedReceiver,
    build_red,
    parse_red,
    primary,
    recover,
    rewrite_payload_types,
)
from media.rtp import RtpParseError

OPUS = 111


def test_rfc2198_example_layout_byte_for_byte() -> None:
    # One redundant block (pt 0, offset 160, 3 bytes) and a primary (pt 111, 2 bytes).
    payload = build_red(OPUS, b"PP", [RedBlock(0, 160, b"RRR")])
    word = (160 << 10) | 3
    assert payload == bytes([0x80 | 0]) + word.to_bytes(3, "big") + bytes([OPUS]) + b"RRRPP"
    parsed = parse_red(payload)
    assert parsed.redundant == (RedBlock(0, 160, b"RRR"),)
    assert parsed.primary == RedBlock(OPUS, 0, b"PP")


def test_round_trip_with_two_redundant_blocks() -> None:
    blocks = [RedBlock(OPUS, 1920, b"a" * 40), RedBlock(OPUS, 960, b"b" * 41)]
    payload = build_red(OPUS, b"c" * 42, blocks)
    parsed = parse_red(payload)
    assert list(parsed.redundant) == blocks
    assert parsed.primary.data == b"c" * 42
    assert primary(payload) == (OPUS, b"c" * 42)


def test_primary_only_payload_and_empty_primary() -> None:
    assert parse_red(bytes([OPUS]) + b"xyz").redundant == ()
    assert primary(bytes([OPUS]) + b"xyz") == (OPUS, b"xyz")
    # An empty primary is legal (libwebrtc sends it when a frame is empty).
    assert primary(build_red(OPUS, b"", [RedBlock(OPUS, 960, b"r")])) == (OPUS, b"")


def test_rewrite_payload_types_touches_headers_only() -> None:
    payload = build_red(
        OPUS, b"\x81\x82", [RedBlock(OPUS, 1920, b"\xff"), RedBlock(OPUS, 960, b"")]
    )
    out = rewrite_payload_types(payload, 96)
    parsed = parse_red(out)
    assert [b.payload_type for b in parsed.redundant] == [96, 96]
    assert parsed.primary.payload_type == 96
    assert [b.data for b in parsed.redundant] == [b"\xff", b""]
    assert [b.timestamp_offset for b in parsed.redundant] == [1920, 960]
    assert parsed.primary.data == b"\x81\x82"
    assert len(out) == len(payload)
    with pytest.raises(ValueError):
        rewrite_payload_types(payload, 128)


def test_build_refuses_what_the_fields_cannot_carry() -> None:
    with pytest.raises(ValueError, match="14 bits"):
        build_red(OPUS, b"", [RedBlock(OPUS, MAX_TIMESTAMP_OFFSET + 1, b"")])
    with pytest.raises(ValueError, match="10 bits"):
        build_red(OPUS, b"", [RedBlock(OPUS, 960, bytes(1024))])
    with pytest.raises(ValueError):
        build_red(200, b"")
    # The largest values fit.
    big = build_red(OPUS, b"", [RedBlock(OPUS, MAX_TIMESTAMP_OFFSET, bytes(1023))])
    assert parse_red(big).redundant[0].timestamp_offset == MAX_TIMESTAMP_OFFSET


@pytest.mark.parametrize(
    "payload",
    [
        b"",  # nothing at all
        b"\x80",  # a 4-byte header cut after 1 byte
        b"\xef\x00\x0f",  # cut after 3
        b"\xef\x00\x0f\x05",  # header complete, no primary header
        b"\xef\x00\x0f\x05\x6f",  # says 5 bytes of block data, has none
        b"\xef\x00\x0f\x05\x6fabcd",  # one byte short
    ],
)
def test_garbage_raises_a_clear_error(payload: bytes) -> None:
    for fn in (parse_red, primary, lambda p: rewrite_payload_types(p, 96)):
        with pytest.raises(RedParseError):
            fn(payload)
    assert issubclass(RedParseError, RtpParseError) and issubclass(RedParseError, ValueError)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_parse_or_raise_red_parse_error(payload: bytes) -> None:
    try:
        parsed = parse_red(payload)
    except RedParseError:
        with pytest.raises(RedParseError):
            primary(payload)
        return
    # Whatever parses rebuilds to the same bytes and strips to the same primary.
    assert build_red(parsed.primary.payload_type, parsed.primary.data, parsed.redundant) == payload
    assert primary(payload) == (parsed.primary.payload_type, parsed.primary.data)
    receiver = RedReceiver()
    receiver.on_packet(5, 1000, payload)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 127), st.integers(0, MAX_TIMESTAMP_OFFSET), st.binary(max_size=40)
        ),
        max_size=4,
    ),
    st.integers(0, 127),
    st.binary(max_size=80),
)
def test_round_trip_property(
    blocks: list[tuple[int, int, bytes]], primary_pt: int, data: bytes
) -> None:
    redundant = [RedBlock(pt, offset, d) for pt, offset, d in blocks]
    payload = build_red(primary_pt, data, redundant)
    parsed = parse_red(payload)
    assert list(parsed.redundant) == redundant
    assert parsed.primary == RedBlock(primary_pt, 0, data)


@pytest.mark.parametrize("start", [0, 1, 2, 65534, 65535])
def test_recover_maps_blocks_to_previous_sequence_numbers_across_wrap(start: int) -> None:
    n = (start + 2) & 0xFFFF
    ts = 0xFFFFFF00  # near the timestamp wrap as well
    red = parse_red(
        build_red(OPUS, b"n", [RedBlock(OPUS, 1920, b"n-2"), RedBlock(OPUS, 960, b"n-1")])
    )
    got = recover(n, ts, red, set())
    assert [(p.sequence_number, p.data) for p in got] == [
        ((n - 2) & 0xFFFF, b"n-2"),
        ((n - 1) & 0xFFFF, b"n-1"),
    ]
    assert [p.timestamp for p in got] == [(ts - 1920) & 0xFFFFFFFF, (ts - 960) & 0xFFFFFFFF]
    # Only what is missing comes back.
    only = recover(n, ts, red, {(n - 1) & 0xFFFF})
    assert [p.sequence_number for p in only] == [(n - 2) & 0xFFFF]
    assert recover(n, ts, red, {(n - 1) & 0xFFFF, (n - 2) & 0xFFFF}) == []


def test_recover_ignores_blocks_that_contradict_the_one_block_per_packet_assumption() -> None:
    # Offsets must grow from the newest block to the oldest; here the older one is "newer".
    red = parse_red(build_red(OPUS, b"n", [RedBlock(OPUS, 480, b"x"), RedBlock(OPUS, 960, b"y")]))
    got = recover(100, 50_000, red, set())
    assert [(p.sequence_number, p.data) for p in got] == [(99, b"y")]
    zero = parse_red(build_red(OPUS, b"n", [RedBlock(OPUS, 0, b"z")]))
    assert recover(100, 50_000, zero, set()) == []


@pytest.mark.parametrize("start", [0, 65533, 65535])
@pytest.mark.parametrize("distance", [1, 2])
def test_encoder_and_receiver_recover_single_losses(start: int, distance: int) -> None:
    encoder = RedEncoder(distance)
    receiver = RedReceiver()
    delivered: list[tuple[int, bytes]] = []
    frames = 40
    lost = {5, 6, 20} if distance == 2 else {5, 20}
    for i in range(frames):
        seq = (start + i) & 0xFFFF
        ts = (0xFFFFF000 + 960 * i) & 0xFFFFFFFF
        payload = encoder.wrap(OPUS, ts, f"frame{i}".encode())
        if i in lost:
            continue
        for packet in receiver.on_packet(seq, ts, payload):
            assert packet.payload_type == OPUS
            assert (
                packet.timestamp
                == (0xFFFFF000 + 960 * ((packet.sequence_number - start) & 0xFFFF)) & 0xFFFFFFFF
            )
            delivered.append((packet.sequence_number, packet.data))
    expected = [((start + i) & 0xFFFF, f"frame{i}".encode()) for i in range(frames)]
    assert delivered == expected  # every frame exactly once, in order
    assert receiver.recovered == len(lost)
    assert receiver.packets == frames - len(lost)


def test_receiver_does_not_recover_before_its_first_packet_or_twice() -> None:
    encoder = RedEncoder(2)
    payloads = [encoder.wrap(OPUS, 960 * i, bytes([i])) for i in range(6)]
    receiver = RedReceiver()
    first = receiver.on_packet(102, 960 * 2, payloads[2])
    assert [p.sequence_number for p in first] == [102]  # 100 and 101 predate listening
    got = receiver.on_packet(105, 960 * 5, payloads[5])  # 103 and 104 lost
    assert [p.sequence_number for p in got] == [103, 104, 105]
    assert receiver.recovered == 2
    # The late originals add nothing (the decoder has those frames).
    assert receiver.on_packet(104, 960 * 4, payloads[4]) == []
    assert receiver.duplicates == 1


def test_encoder_leaves_out_frames_too_far_back_after_a_dtx_pause() -> None:
    encoder = RedEncoder(2)
    encoder.wrap(OPUS, 0, b"a")
    encoder.wrap(OPUS, 960, b"b")
    # 2 s of silence: neither previous frame fits a 14-bit offset (341 ms at 48 kHz).
    after = parse_red(encoder.wrap(OPUS, 960 + 96_000, b"c"))
    assert after.redundant == ()
    nxt = parse_red(encoder.wrap(OPUS, 960 * 2 + 96_000, b"d"))
    assert nxt.redundant == (RedBlock(OPUS, 960, b"c"),)
    with pytest.raises(ValueError):
        RedEncoder(0)


def test_packet_view_validates_once_and_caches_each_form() -> None:
    payload = build_red(OPUS, b"now", [RedBlock(OPUS, 960, b"before")])
    view = RedPacketView(payload)
    assert (view.primary_payload_type, view.primary_data) == (OPUS, b"now")
    retyped = view.with_payload_type(96)
    assert view.with_payload_type(96) is retyped
    assert parse_red(retyped).redundant == (RedBlock(96, 960, b"before"),)
    assert view.with_payload_type(OPUS) == payload
    with pytest.raises(RedParseError):
        RedPacketView(b"\x80\x00")
