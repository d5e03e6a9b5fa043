"""The one vocabulary of SFU decisions: enums and frozen value records.

Never invent a synonym for one of these elsewhere; import them from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class DropReason(StrEnum):
    """Why a packet was not forwarded (every early return of the forwarding path names one)."""

    WAITING_FOR_KEYFRAME = "waiting-for-keyframe"
    PAUSED = "paused"
    PADDING_ONLY = "padding-only"
    TOO_OLD = "too-old"
    MALFORMED = "malformed"
    UNKNOWN_PAYLOAD_TYPE = "unknown-payload-type"
    NOT_NEGOTIATED = "not-negotiated"


class MediaKind(StrEnum):
    AUDIO = "audio"
    VIDEO = "video"


@dataclass(frozen=True, slots=True)
class ForwardDecision:
    """What the I/O shell must do with one packet for one subscriber.

    When `send`, the outgoing sequence number / timestamp (and VP8 PictureID / TL0PICIDX,
    None = leave as is) are to be written into the packet. `request_keyframe` asks the
    publisher's (debounced) keyframe requester for a keyframe.
    """

    drop_reason: DropReason | None
    sequence_number: int
    timestamp: int
    picture_id: int | None
    tl0picidx: int | None
    request_keyframe: bool

    @property
    def send(self) -> bool:
        return self.drop_reason is None


# Drops carry no per-packet data, so one shared instance per (reason, flag) is enough.
_DROPS: dict[tuple[DropReason, bool], ForwardDecision] = {
    (reason, flag): ForwardDecision(reason, 0, 0, None, None, flag)
    for reason in DropReason
    for flag in (False, True)
}


def drop(reason: DropReason, request_keyframe: bool = False) -> ForwardDecision:
    """A shared, allocation-free drop decision."""
    return _DROPS[reason, request_keyframe]


@dataclass(frozen=True, slots=True)
class KeyframeRequest:
    """Ask the publisher of `producer_id` for a keyframe (the shell sends a PLI)."""

    producer_id: str
    reason: str


# Later issues add LayerSelection (preferred / target / current) here; not implemented yet.
