"""Dynacast: which simulcast layers a publisher should encode at all (pure).

Encoding a 720p layer nobody watches costs the publisher's CPU and uplink (the bedside phone on
a cellular link most of all). Layers above what any subscriber prefers are switched off; they
come back at once when someone wants them, but go away only after a quiet period so a tile
that flickers between sizes does not make the phone restart its encoder again and again.
"""

from __future__ import annotations

from collections.abc import Iterable

LAYER_OFF_DELAY_MS = 5000


class DynacastController:
    """Decides the highest layer one simulcast publisher should send."""

    __slots__ = ("_layers", "_off_delay_ms", "_since_ms", "_top", "changes")

    def __init__(self, layers: int, off_delay_ms: int = LAYER_OFF_DELAY_MS) -> None:
        if layers < 1:
            raise ValueError("a publisher sends at least one layer")
        self._layers = layers
        self._off_delay_ms = off_delay_ms
        self._top = layers - 1  # publishers start with every layer on
        self._since_ms: float | None = None  # when demand first fell below _top
        self.changes = 0

    @property
    def top_layer(self) -> int:
        return self._top

    def active(self) -> tuple[bool, ...]:
        return tuple(i <= self._top for i in range(self._layers))

    def update(self, preferred_layers: Iterable[int | None], now_ms: float) -> bool:
        """Feed every subscriber's preferred layer (None = not watching); True when changed.

        The lowest layer is always kept: it is cheap, and a new subscriber can start on it
        without waiting for the publisher to restart an encoder.
        """
        wanted = [min(p, self._layers - 1) for p in preferred_layers if p is not None]
        needed = max(wanted, default=0)
        if needed >= self._top:
            self._since_ms = None
            if needed > self._top:
                self._top = needed
                self.changes += 1
                return True
            return False
        if self._since_ms is None:
            self._since_ms = now_ms
            return False
        if now_ms - self._since_ms < self._off_delay_ms:
            return False
        self._top = needed
        self._since_ms = None
        self.changes += 1
        return True
