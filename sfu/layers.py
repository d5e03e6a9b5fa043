"""Simulcast layers: which layers a publisher is sending, which one a subscriber wants, and
how a subscriber's downlink estimate is shared among the tracks it receives (pure).

Layers are spatial simulcast indices, 0 = lowest; the words preferred / target / current
are those of `sfu.vocabulary`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from sfu.vocabulary import Allocation, MediaKind, PauseReason

# --------------------------------------------------------------------------- layer activity


class LayerActivityTracker:
    """Bitrate and liveness of each incoming layer of one published track.

    The bitrate is the bytes received in the last `window_ms`, per second. A layer is
    active while its packets keep arriving; one not heard from for `inactive_after_ms`
    (the publisher dropped it: CPU or uplink limits, or it never sent it) is inactive.
    """

    __slots__ = ("_bytes", "_history", "_inactive_after_ms", "_last_ms", "_window_ms")

    def __init__(self, layers: int, window_ms: int = 1000, inactive_after_ms: int = 1000) -> None:
        if layers < 1:
            raise ValueError(f"need at least one layer, got {layers}")
        if window_ms <= 0 or inactive_after_ms <= 0:
            raise ValueError("window_ms and inactive_after_ms must be positive")
        self._window_ms = window_ms
        self._inactive_after_ms = inactive_after_ms
        # Per layer: (arrival ms, bytes) within the window, their byte sum, newest arrival.
        self._history: list[deque[tuple[float, int]]] = [deque() for _ in range(layers)]
        self._bytes = [0] * layers
        self._last_ms: list[float | None] = [None] * layers

    @property
    def layers(self) -> int:
        return len(self._history)

    def _check(self, layer: int) -> None:
        if not 0 <= layer < len(self._history):
            raise ValueError(f"no layer {layer} (have {len(self._history)})")

    def _expire(self, layer: int, now_ms: float) -> None:
        history = self._history[layer]
        horizon = now_ms - self._window_ms
        while history and history[0][0] <= horizon:
            self._bytes[layer] -= history.popleft()[1]

    def on_packet(self, layer: int, size: int, now_ms: float) -> None:
        """One packet of `layer` (its payload size in bytes) arrived at `now_ms`."""
        self._check(layer)
        history = self._history[layer]
        if history and history[-1][0] >= now_ms:
            # Same millisecond (a burst) or a clock step back: merge into the newest entry
            # so the deque stays ordered and small.
            t, b = history[-1]
            history[-1] = (t, b + size)
        else:
            history.append((now_ms, size))
        self._bytes[layer] += size
        last = self._last_ms[layer]
        if last is None or now_ms > last:
            self._last_ms[layer] = now_ms
        self._expire(layer, now_ms)

    def bitrate_bps(self, layer: int, now_ms: float) -> int:
        self._check(layer)
        self._expire(layer, now_ms)
        return self._bytes[layer] * 8000 // self._window_ms

    def is_active(self, layer: int, now_ms: float) -> bool:
        self._check(layer)
        last = self._last_ms[layer]
        return last is not None and now_ms - last < self._inactive_after_ms

    def active_layers(self, now_ms: float) -> tuple[int, ...]:
        return tuple(i for i in range(len(self._history)) if self.is_active(i, now_ms))

    def bitrates(self, now_ms: float) -> tuple[int, ...]:
        """Per layer: its bitrate, 0 when inactive (at least 1 when active, so that 0 keeps
        meaning "inactive" for the allocator even for a layer of empty packets)."""
        return tuple(
            max(1, self.bitrate_bps(i, now_ms)) if self.is_active(i, now_ms) else 0
            for i in range(len(self._history))
        )


# --------------------------------------------------------------------------- preferred layer

# A layer a little smaller than the tile still looks fine (the browser scales it up by
# at most ~11%); taking the next layer up for that would double the bitrate.
PREFERRED_HEIGHT_TOLERANCE = 0.9


def preferred_layer_for(height_px: int, layer_heights: Sequence[int]) -> int:
    """The lowest layer tall enough for a tile `height_px` high (else the top layer).

    `layer_heights` ascending, one per layer, e.g. (180, 360, 720).
    """
    if not layer_heights:
        raise ValueError("no layers")
    needed = height_px * PREFERRED_HEIGHT_TOLERANCE
    for layer, height in enumerate(layer_heights):
        if height >= needed:
            return layer
    return len(layer_heights) - 1


# --------------------------------------------------------------------------- allocation

# An upgrade above the layer a track is currently receiving must leave this fraction of
# the new layer's bitrate spare, so that estimate noise does not flip it up and down.
UPGRADE_HEADROOM = 0.10


@dataclass(frozen=True, slots=True)
class TrackDemand:
    """One track a subscriber receives, as the allocator sees it."""

    producer_id: str
    kind: MediaKind
    priority: int  # higher = more important; audio is always served first regardless
    preferred_layer: int | None  # None = not wanted (paused NOT_WANTED)
    layer_bitrates: tuple[int, ...]  # per layer, 0 = inactive; audio: one entry
    current_layer: int | None  # what the subscriber's forwarder is sending now


@dataclass(frozen=True, slots=True)
class AllocationResult:
    allocations: tuple[Allocation, ...]  # in the order of the demands
    wanted_bps: int  # what everyone's preferred layer would cost (probe when > estimate)
    allocated_bps: int


@dataclass(slots=True)
class _Video:
    index: int
    demand: TrackDemand
    layers: list[int]  # active layers the track may get, ascending, up to its cap
    step: int = -1  # index into `layers` of the chosen layer; -1 = none


class Allocator:
    """Shares a subscriber's downlink estimate among its tracks (pure, deterministic).

    Audio first (always, whatever it costs). Then video by priority, highest first (ties
    in demand order): each track gets its lowest active layer or, if that does not fit,
    is paused (NO_BANDWIDTH) rather than starved into a broken stream. What is left
    upgrades tracks one layer at a time, round robin by priority, up to the preferred
    layer (capped to the highest active one). Going above a track's current layer needs
    UPGRADE_HEADROOM spare; staying at or returning to it only needs it to fit.
    """

    __slots__ = ("upgrade_headroom",)

    def __init__(self, upgrade_headroom: float = UPGRADE_HEADROOM) -> None:
        if upgrade_headroom < 0:
            raise ValueError("headroom must not be negative")
        self.upgrade_headroom = upgrade_headroom

    def _price(self, video: _Video, step: int) -> tuple[int, int]:
        """(extra bitrate, budget needed) to move `video` from its chosen layer to layers[step].

        The headroom is a condition only: what gets charged is the extra bitrate.
        """
        bitrates = video.demand.layer_bitrates
        layer = video.layers[step]
        extra = bitrates[layer] - (bitrates[video.layers[video.step]] if video.step >= 0 else 0)
        current = video.demand.current_layer
        if current is not None and layer <= current:
            return extra, extra
        return extra, extra + int(bitrates[layer] * self.upgrade_headroom)

    def allocate(
        self, estimate_bps: int, demands: Sequence[TrackDemand], now_ms: float
    ) -> AllocationResult:
        """The layer for every demand given a downlink estimate.

        `now_ms` is accepted for the shell's convenience (one clock for every core); the
        allocation itself depends only on the estimate and the demands.
        """
        allocations: list[Allocation | None] = [None] * len(demands)
        budget = max(0, estimate_bps)
        wanted = 0
        videos: list[_Video] = []
        for i, demand in enumerate(demands):
            if demand.kind is MediaKind.AUDIO:
                bitrate = demand.layer_bitrates[0] if demand.layer_bitrates else 0
                allocations[i] = Allocation(demand.producer_id, 0, bitrate)
                budget -= bitrate
                wanted += bitrate
                continue
            if demand.preferred_layer is None:
                allocations[i] = Allocation(demand.producer_id, None, 0, PauseReason.NOT_WANTED)
                continue
            active = [n for n, bps in enumerate(demand.layer_bitrates) if bps > 0]
            if not active:
                allocations[i] = Allocation(
                    demand.producer_id, None, 0, PauseReason.NO_ACTIVE_LAYER
                )
                continue
            # Up to the preferred layer; at least the lowest active one.
            allowed = [n for n in active if n <= demand.preferred_layer] or active[:1]
            wanted += demand.layer_bitrates[allowed[-1]]
            videos.append(_Video(i, demand, allowed))

        # Python's sort is stable: equal priorities keep the demands' order.
        videos.sort(key=lambda v: -v.demand.priority)
        # Everyone's base layer first, then one layer up per track per round. Tracks that
        # could not move stay in the game: a step to a layer measured cheaper than the one
        # below it (it is just starting up) frees budget, so go on until a round is idle.
        for video in videos:
            extra, needed = self._price(video, 0)
            if needed <= budget:
                video.step = 0
                budget -= extra
        moved = True
        while moved:
            moved = False
            for video in videos:
                nxt = video.step + 1
                if nxt >= len(video.layers):
                    continue
                extra, needed = self._price(video, nxt)
                if needed <= budget:
                    budget -= extra
                    video.step = nxt
                    moved = True

        for video in videos:
            pid = video.demand.producer_id
            if video.step < 0:
                allocations[video.index] = Allocation(pid, None, 0, PauseReason.NO_BANDWIDTH)
            else:
                layer = video.layers[video.step]
                allocations[video.index] = Allocation(
                    pid, layer, video.demand.layer_bitrates[layer]
                )
        done = tuple(a for a in allocations if a is not None)
        assert len(done) == len(demands)
        return AllocationResult(done, wanted, sum(a.bitrate_bps for a in done))
