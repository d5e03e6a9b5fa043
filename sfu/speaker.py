"""Active (dominant) speaker from RFC 6464 audio levels (pure).

Each audio packet carries the sender's level in -dBov (0 = loudest, 127 = silence). The
dominant speaker is the one with the most speech energy over the last window; a challenger
takes over only when clearly louder and the current speaker has held the floor a moment, so
the spotlight does not flap on a cough.
"""

from __future__ import annotations

from collections import deque

SPEECH_LEVEL = 60  # -dBov; quieter packets count as silence
WINDOW_MS = 1500
SWITCH_MARGIN = 1.5
MIN_HOLD_MS = 2000


class ActiveSpeakerDetector:
    __slots__ = ("_current", "_levels", "_since_ms", "changes")

    def __init__(self) -> None:
        self._levels: dict[str, deque[tuple[float, int]]] = {}
        self._current: str | None = None
        self._since_ms = 0.0
        self.changes = 0

    def on_level(self, participant: str, level: int, now_ms: float) -> None:
        """`level` is the packet's -dBov value (0..127)."""
        if level > SPEECH_LEVEL:
            return  # silence adds nothing to the score
        history = self._levels.get(participant)
        if history is None:
            history = self._levels[participant] = deque()
        history.append((now_ms, SPEECH_LEVEL - level + 1))

    def forget(self, participant: str) -> None:
        self._levels.pop(participant, None)
        if self._current == participant:
            self._current = None

    def _score(self, participant: str, now_ms: float) -> int:
        history = self._levels.get(participant)
        if not history:
            return 0
        while history and now_ms - history[0][0] > WINDOW_MS:
            history.popleft()
        return sum(weight for _, weight in history)

    def dominant(self, now_ms: float) -> str | None:
        scores = {p: self._score(p, now_ms) for p in list(self._levels)}
        best = max(scores, key=lambda p: scores[p], default=None)
        if best is None or scores[best] == 0:
            return self._current
        current = self._current
        if current is None or current not in scores:
            self._switch(best, now_ms)
        elif best != current:
            held = now_ms - self._since_ms >= MIN_HOLD_MS
            if held and scores[best] > SWITCH_MARGIN * scores[current]:
                self._switch(best, now_ms)
        return self._current

    def _switch(self, participant: str, now_ms: float) -> None:
        self._current = participant
        self._since_ms = now_ms
        self.changes += 1
