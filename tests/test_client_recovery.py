"""The synthetic client's recovery decisions (tools/client_recovery.py): pure, fed now_ms."""

from __future__ import annotations

from tools.client_recovery import ReconnectPolicy, StallDetector


def _schedule(policy: ReconnectPolicy, start: int, attempts: int) -> list[int | None]:
    """Delays the policy asks for when every attempt fails at once."""
    now, out = start, []
    for _ in range(attempts):
        delay = policy.next_delay_ms(now)
        out.append(delay)
        if delay is None:
            break
        now += delay
    return out


def test_first_resume_is_immediate_then_backs_off_within_the_grace() -> None:
    policy = ReconnectPolicy(1000, grace_ms=20_000)
    assert _schedule(policy, 1000, 7) == [0, 250, 500, 1000, 2000, 2000, 2000]
    assert policy.attempts == 7


def test_never_sleeps_past_the_grace_period_then_retries_slowly() -> None:
    policy = ReconnectPolicy(0, grace_ms=3000, delays_ms=(0, 2000))
    assert policy.next_delay_ms(0) == 0
    assert policy.next_delay_ms(0) == 2000
    # At 2.5 s one more try fits before the grace ends at 3 s: 499 ms, not 2000.
    assert policy.next_delay_ms(2500) == 499
    assert policy.within_grace(2999) and not policy.within_grace(3000)
    # Past the grace period a resume is a rejoin: slower retries.
    assert policy.next_delay_ms(3000) == 5000


def test_gives_up_after_the_limit() -> None:
    policy = ReconnectPolicy(0, grace_ms=1000, give_up_ms=10_000)
    assert policy.next_delay_ms(9999) is not None
    assert policy.next_delay_ms(10_000) is None


def test_pli_when_packets_arrive_but_nothing_decodes_for_a_second() -> None:
    stall = StallDetector(0, stall_ms=1000, repeat_ms=1000)
    stall.on_packets(10)
    stall.on_frame(100)
    stall.on_packets(50)  # the hole: packets keep coming, no frame comes out
    assert not stall.should_send_pli(1099)
    assert stall.should_send_pli(1100)
    assert not stall.should_send_pli(1200)  # one request per second at most
    stall.on_packets(60)
    assert not stall.should_send_pli(2099)
    assert stall.should_send_pli(2100)
    assert stall.plis == 2


def test_no_pli_when_nothing_arrives_or_nothing_new_since_the_last_request() -> None:
    stall = StallDetector(0)
    stall.on_packets(10)
    stall.on_frame(0)
    # The sender paused or the link is down: a keyframe request would not help.
    assert not stall.should_send_pli(5000)
    stall.on_packets(11)
    assert stall.should_send_pli(5000)
    # Packets stopped after the request: asking again is pointless.
    assert not stall.should_send_pli(9000)
    assert stall.plis == 1


def test_a_decoded_frame_ends_the_stall_and_rearms_at_once() -> None:
    stall = StallDetector(0)
    stall.on_packets(5)
    assert stall.should_send_pli(1000)
    stall.on_frame(1100)  # the keyframe came
    stall.on_packets(30)
    assert not stall.should_send_pli(2000)
    assert stall.should_send_pli(2100)  # a new stall: not held back by the last request
