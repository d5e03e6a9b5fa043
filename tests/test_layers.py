"""sfu/layers.py: layer activity, preferred layer from tile size, downlink allocation."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.layers import (
    PREFERRED_HEIGHT_TOLERANCE,
    UPGRADE_HEADROOM,
    AllocationResult,
    Allocator,
    LayerActivityTracker,
    TrackDemand,
    preferred_layer_for,
)
from sfu.vocabulary import Allocation, MediaKind, PauseReason

# --- LayerActivityTracker -------------------------------------------------------------------


def test_tracker_bitrate_over_the_window() -> None:
    t = LayerActivityTracker(3)
    for i in range(100):  # 1000 bytes every 10 ms = 800 kbps
        t.on_packet(1, 1000, i * 10)
    assert t.bitrate_bps(1, 990) == 800_000
    assert t.bitrate_bps(1, 1000) == 792_000  # the packet at 0 left the window
    assert t.bitrate_bps(1, 1989) == 8_000
    assert t.bitrate_bps(1, 1990) == 0
    assert t.bitrate_bps(0, 990) == 0 and t.bitrate_bps(2, 990) == 0
    assert t.layers == 3


def test_tracker_window_length() -> None:
    t = LayerActivityTracker(1, window_ms=500)
    for i in range(100):
        t.on_packet(0, 500, i * 10)
    assert t.bitrate_bps(0, 990) == 50 * 500 * 8 * 2  # 50 packets in 500 ms


def test_tracker_bursts_in_one_millisecond_add_up() -> None:
    t = LayerActivityTracker(1)
    for _ in range(10):
        t.on_packet(0, 1200, 5)
    t.on_packet(0, 800, 4)  # a clock step back still counts, with the burst
    assert t.bitrate_bps(0, 5) == 12_800 * 8
    assert t.bitrate_bps(0, 1004) == 12_800 * 8
    assert t.bitrate_bps(0, 1005) == 0


def test_tracker_layer_that_stops_becomes_inactive() -> None:
    t = LayerActivityTracker(3, inactive_after_ms=500)
    assert t.active_layers(0) == () and t.bitrates(0) == (0, 0, 0)
    for i in range(50):
        now = i * 20
        t.on_packet(0, 300, now)
        t.on_packet(2, 3000, now)
        if i < 10:
            t.on_packet(1, 1000, now)  # layer 1 stops after 180 ms
    assert t.is_active(0, 980) and t.is_active(2, 980)
    assert t.is_active(1, 679) and not t.is_active(1, 680)
    assert t.active_layers(980) == (0, 2)
    assert t.bitrate_bps(1, 980) == 80_000  # still in the window, but the layer is gone
    assert t.bitrates(980) == (120_000, 0, 1_200_000)
    t.on_packet(1, 1000, 1000)  # it comes back
    assert t.active_layers(1000) == (0, 1, 2)
    assert t.active_layers(1480) == (1,)
    assert t.active_layers(1500) == ()


def test_tracker_active_layer_of_empty_packets_reports_at_least_one_bps() -> None:
    t = LayerActivityTracker(2)
    t.on_packet(1, 0, 0)
    assert t.is_active(1, 10) and t.bitrate_bps(1, 10) == 0
    assert t.bitrates(10) == (0, 1)


@pytest.mark.parametrize(
    "kwargs", [{"layers": 0}, {"layers": 1, "window_ms": 0}, {"layers": 1, "inactive_after_ms": 0}]
)
def test_tracker_rejects_bad_settings(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        LayerActivityTracker(**kwargs)


@pytest.mark.parametrize("layer", [-1, 3])
def test_tracker_rejects_unknown_layers(layer: int) -> None:
    t = LayerActivityTracker(3)
    with pytest.raises(ValueError):
        t.on_packet(layer, 1, 0)
    with pytest.raises(ValueError):
        t.bitrate_bps(layer, 0)
    with pytest.raises(ValueError):
        t.is_active(layer, 0)


@settings(max_examples=200)
@given(
    gaps=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 1500)), max_size=60),
    window=st.integers(1, 1500),
    after=st.integers(1, 1500),
    probe=st.integers(0, 2000),
)
def test_tracker_matches_a_brute_force_count(
    gaps: list[tuple[int, int]], window: int, after: int, probe: int
) -> None:
    t = LayerActivityTracker(1, window_ms=window, inactive_after_ms=after)
    now = 0
    packets: list[tuple[int, int]] = []
    for gap, size in gaps:
        now += gap
        t.on_packet(0, size, now)
        packets.append((now, size))
        in_window = sum(s for at, s in packets if at > now - window)
        assert t.bitrate_bps(0, now) == in_window * 8000 // window
    end = now + probe
    in_window = sum(s for at, s in packets if at > end - window)
    assert t.bitrate_bps(0, end) == in_window * 8000 // window
    assert t.is_active(0, end) is (bool(packets) and end - packets[-1][0] < after)


# --- preferred_layer_for ---------------------------------------------------------------------

HEIGHTS = (180, 360, 720)


@pytest.mark.parametrize(
    ("height", "layer"),
    [
        (0, 0),
        (90, 0),
        (180, 0),
        (200, 0),  # 180 is within the tolerance of 200
        (201, 1),
        (360, 1),
        (400, 1),
        (401, 2),
        (720, 2),
        (800, 2),
        (2160, 2),  # taller than every layer: the top one
    ],
)
def test_preferred_layer_for(height: int, layer: int) -> None:
    assert preferred_layer_for(height, HEIGHTS) == layer


def test_preferred_layer_for_other_layouts() -> None:
    assert PREFERRED_HEIGHT_TOLERANCE == 0.9
    assert preferred_layer_for(1000, (360,)) == 0
    assert preferred_layer_for(300, [270, 540]) == 0
    assert preferred_layer_for(301, [270, 540]) == 1
    with pytest.raises(ValueError):
        preferred_layer_for(100, ())


# --- Allocator -------------------------------------------------------------------------------

LAYERS = (150_000, 500_000, 1_500_000)
OPUS = 40_000


def video(
    pid: str,
    preferred: int | None = 2,
    current: int | None = None,
    priority: int = 0,
    bitrates: tuple[int, ...] = LAYERS,
) -> TrackDemand:
    return TrackDemand(pid, MediaKind.VIDEO, priority, preferred, bitrates, current)


def audio(pid: str, priority: int = 0, bitrate: int = OPUS) -> TrackDemand:
    return TrackDemand(pid, MediaKind.AUDIO, priority, 0, (bitrate,), 0)


def layers_of(result: AllocationResult) -> dict[str, int | None]:
    return {a.producer_id: a.target_layer for a in result.allocations}


def exact() -> Allocator:
    """The allocator without the keep tolerance: these tables check exact budgets."""
    return Allocator(keep_tolerance=0, dwell_ms=0, pause_dwell_ms=0)


def test_plenty_of_bandwidth_gives_everyone_their_preferred_layer() -> None:
    result = exact().allocate(10_000_000, [audio("a"), video("v", preferred=2)], 0)
    assert result == AllocationResult(
        (Allocation("a", 0, OPUS), Allocation("v", 2, 1_500_000)),
        wanted_bps=OPUS + 1_500_000,
        allocated_bps=OPUS + 1_500_000,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.wanted_bps = 1  # type: ignore[misc]


def test_audio_is_always_served_and_first() -> None:
    # Listed last with the lowest priority, audio still takes its share before video.
    demands = [video("v", current=0, priority=10), audio("a", priority=-5)]
    result = exact().allocate(180_000, demands, 0)
    assert result.allocations == (
        Allocation("v", None, 0, PauseReason.NO_BANDWIDTH),
        Allocation("a", 0, OPUS),
    )
    assert result.allocated_bps == OPUS
    # Even with no estimate at all, audio is sent (it is cheap and the call needs it).
    nothing = exact().allocate(0, [audio("a"), audio("b", bitrate=0)], 0)
    assert nothing.allocations == (Allocation("a", 0, OPUS), Allocation("b", 0, 0))
    empty = exact().allocate(1000, [TrackDemand("x", MediaKind.AUDIO, 0, None, (), None)], 0)
    assert empty.allocations == (Allocation("x", 0, 0),)


def test_higher_priority_gets_the_base_layer_first() -> None:
    demands = [video("low", current=0, priority=1), video("high", current=0, priority=5)]
    result = exact().allocate(200_000, demands, 0)
    assert result.allocations == (
        Allocation("low", None, 0, PauseReason.NO_BANDWIDTH),
        Allocation("high", 0, 150_000),
    )
    assert result.wanted_bps == 3_000_000
    # Equal priorities: the order of the demands decides.
    tie = exact().allocate(200_000, [video("x", current=0), video("y", current=0)], 0)
    assert layers_of(tie) == {"x": 0, "y": None}


def test_a_track_that_cannot_get_its_base_layer_does_not_block_cheaper_ones() -> None:
    demands = [
        video("big", current=0, priority=9, bitrates=(400_000, 900_000)),
        video("small", current=0, priority=1),
    ]
    assert layers_of(exact().allocate(300_000, demands, 0)) == {"big": None, "small": 0}


def test_upgrades_go_round_robin_by_priority() -> None:
    # Greedy by priority would give high layer 2 and low nothing above its base; round
    # robin gives both layer 1 first.
    demands = [video("low", priority=1), video("high", priority=5)]
    assert layers_of(exact().allocate(1_900_000, demands, 0)) == {"low": 1, "high": 1}
    # With more, the higher priority goes up first.
    assert layers_of(exact().allocate(2_300_000, demands, 0)) == {"low": 1, "high": 2}
    assert layers_of(exact().allocate(3_400_000, demands, 0)) == {"low": 2, "high": 2}


@pytest.mark.parametrize(
    ("preferred", "bitrates", "current", "estimate", "layer", "reason"),
    [
        (None, LAYERS, 1, 10_000_000, None, PauseReason.NOT_WANTED),
        (2, (0, 0, 0), 1, 10_000_000, None, PauseReason.NO_ACTIVE_LAYER),
        (2, (), None, 10_000_000, None, PauseReason.NO_ACTIVE_LAYER),
        (2, LAYERS, 0, 149_999, None, PauseReason.NO_BANDWIDTH),
        (2, LAYERS, 0, 0, None, PauseReason.NO_BANDWIDTH),
        (2, LAYERS, 0, -5, None, PauseReason.NO_BANDWIDTH),
        (2, LAYERS, 0, 150_000, 0, None),
    ],
)
def test_pause_reasons(
    preferred: int | None,
    bitrates: tuple[int, ...],
    current: int | None,
    estimate: int,
    layer: int | None,
    reason: PauseReason | None,
) -> None:
    demand = video("v", preferred=preferred, current=current, bitrates=bitrates)
    (allocation,) = exact().allocate(estimate, [demand], 0).allocations
    assert (allocation.target_layer, allocation.pause_reason) == (layer, reason)
    assert allocation.bitrate_bps == (0 if layer is None else bitrates[layer])


@pytest.mark.parametrize(
    ("current", "estimate", "layer"),
    [
        # Starting (or resuming) needs headroom even for the base layer.
        (None, 164_999, None),
        (None, 165_000, 0),
        (0, 150_000, 0),
        # Layer 1 costs 500k: going up to it needs 550k, staying needs 500k.
        (0, 549_999, 0),
        (0, 550_000, 1),
        (1, 500_000, 1),
        (2, 500_000, 1),
        (1, 499_999, 0),
        # Layer 2 costs 1.5M: up needs 1.65M, staying 1.5M.
        (1, 1_649_999, 1),
        (1, 1_650_000, 2),
        (2, 1_500_000, 2),
        (None, 1_650_000, 2),
    ],
)
def test_hysteresis(current: int | None, estimate: int, layer: int | None) -> None:
    assert UPGRADE_HEADROOM == 0.10
    (allocation,) = exact().allocate(estimate, [video("v", current=current)], 0).allocations
    assert allocation.target_layer == layer


def test_headroom_is_a_condition_not_a_cost() -> None:
    # Two tracks starting: 165k each is needed for the base, but only 150k is charged,
    # so 330k leaves room for both.
    demands = [video("a"), video("b")]
    assert layers_of(exact().allocate(330_000, demands, 0)) == {"a": 0, "b": 0}
    assert (
        Allocator(upgrade_headroom=0, keep_tolerance=0).allocate(300_000, demands, 0).allocated_bps
        == 300_000
    )
    with pytest.raises(ValueError):
        Allocator(upgrade_headroom=-0.1)


@pytest.mark.parametrize(
    ("bitrates", "preferred", "estimate", "layer", "wanted"),
    [
        # An inactive middle layer is skipped over.
        ((150_000, 0, 1_500_000), 2, 10_000_000, 2, 1_500_000),
        ((150_000, 0, 1_500_000), 2, 1_000_000, 0, 1_500_000),
        # Preferred 1 but inactive: the highest active below it.
        ((150_000, 0, 1_500_000), 1, 10_000_000, 0, 150_000),
        # Preferred below every active layer: the lowest active one is the least it gets.
        ((0, 500_000, 1_500_000), 0, 10_000_000, 1, 500_000),
        ((0, 500_000, 1_500_000), 2, 600_000, 1, 1_500_000),
        # Preferred capped to the highest active layer.
        ((150_000, 500_000, 0), 2, 10_000_000, 1, 500_000),
        (LAYERS, 7, 10_000_000, 2, 1_500_000),
        # Preferred below the top stops upgrades there.
        (LAYERS, 1, 10_000_000, 1, 500_000),
        (LAYERS, 0, 10_000_000, 0, 150_000),
    ],
)
def test_inactive_layers_and_preferred_caps(
    bitrates: tuple[int, ...], preferred: int, estimate: int, layer: int, wanted: int
) -> None:
    result = exact().allocate(estimate, [video("v", preferred, bitrates=bitrates)], 0)
    assert result.allocations[0].target_layer == layer
    assert result.allocations[0].bitrate_bps == bitrates[layer]
    assert result.wanted_bps == wanted


def test_wanted_counts_what_the_subscriber_would_like() -> None:
    demands = [
        audio("a"),
        video("v1", preferred=1),
        video("v2", preferred=None),  # not wanted: costs nothing
        video("v3", bitrates=(0, 0, 0)),  # nothing to send
        video("v4", preferred=2),
    ]
    result = exact().allocate(400_000, demands, 0)
    assert result.wanted_bps == OPUS + 500_000 + 1_500_000
    assert result.allocated_bps == OPUS + 150_000 + 150_000
    assert [a.producer_id for a in result.allocations] == ["a", "v1", "v2", "v3", "v4"]
    assert [a.pause_reason for a in result.allocations] == [
        None,
        None,
        PauseReason.NOT_WANTED,
        PauseReason.NO_ACTIVE_LAYER,
        None,
    ]


def test_empty() -> None:
    assert exact().allocate(1_000_000, [], 0) == AllocationResult((), 0, 0)


layer_rate = st.sampled_from([0, 100_000, 150_000, 300_000, 500_000, 900_000, 1_500_000])
demand = st.builds(
    TrackDemand,
    producer_id=st.text(min_size=1, max_size=3),
    kind=st.sampled_from(MediaKind),
    priority=st.integers(-2, 2),
    preferred_layer=st.none() | st.integers(0, 3),
    layer_bitrates=st.lists(layer_rate, max_size=3).map(tuple),
    current_layer=st.none() | st.integers(0, 3),
)


def needed(d: TrackDemand, frm: int | None, to: int) -> int:
    extra = d.layer_bitrates[to] - (0 if frm is None else d.layer_bitrates[frm])
    if d.current_layer is not None and to <= d.current_layer:
        return extra
    return extra + int(d.layer_bitrates[to] * UPGRADE_HEADROOM)


@settings(max_examples=400)
@given(estimate=st.integers(-1000, 5_000_000), demands=st.lists(demand, max_size=6))
def test_allocation_properties(estimate: int, demands: list[TrackDemand]) -> None:
    result = exact().allocate(estimate, demands, 0)
    assert result == exact().allocate(estimate, demands, 0)  # deterministic
    assert len(result.allocations) == len(demands)
    audio_bps = sum(
        d.layer_bitrates[0] for d in demands if d.kind is MediaKind.AUDIO and d.layer_bitrates
    )
    video_bps = 0
    left = max(0, estimate) - audio_bps
    for d, a in zip(demands, result.allocations, strict=True):
        assert a.producer_id == d.producer_id
        if d.kind is MediaKind.AUDIO:
            assert a.target_layer == 0 and a.pause_reason is None
            continue
        active = [n for n, bps in enumerate(d.layer_bitrates) if bps > 0]
        if d.preferred_layer is None:
            assert a == Allocation(d.producer_id, None, 0, PauseReason.NOT_WANTED)
        elif not active:
            assert a == Allocation(d.producer_id, None, 0, PauseReason.NO_ACTIVE_LAYER)
        elif a.target_layer is None:
            assert a.pause_reason is PauseReason.NO_BANDWIDTH and a.bitrate_bps == 0
        else:
            assert a.target_layer in active and a.pause_reason is None
            assert a.target_layer <= max(d.preferred_layer, active[0])
            assert a.bitrate_bps == d.layer_bitrates[a.target_layer]
            video_bps += a.bitrate_bps
    # Video never takes more than what audio left over...
    assert video_bps <= max(0, left)
    assert result.allocated_bps == audio_bps + video_bps
    # ... and nothing more would have fitted: no paused track could start, and no track
    # below its cap could take its next layer, with what is left at the end.
    spare = left - video_bps
    for d, a in zip(demands, result.allocations, strict=True):
        if d.kind is MediaKind.AUDIO or d.preferred_layer is None:
            continue
        allowed = [n for n, bps in enumerate(d.layer_bitrates) if bps > 0]
        allowed = [n for n in allowed if n <= d.preferred_layer] or allowed[:1]
        if not allowed:
            continue
        if a.target_layer is None:
            assert needed(d, None, allowed[0]) > spare
        elif a.target_layer != allowed[-1]:
            nxt = allowed[allowed.index(a.target_layer) + 1]
            assert needed(d, a.target_layer, nxt) > spare


def test_a_layer_measured_cheaper_than_the_one_below_frees_budget_for_others() -> None:
    # b's layer 1 is just starting up and measures less than its layer 0: stepping b up
    # frees budget, which a (stuck in the first round) then uses.
    demands = [
        video("a", preferred=1, current=1, priority=5, bitrates=(300_000, 900_000)),
        video("b", preferred=1, current=1, priority=1, bitrates=(900_000, 100_000)),
    ]
    result = exact().allocate(1_300_000, demands, 0)
    assert layers_of(result) == {"a": 1, "b": 1}
    assert result.allocated_bps == 1_000_000


def _video(layer_bitrates: tuple[int, ...], current: int | None) -> TrackDemand:
    return TrackDemand("cam", MediaKind.VIDEO, 1, 2, layer_bitrates, current)


def test_a_track_that_lost_a_layer_does_not_climb_back_at_once() -> None:
    rates = (150_000, 500_000, 1_500_000)
    allocator = Allocator(hold_ms=4000, keep_tolerance=0, dwell_ms=0, pause_dwell_ms=0)
    first = allocator.allocate(3_000_000, [_video(rates, None)], 0)
    assert first.allocations[0].target_layer == 2
    fell = allocator.allocate(1_400_000, [_video(rates, 2)], 1000)
    assert fell.allocations[0].target_layer == 1
    # The estimate is back, but the hold keeps the track at the layer it fell to ...
    held = allocator.allocate(1_800_000, [_video(rates, 1)], 4999)
    assert held.allocations[0].target_layer == 1
    # ... until it expires.
    assert allocator.allocate(1_800_000, [_video(rates, 1)], 5000).allocations[0].target_layer == 2


def test_falling_again_soon_doubles_the_hold() -> None:
    rates = (150_000, 500_000, 1_500_000)
    allocator = Allocator(hold_ms=1000, keep_tolerance=0, dwell_ms=0, pause_dwell_ms=0)
    allocator.allocate(3_000_000, [_video(rates, None)], 0)
    allocator.allocate(1_400_000, [_video(rates, 2)], 0)  # hold 1 s, until 1000
    assert allocator.allocate(1_800_000, [_video(rates, 1)], 1000).allocations[0].target_layer == 2
    allocator.allocate(1_400_000, [_video(rates, 2)], 1500)  # fell again within 2 x hold: 2 s
    assert allocator.allocate(1_800_000, [_video(rates, 1)], 3000).allocations[0].target_layer == 1
    assert allocator.allocate(1_800_000, [_video(rates, 1)], 3500).allocations[0].target_layer == 2


def test_a_paused_track_resumes_on_its_lowest_layer_during_the_hold() -> None:
    rates = (150_000, 500_000, 1_500_000)
    allocator = Allocator(hold_ms=4000, keep_tolerance=0, dwell_ms=0, pause_dwell_ms=0)
    allocator.allocate(3_000_000, [_video(rates, None)], 0)
    paused = allocator.allocate(120_000, [_video(rates, 2)], 100)
    assert paused.allocations[0].target_layer is None
    # 170 kbit/s: the lowest layer fits (with headroom) but is under 1.5 x the fall's estimate.
    resumed = allocator.allocate(170_000, [_video(rates, None)], 200)
    assert resumed.allocations[0].target_layer == 0


def test_a_much_larger_estimate_ends_the_hold_early() -> None:
    rates = (150_000, 500_000, 1_500_000)
    allocator = Allocator(hold_ms=4000, keep_tolerance=0, dwell_ms=0, pause_dwell_ms=0)
    allocator.allocate(3_000_000, [_video(rates, None)], 0)
    allocator.allocate(1_400_000, [_video(rates, 2)], 0)
    # 1.4 x the estimate at the fall: still held; 1.5 x: the link changed, climb now.
    assert allocator.allocate(1_960_000, [_video(rates, 1)], 100).allocations[0].target_layer == 1
    climbed = allocator.allocate(2_100_000, [_video(rates, 1)], 200)
    assert climbed.allocations[0].target_layer == 2


def test_a_track_keeps_its_layer_through_estimate_dips() -> None:
    rates = (150_000, 500_000, 1_500_000)
    allocator = Allocator(keep_tolerance=0.25, dwell_ms=0, pause_dwell_ms=0)
    # Receiving layer 1 (500 kbit/s): a dip to 400 kbit/s keeps it, 370 kbit/s does not.
    assert allocator.allocate(400_000, [_video(rates, 1)], 0).allocations[0].target_layer == 1
    assert allocator.allocate(370_000, [_video(rates, 1)], 0).allocations[0].target_layer == 0
    # Not receiving it yet: climbing to it needs the full cost plus headroom.
    fresh = Allocator(keep_tolerance=0.25, dwell_ms=0)
    assert fresh.allocate(400_000, [_video(rates, 0)], 0).allocations[0].target_layer == 0
    with pytest.raises(ValueError):
        Allocator(keep_tolerance=1.0)


def test_a_climb_waits_until_the_budget_has_afforded_it_for_the_dwell() -> None:
    rates = (150_000, 500_000, 1_500_000)
    allocator = Allocator(dwell_ms=1500, keep_tolerance=0)
    # Receiving layer 1; the estimate jumps (a probe): no climb yet.
    assert allocator.allocate(2_000_000, [_video(rates, 1)], 0).allocations[0].target_layer == 1
    assert allocator.allocate(2_000_000, [_video(rates, 1)], 1000).allocations[0].target_layer == 1
    # The estimate fell back for a moment: the wait starts over.
    assert allocator.allocate(600_000, [_video(rates, 1)], 1200).allocations[0].target_layer == 1
    assert allocator.allocate(2_000_000, [_video(rates, 1)], 1400).allocations[0].target_layer == 1
    assert allocator.allocate(2_000_000, [_video(rates, 1)], 2800).allocations[0].target_layer == 1
    assert allocator.allocate(2_000_000, [_video(rates, 1)], 2900).allocations[0].target_layer == 2
    # Starting (nothing received yet) does not wait.
    start = Allocator(dwell_ms=1500)
    assert start.allocate(2_000_000, [_video(rates, None)], 0).allocations[0].target_layer == 2


def test_a_playing_video_is_paused_only_after_the_grace_period() -> None:
    rates = (150_000, 500_000, 1_500_000)
    allocator = Allocator(pause_dwell_ms=3000)
    # Playing layer 0 when the estimate collapses: it keeps playing for the grace period ...
    assert allocator.allocate(50_000, [_video(rates, 0)], 0).allocations[0].target_layer == 0
    assert allocator.allocate(50_000, [_video(rates, 0)], 2999).allocations[0].target_layer == 0
    # ... and the grace restarts when the layer fits again in between.
    assert allocator.allocate(500_000, [_video(rates, 0)], 3000).allocations[0].target_layer == 0
    assert allocator.allocate(50_000, [_video(rates, 0)], 3100).allocations[0].target_layer == 0
    paused = allocator.allocate(50_000, [_video(rates, 0)], 6100).allocations[0]
    assert (paused.target_layer, paused.pause_reason) == (None, PauseReason.NO_BANDWIDTH)
    # Not playing yet: nothing to keep, paused at once.
    fresh = Allocator(pause_dwell_ms=3000)
    assert fresh.allocate(50_000, [_video(rates, None)], 0).allocations[0].target_layer is None
