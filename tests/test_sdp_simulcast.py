"""RID simulcast offers are read from SDP text and answered in the final answer text."""

from __future__ import annotations

import pytest

from media.sdp_simulcast import (
    SimulcastOffer,
    add_simulcast_answer,
    parse_simulcast_offers,
)

CHROME_LIKE_OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 1 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "a=mid:0",
        "a=sendonly",
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97",
        "a=mid:1",
        "a=sendonly",
        "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
        "a=rid:q send",
        "a=rid:h send",
        "a=rid:f send",
        "a=simulcast:send q;h;f",
        "",
    ]
)


def test_chrome_offer_is_read_in_layer_order() -> None:
    offers = parse_simulcast_offers(CHROME_LIKE_OFFER)
    assert offers == {"1": SimulcastOffer("1", ("q", "h", "f"), frozenset())}
    assert offers["1"].layer_of("f") == 2
    assert offers["1"].layer_of("x") is None


@pytest.mark.parametrize(
    ("listed", "expected"),
    [
        ("f;h;q", ("q", "h", "f")),  # known names are sorted lowest first
        ("high;low;mid", ("low", "mid", "high")),
        ("2;0;1", ("0", "1", "2")),
        ("b;a;c", ("b", "a", "c")),  # unknown names keep the offer's order
        ("q,x;h;f", ("q", "h", "f")),  # alternatives keep the first choice
    ],
)
def test_layer_order(listed: str, expected: tuple[str, ...]) -> None:
    rids = {r.split(",")[0].lstrip("~") for r in listed.split(";")}
    sdp = CHROME_LIKE_OFFER.replace("a=simulcast:send q;h;f", f"a=simulcast:send {listed}")
    sdp = sdp.replace(
        "a=rid:q send\r\na=rid:h send\r\na=rid:f send",
        "\r\n".join(f"a=rid:{r} send" for r in sorted(rids)),
    )
    assert parse_simulcast_offers(sdp)["1"].rids == expected


def test_paused_and_unlisted_and_single_layer() -> None:
    paused = CHROME_LIKE_OFFER.replace("send q;h;f", "send q;~h;f")
    assert parse_simulcast_offers(paused)["1"].paused == frozenset({"h"})
    # A rid listed in a=simulcast without an a=rid line is not a stream we can map.
    missing = CHROME_LIKE_OFFER.replace("a=rid:h send\r\n", "")
    assert parse_simulcast_offers(missing)["1"].rids == ("q", "f")
    single = CHROME_LIKE_OFFER.replace("send q;h;f", "send q")
    assert parse_simulcast_offers(single) == {}
    assert parse_simulcast_offers(CHROME_LIKE_OFFER.replace("a=simulcast:send q;h;f", "")) == {}


def test_hostile_offers_stay_bounded() -> None:
    many = CHROME_LIKE_OFFER.replace(
        "a=simulcast:send q;h;f",
        "a=simulcast:send " + ";".join(f"r{i}" for i in range(50)),
    ) + "\r\n".join(f"a=rid:r{i} send" for i in range(50))
    # The extra a=rid lines land after the last m-section's lines: still that section.
    offers = parse_simulcast_offers(many)
    assert len(offers["1"].rids) <= 3
    bad = CHROME_LIKE_OFFER.replace("a=rid:q send", "a=rid:q!! send").replace(
        "send q;h;f", "send q!!;h;f"
    )
    assert parse_simulcast_offers(bad)["1"].rids == ("h", "f")
    assert parse_simulcast_offers("garbage\nm=video\na=simulcast:") == {}


def test_answer_gets_recv_lines_in_the_right_section() -> None:
    answer = "\r\n".join(
        [
            "v=0",
            "s=-",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111",
            "a=mid:0",
            "m=video 9 UDP/TLS/RTP/SAVPF 96 97",
            "a=mid:1",
            "a=recvonly",
            "",
        ]
    )
    offers = parse_simulcast_offers(CHROME_LIKE_OFFER)
    out = add_simulcast_answer(answer, offers)
    video = out.split("m=video", 1)[1]
    audio = out.split("m=video", 1)[0]
    assert "a=rid:q recv\r\na=rid:h recv\r\na=rid:f recv\r\na=simulcast:recv q;h;f" in video
    assert "a=rid" not in audio
    assert out.endswith("a=simulcast:recv q;h;f\r\n")
    # Idempotent: an answer that already has simulcast lines is left alone.
    assert add_simulcast_answer(out, offers) == out
    assert add_simulcast_answer(answer, {}) == answer
