"""signaling.resume: which closes keep a session, the grace deadline, the bounded queue, tokens."""

from __future__ import annotations

import pytest

from signaling.resume import (
    EPHEMERAL_TYPES,
    MAX_TOKEN_CHARS,
    LinkState,
    ResumeLimits,
    ResumeState,
    Route,
    keeps_session,
    new_resume_token,
)

T0 = 1_000_000
LIMITS = ResumeLimits(grace_ms=20_000, max_messages=5, max_bytes=100)


def state(limits: ResumeLimits = LIMITS) -> ResumeState[str]:
    return ResumeState(limits, token="secret-token")


def replay_all(s: ResumeState[str]) -> list[str]:
    out = []
    while (item := s.next_to_replay()) is not None:
        out.append(item)
    return out


@pytest.mark.parametrize(
    ("code", "grace_ms", "keeps"),
    [
        (None, 20_000, True),  # no close frame: the network
        (1006, 20_000, True),  # abnormal closure / heartbeat timeout
        (1001, 20_000, True),  # going away
        (4000, 20_000, True),  # the web client's "this socket went silent"
        (1011, 20_000, True),
        (1000, 20_000, False),  # a deliberate, clean close
        (1002, 20_000, False),  # protocol error
        (1009, 20_000, False),  # oversized frame
        (1007, 20_000, False),
        (None, 0, False),  # resume switched off
        (1006, 0, False),
    ],
)
def test_which_closes_keep_the_session(code: int | None, grace_ms: int, keeps: bool) -> None:
    assert keeps_session(code, grace_ms) is keeps


def test_tokens_are_unguessable_and_distinct() -> None:
    tokens = {new_resume_token() for _ in range(50)}
    assert len(tokens) == 50
    assert all(len(t) >= 40 and len(t) <= MAX_TOKEN_CHARS for t in tokens)
    assert ResumeState(LIMITS).token != ResumeState(LIMITS).token


def test_attached_sends_and_keeps_nothing() -> None:
    s = state()
    assert s.route("participant-joined", "a", 10, socket_open=True) is Route.SEND
    assert s.queued == 0 and s.state is LinkState.ATTACHED


def test_detach_queues_in_order_and_replays_then_sends_again() -> None:
    s = state()
    assert s.detach(T0) == T0 + 20_000
    assert s.detach(T0 + 500) == T0 + 20_000  # a second drop report keeps the first deadline
    assert s.state is LinkState.DETACHED
    for i, kind in enumerate(["participant-joined", "chat-message", "subscribe-offer"]):
        assert s.route(kind, f"m{i}", 10, socket_open=False) is Route.QUEUED
    assert s.queued == 3 and s.queued_bytes == 30
    assert s.queued_since_drop("subscribe-offer") and not s.queued_since_drop("recording")
    assert s.may_resume("secret-token", T0 + 19_999)
    s.begin_replay()
    assert s.next_to_replay() == "m0"
    # Sent while the replay runs: it waits behind the older ones.
    assert s.route("participant-left", "m3", 10, socket_open=True) is Route.QUEUED
    assert replay_all(s) == ["m1", "m2", "m3"]
    assert s.state is LinkState.ATTACHED and s.queued == 0 and s.queued_bytes == 0
    assert not s.queued_since_drop("subscribe-offer")
    assert s.route("chat-message", "m4", 10, socket_open=True) is Route.SEND


def test_ephemeral_messages_are_not_kept() -> None:
    s = state()
    s.detach(T0)
    for kind in EPHEMERAL_TYPES:
        assert s.route(kind, "x", 10, socket_open=False) is Route.SKIPPED
    assert s.queued == 0


def test_dead_socket_not_yet_noticed_keeps_messages() -> None:
    s = state()
    assert s.route("chat-message", "lost?", 10, socket_open=False) is Route.QUEUED
    s.detach(T0)
    s.begin_replay()
    assert replay_all(s) == ["lost?"]


def test_grace_deadline_boundary() -> None:
    s = state()
    s.detach(T0)
    assert not s.expired(T0 + 19_999)
    assert s.may_resume("secret-token", T0 + 19_999)
    assert s.expired(T0 + 20_000)
    assert not s.may_resume("secret-token", T0 + 20_000)


@pytest.mark.parametrize(
    "token", ["", "secret-tokeN", "secret-token ", "secret", "x" * (MAX_TOKEN_CHARS + 1)]
)
def test_wrong_tokens_are_refused(token: str) -> None:
    s = state()
    s.detach(T0)
    assert not s.may_resume(token, T0 + 1)


def test_resume_of_a_socket_that_still_looks_alive() -> None:
    s = state()
    assert s.may_resume("secret-token", T0)  # attached: the new socket takes over
    assert not s.may_resume("other", T0)


@pytest.mark.parametrize(
    ("count", "size", "overflow_at"),
    [(5, 10, None), (6, 10, 5), (2, 60, 1), (1, 100, None), (1, 101, 0)],
)
def test_queue_bounds_overflow_ends_the_grace(
    count: int, size: int, overflow_at: int | None
) -> None:
    s = state()
    s.detach(T0)
    routes = [s.route("chat-message", f"m{i}", size, socket_open=False) for i in range(count)]
    if overflow_at is None:
        assert routes == [Route.QUEUED] * count and not s.expired(T0 + 1)
        return
    assert routes[:overflow_at] == [Route.QUEUED] * overflow_at
    assert routes[overflow_at] is Route.OVERFLOW
    assert s.overflowed and s.queued == 0 and s.queued_bytes == 0
    assert s.expired(T0 + 1)  # at once, not at the deadline
    assert not s.may_resume("secret-token", T0 + 1)
    assert s.route("chat-message", "later", 1, socket_open=False) is Route.SKIPPED


def test_overflow_also_applies_to_an_attached_link_with_a_dead_socket() -> None:
    s = state(ResumeLimits(grace_ms=1000, max_messages=1, max_bytes=100))
    assert s.route("a", "1", 1, socket_open=False) is Route.QUEUED
    assert s.route("b", "2", 1, socket_open=False) is Route.OVERFLOW
    assert not s.may_resume("secret-token", T0)


def test_drop_during_replay_keeps_the_rest() -> None:
    s = state()
    s.detach(T0)
    for i in range(3):
        s.route("chat-message", f"m{i}", 10, socket_open=False)
    s.begin_replay()
    assert s.next_to_replay() == "m0"
    assert s.detach(T0 + 5000) == T0 + 25_000
    assert s.state is LinkState.DETACHED and s.next_to_replay() is None
    assert s.may_resume("secret-token", T0 + 24_000)
    s.begin_replay()
    assert replay_all(s) == ["m1", "m2"]


def test_close_forgets_everything() -> None:
    s = state()
    s.detach(T0)
    s.route("chat-message", "m0", 10, socket_open=False)
    s.close()
    assert s.state is LinkState.CLOSED and s.queued == 0 and s.queued_bytes == 0
    assert not s.may_resume("secret-token", T0 + 1)
    assert not s.expired(T0 + 10**9)  # nothing left for a timer to do
    assert s.route("chat-message", "m1", 10, socket_open=True) is Route.SKIPPED
    s.detach(T0 + 1)
    assert s.state is LinkState.CLOSED


def test_grace_zero_keeps_nothing() -> None:
    s = state(ResumeLimits(grace_ms=0))
    assert s.route("chat-message", "m", 10, socket_open=False) is Route.SKIPPED
    assert s.queued == 0
