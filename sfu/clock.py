"""The SFU's one clock: monotonic milliseconds.

Every time that crosses a module boundary (packet arrival, feedback, allocation, keyframe
debouncing, speaker detection) is on this clock. aiortc stamps arrivals with wall-clock
milliseconds since 1900, which can jump and must not be mixed with these.
"""

from __future__ import annotations

import time


def now_ms() -> int:
    return int(time.monotonic() * 1000)
