"""Keyframe request debouncing: one place decides when a publisher gets a PLI."""

from __future__ import annotations


class KeyframeRequester:
    """Debouncer for one publisher track.

    Any number of subscribers may ask for a keyframe; the publisher gets at most one
    request per `min_interval_ms`. Demand stays pending until a keyframe arrives, and
    `poll` re-sends the request every `retry_ms` (never faster than `min_interval_ms`)
    in case the PLI or the keyframe was lost.
    """

    __slots__ = (
        "_last_sent_ms",
        "_min_interval_ms",
        "_pending",
        "_retry_ms",
        "last_keyframe_ms",
        "sent",
        "suppressed",
    )

    def __init__(self, min_interval_ms: int = 1000, retry_ms: int = 1000) -> None:
        if min_interval_ms < 0 or retry_ms <= 0:
            raise ValueError("min_interval_ms must be >= 0 and retry_ms > 0")
        self._min_interval_ms = min_interval_ms
        self._retry_ms = max(retry_ms, min_interval_ms)
        self._pending = False
        self._last_sent_ms: int | None = None
        self.sent = 0  # requests that went out (first sends and retries)
        self.suppressed = 0  # requests absorbed by the debounce
        self.last_keyframe_ms: int | None = None

    @property
    def pending(self) -> bool:
        """A keyframe is wanted and has not arrived yet."""
        return self._pending

    def request(self, now_ms: int) -> bool:
        """Record demand; True means send a PLI now."""
        self._pending = True
        last = self._last_sent_ms
        if last is None or now_ms - last >= self._min_interval_ms:
            self._last_sent_ms = now_ms
            self.sent += 1
            return True
        self.suppressed += 1
        return False

    def poll(self, now_ms: int) -> bool:
        """True if demand is still unmet and the retry interval has passed: send again."""
        if not self._pending:
            return False
        last = self._last_sent_ms
        if last is None or now_ms - last >= self._retry_ms:
            self._last_sent_ms = now_ms
            self.sent += 1
            return True
        return False

    def on_keyframe(self, now_ms: int) -> None:
        """A keyframe arrived from the publisher: demand is met."""
        self._pending = False
        self.last_keyframe_ms = now_ms
