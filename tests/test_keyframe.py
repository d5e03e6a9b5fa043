"""sfu/keyframe.py: one PLI per interval, retried until a keyframe arrives."""

from __future__ import annotations

import pytest

from sfu.keyframe import KeyframeRequester

# Each step: (operation, now_ms, expected return of request/poll or None for on_keyframe).
SCENARIOS = [
    (
        "first request goes out, repeats are suppressed",
        (1000, 1000),
        [
            ("request", 0, True),
            ("request", 10, False),
            ("request", 999, False),
            ("request", 1000, True),
        ],
        dict(sent=2, suppressed=2),
    ),
    (
        "poll retries while no keyframe comes",
        (1000, 1000),
        [
            ("request", 0, True),
            ("poll", 500, False),
            ("poll", 999, False),
            ("poll", 1000, True),
            ("poll", 1500, False),
            ("poll", 2000, True),
        ],
        dict(sent=3, suppressed=0),
    ),
    (
        "keyframe clears demand: no retry",
        (1000, 1000),
        [
            ("request", 0, True),
            ("keyframe", 300, None),
            ("poll", 1000, False),
            ("poll", 5000, False),
        ],
        dict(sent=1, suppressed=0),
    ),
    (
        "poll without demand does nothing",
        (1000, 1000),
        [("poll", 0, False), ("poll", 10_000, False)],
        dict(sent=0, suppressed=0),
    ),
    (
        "new demand after a keyframe still respects the interval",
        (1000, 1000),
        [
            ("request", 0, True),
            ("keyframe", 100, None),
            ("request", 200, False),
            ("poll", 999, False),
            ("poll", 1000, True),
        ],
        dict(sent=2, suppressed=1),
    ),
    (
        "suppressed request is retried by poll",
        (500, 2000),
        [
            ("request", 0, True),
            ("request", 600, True),
            ("request", 700, False),
            ("poll", 2599, False),
            ("poll", 2600, True),
        ],
        dict(sent=3, suppressed=1),
    ),
    (
        "retry never faster than the minimum interval",
        (1000, 100),
        [("request", 0, True), ("poll", 100, False), ("poll", 999, False), ("poll", 1000, True)],
        dict(sent=2, suppressed=0),
    ),
    (
        "zero interval: every request goes out",
        (0, 1000),
        [("request", 0, True), ("request", 0, True), ("request", 1, True)],
        dict(sent=3, suppressed=0),
    ),
    (
        "clock going backwards suppresses",
        (1000, 1000),
        [("request", 5000, True), ("request", 4000, False), ("poll", 4500, False)],
        dict(sent=1, suppressed=1),
    ),
    (
        "large timestamps",
        (1000, 1000),
        [("request", 2**40, True), ("request", 2**40 + 999, False), ("poll", 2**40 + 1000, True)],
        dict(sent=2, suppressed=1),
    ),
]


@pytest.mark.parametrize(
    ("intervals", "steps", "counters"),
    [s[1:] for s in SCENARIOS],
    ids=[s[0] for s in SCENARIOS],
)
def test_scenarios(
    intervals: tuple[int, int],
    steps: list[tuple[str, int, bool | None]],
    counters: dict[str, int],
) -> None:
    k = KeyframeRequester(min_interval_ms=intervals[0], retry_ms=intervals[1])
    for i, (operation, now, expected) in enumerate(steps):
        if operation == "request":
            assert k.request(now) is expected, i
            assert k.pending
        elif operation == "poll":
            assert k.poll(now) is expected, i
        else:
            k.on_keyframe(now)
            assert not k.pending
            assert k.last_keyframe_ms == now
    assert k.sent == counters["sent"]
    assert k.suppressed == counters["suppressed"]


def test_defaults() -> None:
    k = KeyframeRequester()
    assert not k.pending
    assert k.last_keyframe_ms is None
    assert k.request(0) and not k.request(999) and k.request(1000)


@pytest.mark.parametrize(("min_interval", "retry"), [(-1, 1000), (1000, 0)])
def test_rejects_bad_intervals(min_interval: int, retry: int) -> None:
    with pytest.raises(ValueError):
        KeyframeRequester(min_interval_ms=min_interval, retry_ms=retry)


def test_many_subscribers_one_pli_per_second() -> None:
    k = KeyframeRequester()
    sent = 0
    for now in range(0, 10_000, 5):  # 50 subscribers hammering, one every 5 ms
        sent += k.request(now)
        sent += k.poll(now)
    assert sent == 10
    assert k.sent == 10
