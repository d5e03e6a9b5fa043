"""RID-based simulcast in SDP (RFC 8851 a=rid, RFC 8853 a=simulcast), as plain string work.

aiortc's SDP model drops ``a=rid`` and ``a=simulcast``, so the SFU reads them from the offer
text itself and writes the matching receive lines into the final answer text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

URI_RID = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
URI_REPAIRED_RID = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"

# RFC 8851: rid-id = 1*(alpha-numeric / "-" / "_"); we cap the length to keep hostile offers cheap.
_RID_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
MAX_SIMULCAST_LAYERS = 3

# Well-known rid spellings, lowest resolution first. Anything else keeps the offer's order,
# which Chrome and Safari give in sendEncodings order (our web client sends lowest first).
_KNOWN_ORDERS = (
    ("q", "h", "f"),
    ("l", "m", "h"),
    ("low", "mid", "high"),
    ("low", "medium", "high"),
)


@dataclass(frozen=True, slots=True)
class SimulcastOffer:
    """The simulcast streams one video m-section offers to send."""

    mid: str
    rids: tuple[str, ...]  # layer order: index 0 = lowest resolution
    paused: frozenset[str]  # rids offered as paused ("~rid")

    def layer_of(self, rid: str) -> int | None:
        try:
            return self.rids.index(rid)
        except ValueError:
            return None


def _sections(sdp: str) -> list[list[str]]:
    """Session part followed by one list of lines per m-section (line endings removed)."""
    sections: list[list[str]] = [[]]
    for line in sdp.replace("\r\n", "\n").split("\n"):
        if line.startswith("m="):
            sections.append([])
        sections[-1].append(line)
    return sections


def _layer_order(rids: list[str]) -> tuple[str, ...]:
    lowered = [r.lower() for r in rids]
    for order in _KNOWN_ORDERS:
        if set(lowered) <= set(order):
            return tuple(sorted(rids, key=lambda r: order.index(r.lower())))
    if all(r.isdigit() for r in rids):
        return tuple(sorted(rids, key=int))
    return tuple(rids)


def parse_simulcast_offers(sdp: str) -> dict[str, SimulcastOffer]:
    """Video m-sections that offer to send RID simulcast, by mid.

    Alternatives ("a,b") keep their first choice; rids without a matching ``a=rid:… send`` line
    are ignored; more than :data:`MAX_SIMULCAST_LAYERS` layers keep the first ones listed.
    """
    offers: dict[str, SimulcastOffer] = {}
    for lines in _sections(sdp)[1:]:
        if not lines[0].startswith("m=video"):
            continue
        mid: str | None = None
        send_rids: set[str] = set()
        listed: list[str] = []
        paused: set[str] = set()
        for line in lines:
            if line.startswith("a=mid:"):
                mid = line[6:].strip()
            elif line.startswith("a=rid:"):
                parts = line[6:].split()
                if len(parts) >= 2 and parts[1] == "send" and _RID_RE.match(parts[0]):
                    send_rids.add(parts[0])
            elif line.startswith("a=simulcast:"):
                words = line[len("a=simulcast:") :].split()
                if len(words) >= 2 and words[0] == "send":
                    for stream in words[1].split(";"):
                        first = stream.split(",")[0]
                        is_paused = first.startswith("~")
                        rid = first.lstrip("~")
                        if rid not in listed:
                            listed.append(rid)
                        if is_paused:
                            paused.add(rid)
        rids = [r for r in listed if r in send_rids][:MAX_SIMULCAST_LAYERS]
        if mid is not None and len(rids) > 1:
            ordered = _layer_order(rids)
            offers[mid] = SimulcastOffer(mid, ordered, frozenset(paused & set(ordered)))
    return offers


def add_simulcast_answer(answer_sdp: str, offers: dict[str, SimulcastOffer]) -> str:
    """Add ``a=rid:<rid> recv`` and ``a=simulcast:recv …`` to the answer's matching m-sections.

    Only streams the offer listed are answered, so the answer never adds a layer.
    """
    if not offers:
        return answer_sdp
    out: list[str] = []
    sections = _sections(answer_sdp)
    for index, lines in enumerate(sections):
        mid = next((ln[6:].strip() for ln in lines if ln.startswith("a=mid:")), None)
        offer = offers.get(mid) if index > 0 and mid is not None else None
        if offer is not None and not any(ln.startswith("a=simulcast:") for ln in lines):
            # Keep a trailing empty line (the SDP's final CRLF) at the end of the section.
            tail: list[str] = []
            while lines and lines[-1] == "":
                tail.append(lines.pop())
            lines = lines + [f"a=rid:{rid} recv" for rid in offer.rids]
            lines.append("a=simulcast:recv " + ";".join(offer.rids))
            lines.extend(tail)
        out.extend(lines)
    return "\r\n".join(out)
