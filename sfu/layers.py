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
# A track keeps the layer it is receiving while the budget still covers this much less than
# the layer's measured cost: keyframes and estimate noise must not flip it down (or pause it).
KEEP_TOLERANCE = 0.25
# After a track loses a layer it may not climb above the layer it fell to for this long, and
# each further fall within twice that time doubles the wait (up to the maximum): an estimate
# that hovers around a layer's cost would otherwise flip the layer (and request a keyframe)
# every second.
UPGRADE_HOLD_MS = 4000
UPGRADE_HOLD_MAX_MS = 16000
# A playing video is paused for bandwidth only after its lowest layer has not fitted for this
# long: estimates dip for a moment after a loss burst, and a pause is a freeze the viewer sees.
PAUSE_DWELL_MS = 3000
# Climbing above the layer a track receives needs the budget to afford it for this long: a
# probe can overshoot for a moment, and a layer chosen on it would congest the link at once.
UPGRADE_DWELL_MS = 1500
# ... unless the estimate has since grown this much past what it was at the fall: the link
# clearly changed (a probe found the room), so waiting would only keep the picture small.
HOLD_RELEASE_GROWTH = 1.5


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
    UPGRADE_HEADROOM spare; keeping it needs only (1 - KEEP_TOLERANCE) of its cost; going back
    down to a lower layer needs it to fit.
    """

    __slots__ = (
        "_affordable",
        "_holds",
        "_last_target",
        "_starved",
        "dwell_ms",
        "pause_dwell_ms",
        "hold_ms",
        "keep_tolerance",
        "upgrade_headroom",
    )

    def __init__(
        self,
        upgrade_headroom: float = UPGRADE_HEADROOM,
        hold_ms: int = UPGRADE_HOLD_MS,
        keep_tolerance: float = KEEP_TOLERANCE,
        dwell_ms: int = UPGRADE_DWELL_MS,
        pause_dwell_ms: int = PAUSE_DWELL_MS,
    ) -> None:
        if upgrade_headroom < 0 or not 0 <= keep_tolerance < 1:
            raise ValueError("headroom must not be negative, keep tolerance within [0, 1)")
        self.upgrade_headroom = upgrade_headroom
        self.keep_tolerance = keep_tolerance
        self.dwell_ms = dwell_ms
        self.pause_dwell_ms = pause_dwell_ms
        self._starved: dict[str, float] = {}  # producer id -> since when its lowest layer misfits
        # producer id -> (layer above the current one, since when the budget affords it)
        self._affordable: dict[str, tuple[int, float]] = {}
        self.hold_ms = hold_ms
        self._last_target: dict[str, int | None] = {}
        # producer id -> (no upgrade above layer, until ms, hold length, estimate at the fall)
        self._holds: dict[str, tuple[int, float, float, int]] = {}

    def _ceiling(self, producer_id: str, now_ms: float, estimate_bps: int) -> int | None:
        hold = self._holds.get(producer_id)
        if hold is None or now_ms >= hold[1] or estimate_bps >= HOLD_RELEASE_GROWTH * hold[3]:
            return None
        return hold[0]

    def _dwelt(self, video: _Video, layer: int, now_ms: float, touched: set[str]) -> bool:
        """An affordable climb above the current layer happens once it stayed affordable."""
        current = video.demand.current_layer
        if current is None or layer <= current or self.dwell_ms <= 0:
            return True
        pid = video.demand.producer_id
        touched.add(pid)
        seen = self._affordable.get(pid)
        if seen is None or seen[0] != layer:
            self._affordable[pid] = (layer, now_ms)
            return False
        if now_ms - seen[1] < self.dwell_ms:
            return False
        del self._affordable[pid]
        return True

    def _remember(
        self, allocations: Sequence[Allocation], now_ms: float, estimate_bps: int
    ) -> None:
        """Start (or lengthen) an upgrade hold for every video that lost a layer."""
        seen = set()
        for allocation in allocations:
            pid = allocation.producer_id
            seen.add(pid)
            previous = self._last_target.get(pid)
            new = allocation.target_layer
            self._last_target[pid] = new
            fell = previous is not None and allocation.pause_reason is not PauseReason.NOT_WANTED
            fell = fell and (new is None or (previous is not None and new < previous))
            if not fell:
                continue
            hold = self._holds.get(pid)
            length = float(self.hold_ms)
            if hold is not None and now_ms - hold[1] < hold[2]:
                length = min(hold[2] * 2, UPGRADE_HOLD_MAX_MS)  # fell again soon after
            # A pause may end as soon as the lowest layer fits again; only climbing waits.
            floor = 0 if new is None else new
            self._holds[pid] = (floor, now_ms + length, length, estimate_bps)
        for pid in list(self._last_target):
            if pid not in seen:
                del self._last_target[pid]
                self._holds.pop(pid, None)

    def _price(self, video: _Video, step: int) -> tuple[int, int]:
        """(extra bitrate, budget needed) to move `video` from its chosen layer to layers[step].

        The headroom is a condition only: what gets charged is the extra bitrate.
        """
        bitrates = video.demand.layer_bitrates
        layer = video.layers[step]
        extra = bitrates[layer] - (bitrates[video.layers[video.step]] if video.step >= 0 else 0)
        current = video.demand.current_layer
        if current is not None and layer == current:
            return extra, extra - int(bitrates[layer] * self.keep_tolerance)
        if current is not None and layer < current:
            return extra, extra
        return extra, extra + int(bitrates[layer] * self.upgrade_headroom)

    def allocate(
        self, estimate_bps: int, demands: Sequence[TrackDemand], now_ms: float
    ) -> AllocationResult:
        """The layer for every demand given a downlink estimate.

        A track that lost a layer recently is held at or below the layer it fell to (see
        UPGRADE_HOLD_MS); otherwise the allocation depends only on the estimate and demands.
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
        ceilings = {
            v.index: self._ceiling(v.demand.producer_id, now_ms, estimate_bps) for v in videos
        }
        for video in videos:
            pid = video.demand.producer_id
            extra, needed = self._price(video, 0)
            if needed <= budget:
                self._starved.pop(pid, None)
            elif video.demand.current_layer is None:
                continue  # not playing: nothing to keep
            elif now_ms - self._starved.setdefault(pid, now_ms) >= self.pause_dwell_ms:
                del self._starved[pid]
                continue
            # Fits, or playing and within the grace period (the budget may go negative).
            video.step = 0
            budget -= extra
        touched: set[str] = set()
        moved = True
        while moved:
            moved = False
            for video in videos:
                nxt = video.step + 1
                if nxt >= len(video.layers) or video.step < 0:
                    continue
                ceiling = ceilings[video.index]
                if ceiling is not None and video.layers[nxt] > ceiling:
                    continue
                extra, needed = self._price(video, nxt)
                if needed <= budget and self._dwelt(video, video.layers[nxt], now_ms, touched):
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
        for pid in [p for p in self._starved if p not in {v.demand.producer_id for v in videos}]:
            del self._starved[pid]
        # A climb that was not affordable this round (or happened) starts its wait afresh.
        for pid in list(self._affordable):
            if pid not in touched:
                del self._affordable[pid]
        done = tuple(a for a in allocations if a is not None)
        assert len(done) == len(demands)
        self._remember(done, now_ms, estimate_bps)
        return AllocationResult(done, wanted, sum(a.bitrate_bps for a in done))
