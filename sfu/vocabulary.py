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
    LAYER_NOT_SELECTED = "layer-not-selected"


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


# --------------------------------------------------------------------------- simulcast layers
#
# Layers are spatial simulcast indices, 0 = lowest resolution. Three words, used everywhere:
#   preferred - the highest layer the subscriber wants (from its rendered tile size);
#   target    - the layer the allocator chose for now (None = paused);
#   current   - the layer actually being forwarded (None = nothing forwarded yet / paused).


class PauseReason(StrEnum):
    """Why a subscriber's video track has no target layer."""

    NOT_WANTED = "not-wanted"  # tile hidden or minimised
    NO_BANDWIDTH = "no-bandwidth"  # the estimate cannot afford even the lowest layer
    NO_ACTIVE_LAYER = "no-active-layer"  # the publisher is sending no layer at all


@dataclass(frozen=True, slots=True)
class LayerSelection:
    """The layer state of one subscriber's copy of one video track."""

    preferred: int | None
    target: int | None
    current: int | None


@dataclass(frozen=True, slots=True)
class Allocation:
    """The allocator's verdict for one track of one subscriber."""

    producer_id: str
    target_layer: int | None  # None = paused (audio: always 0)
    bitrate_bps: int  # what the chosen layer is expected to cost
    pause_reason: PauseReason | None = None


@dataclass(frozen=True, slots=True)
class TileView:
    """How a subscriber's page shows one remote participant's video (drives `preferred`)."""

    participant_id: str
    width: int  # rendered CSS pixels x devicePixelRatio
    height: int
    visible: bool  # False: hidden, minimised, off-screen or the page is in the background
    pinned: bool = False
